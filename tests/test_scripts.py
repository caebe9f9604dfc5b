"""The model-building scripts: held-out evaluation tables and the training script's options."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from ._tiny_model import save_tiny_model

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def ev():
    return _load("evaluate_default")


@pytest.fixture(scope="module")
def tree():
    from napari_tubular.synthetic import make_vessel_tree

    return make_vessel_tree((40, 48, 44), (1.2, 0.8, 0.8), seed=5, min_radius_mm=0.3)


def test_radius_sensitivity_counts_every_label_voxel_once(ev, tree):
    ref = tree.mask > 0
    res = ev.radius_sensitivity(ref, ref, tree.centerline, tree.spacing)
    assert sum(n for _, n in res.values()) == int(ref.sum())
    for found, total in res.values():
        assert found == total  # a perfect prediction finds everything in every bin
    empty = ev.radius_sensitivity(np.zeros_like(ref), ref, tree.centerline, tree.spacing)
    assert all(found == 0 for found, _ in empty.values())
    # the thinnest bin is populated: sub-voxel vessels (0.3 mm at 0.8 mm voxels) are in the label
    assert res["0-0.45"][1] > 0


def test_radius_sensitivity_bins_by_true_radius(ev):
    from napari_tubular.synthetic import make_tube

    # a straight tube of radius 2.5 voxels: every label voxel belongs to the ">= 1.6" bin,
    # and a prediction that keeps only one half of the tube finds about half of it
    case = make_tube((24, 24, 40), (1.0, 1.0, 1.0), radius_mm=2.5)
    ref = case.mask > 0
    cl = case.centerline
    res = ev.radius_sensitivity(ref, ref, cl, case.spacing)
    assert res[">= 1.6"][1] == int(ref.sum())
    half = ref.copy()
    half[:, :, 20:] = False
    found, total = ev.radius_sensitivity(half, ref, cl, case.spacing)[">= 1.6"]
    assert 0.4 < found / total < 0.6


def test_evaluate_writes_tables_with_radius_breakdown(ev, tmp_path):
    model = save_tiny_model(tmp_path / "tiny.pt",
                            normalization={"kind": "window", "low": -200, "high": 600})
    res = ev.evaluate({"ddt": str(model)}, tmp_path / "out", device="cpu", quick=True,
                      n_cases=2, n_val=1, processes=1, tune=False, log=lambda *_: None)
    md = (tmp_path / "out" / "eval.md").read_text()
    assert "Sensitivity by true vessel radius" in md
    saved = json.loads((tmp_path / "out" / "eval.json").read_text())
    sens = saved["models"]["ddt"]["sensitivity_by_radius_vox"]
    total = sum(e["voxels"] for e in sens.values())
    specs = ev.case_specs(2, True)
    assert total == sum(int(ev.make_case(s)[1].sum()) for s in specs)
    assert set(res["summary"]) == {"ddt", "ddt + CC filter", "ddt + GAR", "ddt + GAR + CC filter",
                                   "ddt + PV trim + CC filter", "ddt + GAR + PV trim + CC filter"}
    assert "What can be seen" in md
    vis = saved["visibility"]
    assert len(vis["oracle"]) == 2
    assert all(0.0 <= m["dice"] <= 1.0 for m in vis["oracle"])


def test_contrast_to_noise_of_a_known_tube(ev):
    """A thin tube (radius 1 voxel: the 7^3 median is background) of contrast 120 over noise of
    SD 20 reads CNR ~6 on its label."""
    from napari_tubular.synthetic import make_tube

    case = make_tube((40, 40, 40), (1.0, 1.0, 1.0), radius_mm=1.0, contrast=120.0, noise=0.0)
    img = 40.0 + 120.0 * (case.mask > 0)
    img = img + np.random.default_rng(0).normal(0, 20, img.shape)
    cnr = ev.contrast_to_noise(img, case.mask)
    assert cnr.shape == (int((case.mask > 0).sum()),)
    assert 4.5 < float(np.median(cnr)) < 7.0


def test_visible_vessel_oracle_keeps_vessels_from_the_cut(ev):
    from napari_tubular.synthetic import make_tube

    case = make_tube((24, 24, 40), (1.0, 1.0, 1.0), radius_mm=2.5)
    img = case.image
    ev_thick = ev.visibility(img, case.mask, case.centerline, case.spacing)
    assert np.array_equal(ev_thick["oracle"], case.mask > 0)  # 2.5 mm >= the 0.4 mm cut
    assert ev_thick["bins"][">= 1.2"]["voxels"] == int((case.mask > 0).sum())
    thin = case.centerline.copy()
    thin[:, 3] = 0.3  # the same voxels called 0.3 mm thick: all below the cut
    assert not ev.visibility(img, case.mask, thin, case.spacing)["oracle"].any()


def test_train_default_rejects_bad_init(tmp_path, capsys):
    td = _load("train_default")
    with pytest.raises(SystemExit) as e:
        td.main(["--device", "cpu", "--quick", "--out", str(tmp_path), "--init", "nope=x.pt"])
    assert e.value.code == 2
    assert "--init expects NAME=PATH" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        td.main(["--device", "cpu", "--quick", "--out", str(tmp_path),
                 "--init", f"ddt={tmp_path / 'missing.pt'}"])
    assert "no such model file" in capsys.readouterr().err


def test_train_default_run_config_carries_init_and_recipe(tmp_path):
    td = _load("train_default")
    s = dict(td.SETTINGS["quick"], synthetic={"thin_fraction": 0.5})
    cfg = td.run_config("ddt", s, tmp_path, tmp_path / "cache", 1.0, "cpu", 0,
                        init="runs/x.pt", recipe={"lr": 1e-4, "cldice_weight": 0.3})
    assert cfg["init_model"] == "runs/x.pt"
    assert cfg["lr"] == 1e-4
    assert cfg["cldice_weight"] == 0.3
    assert "thin-only trees 50 %" in cfg["description"]
    assert cfg["synthetic"]["thin_fraction"] == 0.5
    from napari_tubular.training import TrainConfig

    TrainConfig.from_dict(cfg)  # a valid training config


def test_train_default_widened_family_and_K(tmp_path, capsys):
    td = _load("train_default")
    s = dict(td.SETTINGS["quick"], synthetic={"sharp_fraction": 0.2, "large_fraction": 0.3,
                                              "extent_mm": [40.0, 104.0], "hard_fraction": 0.15,
                                              "segment_fraction": 0.25, "body_fraction": 0.5,
                                              "generator": {"distractor_scale": 2.0}})
    cfg = td.run_config("ddt", s, tmp_path, tmp_path / "cache", 1.0, "cpu", 0, K=12)
    assert cfg["K"] == 12
    assert "20 % unblurred" in cfg["description"]
    assert "30 % of other trees with roots of 5-12 mm" in cfg["description"]
    assert "fields of view 40-104 mm" in cfg["description"]
    assert "15 % binary phantoms" in cfg["description"]
    assert "25 % with free tube segments, 50 % inside a body outline" in cfg["description"]
    assert "2x the distractors" in cfg["description"]
    with pytest.raises(SystemExit):
        td.main(["--device", "cpu", "--quick", "--out", str(tmp_path), "--synthetic",
                 '{"sharp_fractoin": 0.2}'])
    assert "unknown: ['sharp_fractoin']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        td.main(["--device", "cpu", "--quick", "--out", str(tmp_path), "--synthetic", "{"])
    assert "not valid JSON" in capsys.readouterr().err


def test_promote_twice_keeps_the_training_validation_flat(tmp_path):
    from napari_tubular.models import read_model_meta

    promote = _load("promote_model")
    val = {"dice": 0.7, "cldice": 0.8}
    model = save_tiny_model(tmp_path / "m.pt", normalization={"kind": "none"}, metrics=val,
                            training={})
    row = {"dice": 0.9, "cldice": 0.9}
    ev_json = tmp_path / "eval.json"
    ev_json.write_text(json.dumps({"summary": {"m": row}, "groups": {"m": {}},
                                   "refinement": {"m": {"tp": 0.5, "tr": 0.5}}}))
    dest = tmp_path / "promoted.pt"
    for src in (model, dest):  # promote, then promote the promoted file again
        assert promote.main([str(src), str(ev_json), "--name", "m", "--dest", str(dest)]) == 0
    metrics = read_model_meta(dest)["metrics"]
    assert metrics["validation"] == val
    assert metrics["held_out"] == {"m": row}


def test_calibration_large_cases_have_large_roots(ev):
    cal = _load("calibrate_radius")
    specs = cal.large_specs(3, 123)
    assert [s["seed"] for s in specs] == [123, 124, 125]
    assert [s["options"]["max_radius_mm"] for s in specs] == [5.0, 8.5, 12.0]
    assert all(not s["name"].startswith("thin") for s in specs)
    _, _, centerline = ev.make_case(specs[0])
    assert 0.8 * 5.0 <= centerline[:, 3].max() <= 5.0  # the first root: 0.8-1 x max_radius_mm
    with pytest.raises(ValueError, match="large-cases"):
        cal.large_specs(9, 0)


def test_probe_perturbations_are_the_named_changes():
    pp = _load("probe_phantoms")
    rng = np.random.default_rng(0)
    img = (40.0 + rng.normal(0, 10, (20, 20, 20))).astype(np.float32)
    img[8:12, 8:12, :] = 300.0
    out = pp.perturbations(img)
    assert len(out) == 8
    assert all(v.shape == img.shape for v in out.values())
    assert out["as is"] is img
    assert out["raw CT (HU + 1024, uint16)"].dtype == np.uint16
    assert out["8-bit"].dtype == np.uint8
    # half the contrast: the vessel sits half as far above the 40 HU tissue
    np.testing.assert_allclose(out["contrast x0.5"][10, 10, 10], 170.0)
    assert out["extra blur 1 voxel"][10, 10, 10] < 300.0


def test_calibration_knots_reach_the_rare_large_radii():
    """95 % of the points are small vessels; the 5 % of large ones (the prediction saturates:
    4 + (r - 4) / 2) still get knots of their own, so a large vessel is not read with the ratio of
    the last quantile bin (without the tail bins 7 mm reads 8.8 mm instead of 10)."""
    cal = _load("calibrate_radius")
    rng = np.random.default_rng(0)
    true = np.concatenate([rng.uniform(0.5, 3.0, 9500), rng.uniform(5.0, 12.0, 500)])
    pred = np.where(true > 4.0, 4.0 + 0.5 * (true - 4.0), true) * rng.uniform(0.97, 1.03,
                                                                              true.size)
    xs, ys = cal.fit_knots(pred, true)
    assert np.all(np.diff(xs) > 0)
    assert np.all(np.diff(ys) >= 0)
    assert max(xs) > 7.0  # knots in the tail
    from napari_tubular.inference import apply_radius_calibration

    out = apply_radius_calibration(np.array([7.0, 2.0], np.float32),
                                   {"pred_mm": xs, "true_mm": ys})
    assert abs(out[0] - 10.0) < 0.5  # 4 + (10 - 4) / 2 = 7 mm read back as 10 mm
    assert abs(out[1] - 2.0) < 0.2
    xq, yq = cal.fit_knots(pred, true, tail_edges=())
    assert max(xq) < max(xs)
    q = apply_radius_calibration(np.array([7.0], np.float32), {"pred_mm": xq, "true_mm": yq})
    assert abs(q[0] - 10.0) > 0.8  # the quantile bins alone miss it


def test_foreign_phantom_tube_has_its_radius():
    """The independent generator: one tube's label has the drawn radius, the image is in [0, 1]-like units with the tube bright, and the set
    is deterministic with dev and test seeds disjoint."""
    fp = _load("foreign_phantoms")
    img, lab = fp.foreign_case(3, (64, 64, 64), (1.0, 1.0, 1.0), n=1, rmin=3.0, rmax=3.0,
                               blur=0.5, noise=0.02)
    assert lab.dtype == np.uint8
    assert lab.any()
    from scipy import ndimage

    # radius 3 mm at 1 mm voxels: the deepest label voxel is about 3 voxels from the background

    dt = ndimage.distance_transform_edt(lab > 0)
    assert 2.5 <= dt.max() <= 4.0
    assert np.median(img[lab > 0]) > 0.6
    assert np.median(img[lab == 0]) < 0.3
    a = fp.make_set("dev", 1)[0]
    b = fp.make_set("dev", 1)[0]
    np.testing.assert_array_equal(a["image"], b["image"])
    assert fp.case_options(0, "dev")["seed"] != fp.case_options(0, "test")["seed"]


def test_foreign_phantoms_evaluate_reports_both_pipelines(tmp_path):
    fp = _load("foreign_phantoms")
    model = save_tiny_model(tmp_path / "tiny.pt")
    img, lab = fp.foreign_case(1, (24, 24, 24), (1.0, 1.0, 1.0), n=2, rmin=1.0, rmax=2.0)
    cases = [{"name": "x", "options": {"spacing": (1.0, 1.0, 1.0)}, "image": img, "label": lab}]
    rows = fp.evaluate_model(str(model), cases, log=lambda *a: None)
    s = fp.summary(rows)
    for key in ("segment", "no_refine"):
        assert 0.0 <= s[key]["dice"] <= 1.0
        assert s[key]["b0_error"] >= 0


def test_average_models_is_the_mean_of_the_weights(tmp_path):
    import torch

    from napari_tubular.models import load_model, read_model_meta, save_model

    avg = _load("average_models")
    a = save_tiny_model(tmp_path / "a.pt", training={"loss": "ddt"})
    net, meta = load_model(a, device="cpu")
    meta.pop("path", None)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    b = save_model(tmp_path / "b.pt", net, meta)
    assert avg.main([str(tmp_path / "ab.pt"), str(a), str(b)]) == 0
    wa = load_model(a, device="cpu")[0].state_dict()
    wab = load_model(tmp_path / "ab.pt", device="cpu")[0].state_dict()
    for k, v in wa.items():
        if v.is_floating_point():
            torch.testing.assert_close(wab[k], v + 0.5)
    assert read_model_meta(tmp_path / "ab.pt")["training"]["averaged"] == [str(a), str(b)]
    other_k = save_tiny_model(tmp_path / "k4.pt", K=4)
    with pytest.raises(ValueError, match="K"):
        avg.average([str(a), str(other_k)], str(tmp_path / "bad.pt"))


def test_body_phantom_layers_and_vessels():
    """The independent body phantom: air outside, a fat shell, vessels inside the soft tissue
    and brighter than it, deterministic sets with disjoint dev / test seeds, the vessel-free
    kind has an empty label."""
    bp = _load("body_phantoms")
    o = {**bp.case_options(2, "dev"), "shape": (40, 72, 72), "spacing": (1.0, 1.0, 1.0)}
    o["units"] = "hu"
    img, lab, tissue = bp.body_case(o)
    assert lab.any()
    assert (tissue == bp.AIR).any() or (tissue == bp.FAT).any()
    assert np.median(img[tissue == bp.FAT]) < -60
    if (tissue == bp.AIR).any():
        assert np.median(img[tissue == bp.AIR]) < -900
    # vessels never in air or fat: label voxels are in the body's interior classes
    assert not np.isin(tissue[lab > 0], (bp.AIR, bp.FAT)).any()
    assert np.median(img[lab > 0]) > np.median(img[(lab == 0) & (tissue == bp.SOFT)]) + 80
    assert bp.case_options(0, "dev")["seed"] != bp.case_options(0, "test")["seed"]
    assert bp.case_options(1, "dev")["n_vessels"] == 0  # i % 4 == 1: vessel-free
    # --bare: without fat and skin (tissue straight against air), the same body outline
    bare = {**bp.case_options(2, "dev", bare=True), "shape": o["shape"],
            "spacing": o["spacing"], "units": "hu"}
    img_b, lab_b, tissue_b = bp.body_case(bare)
    assert not np.isin(tissue_b, (bp.FAT, bp.SKIN)).any()
    np.testing.assert_array_equal(tissue_b == bp.AIR, tissue == bp.AIR)
    assert lab_b.any()
    assert not (tissue_b[lab_b > 0] == bp.AIR).any()


def test_body_phantom_false_positive_volume():
    bp = _load("body_phantoms")
    label = np.zeros((20, 20, 20), np.uint8)
    label[10, 10, 2:18] = 1
    tissue = np.full(label.shape, bp.SOFT, np.uint8)
    pred = label.copy()
    pred[2:4, 2:4, 2:4] = 1  # 8 voxels far from the vessel
    pred[10, 11, 5] = 1  # 1 mm from the vessel: not a false positive
    out = bp.fp_analysis(pred, label, tissue, (1.0, 1.0, 1.0))
    assert out["fp_ml"] == pytest.approx(8 / 1000.0)
    assert out["where"]["soft"] == pytest.approx(1.0)
    assert out["where"]["air"] == 0.0


def test_texture_phantoms_cases_and_false_component_count():
    """texture_phantoms.py: its vessel-free cases have an empty label and the fine texture it
    names; a component is false only when no voxel of it lies within one voxel of the truth."""
    tp = _load("texture_phantoms")
    free = tp.make_case(14000, 0)  # vessel-free, 20 HU, 96³ at 0.8 mm
    assert free["group"] == "vessel-free, 20 HU"
    assert free["image"].shape == (96, 96, 96)
    assert not free["label"].any()
    # 20 HU fine texture + 8 HU broad texture + 10-14 HU noise, blurred by 0.6 voxel
    assert 15.0 < float(free["image"].std()) < 30.0
    tree = tp.make_case(14003, 3)  # tree, 30 HU
    assert tree["label"].any()
    assert tree["group"] == "tree, 30 HU"
    truth = np.zeros((20, 20, 20), bool)
    truth[5, 5, 2:18] = True
    pred = np.zeros_like(truth)
    pred[6, 6, 2:10] = True  # diagonal neighbour of the truth: not false
    pred[15:17, 15:17, 15:17] = True  # 8 voxels far away: false
    pred[10, 3, 3] = True  # 1 voxel, 5 voxels away: false
    n, ml = tp.false_components(pred, truth, (0.5, 0.5, 0.5))
    assert n == 2
    assert ml == pytest.approx(9 * 0.125 / 1000.0)
    assert tp.false_components(pred, np.zeros_like(truth), (1, 1, 1))[0] == 3
