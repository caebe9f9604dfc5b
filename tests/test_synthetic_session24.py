"""Session 24's synthetic options: ``make_vessel_tree(n_trees=0, texture_hu=...,
texture_corr_vox=...)`` and the training options that draw them (``texture_fraction``,
``vessel_free_fraction``): textured tissue and vessel-free volumes, so that a network learns
that a window of mottled tissue alone is not a window of faint vessels."""

import numpy as np
import pytest

from napari_tubular.synthetic import make_vessel_tree
from napari_tubular.training import TrainConfig
from napari_tubular.training.data import make_synthetic_case, synthetic_case_params

ISO = (1.0, 1.0, 1.0)
NORM = {"kind": "window", "low": -100.0, "high": 600.0}
SMALL = {"extent_mm": (30.0, 36.0), "inplane_spacing": (0.9, 1.1)}


def _lag(a: np.ndarray, k: int) -> float:
    """Correlation of voxels ``k`` apart along x."""
    return float(np.corrcoef(a[..., :-k].ravel(), a[..., k:].ravel())[0, 1])


# ---------------------------------------------------------------- n_trees = 0


@pytest.mark.parametrize("kw", [{}, {"body": True, "organs": 1}])
def test_no_trees_gives_tissue_without_vessels(kw):
    case = make_vessel_tree((40, 44, 48), (1.0, 0.8, 0.8), seed=5, n_trees=0, **kw)
    assert case.mask.dtype == np.uint8
    assert not case.mask.any()
    assert case.centerline.shape == (0, 4)
    assert case.edges.shape == (0, 2)
    assert case.params["n_trees"] == 0
    assert case.params["n_loops"] == 0
    assert np.isfinite(case.image).all()
    assert case.image.std() > 5.0  # tissue, noise, distractors: not a constant image


@pytest.mark.parametrize("bad", [-1, 1.5, "2"])
def test_n_trees_must_be_a_non_negative_integer(bad):
    with pytest.raises((ValueError, TypeError)):
        make_vessel_tree((16, 16, 16), ISO, seed=0, n_trees=bad)


# ---------------------------------------------------------------- texture_hu


@pytest.mark.parametrize("seed", [0, 3])
def test_texture_changes_only_the_tissue_image(seed):
    kw = {"shape": (40, 48, 44), "spacing": (1.5, 0.8, 0.8), "seed": seed}
    base = make_vessel_tree(**kw)
    zero = make_vessel_tree(texture_hu=0.0, **kw)
    assert np.array_equal(base.image, zero.image)  # the default volume
    tex = make_vessel_tree(texture_hu=25.0, **kw)
    assert np.array_equal(base.mask, tex.mask)
    assert np.array_equal(base.centerline, tex.centerline)
    assert tex.params["texture_hu"] == 25.0
    assert base.params["texture_hu"] == 0.0
    diff = (tex.image - base.image).astype(np.float64)
    # the texture is under the vessels: deep inside a vessel the image is the vessel's
    from scipy import ndimage

    tissue = ndimage.binary_dilation(base.mask > 0, iterations=2) == 0
    # 25 HU before the PSF blur (and the bias field): between 0.5 and 1.15 times that after
    assert 12.0 < diff[tissue].std() < 29.0
    if base.mask.sum() > 200:
        inner = ndimage.binary_erosion(base.mask > 0, iterations=2)
        if inner.sum() > 20:
            assert np.abs(diff[inner]).mean() < 0.5 * np.abs(diff[tissue]).mean()


def test_texture_correlation_length_follows_texture_corr_vox():
    kw = {"shape": (48, 48, 48), "spacing": ISO, "seed": 2, "blur": False, "noise": 0.0}
    base = make_vessel_tree(n_trees=0, **kw)
    lags = []
    for corr in (1.0, 2.0, 4.0):
        tex = make_vessel_tree(n_trees=0, texture_hu=30.0, texture_corr_vox=corr, **kw)
        lags.append(_lag(tex.image - base.image, 2))
    assert lags[0] < lags[1] < lags[2]
    assert lags[2] > 0.7


@pytest.mark.parametrize(("key", "bad"), [("texture_hu", -1.0), ("texture_hu", float("nan")),
                                     ("texture_hu", 600.0), ("texture_corr_vox", 0.0),
                                     ("texture_corr_vox", float("inf"))])
def test_texture_bad_values_raise(key, bad):
    with pytest.raises(ValueError, match=key):
        make_vessel_tree((16, 16, 16), ISO, seed=0, **{key: bad})


# ---------------------------------------------------------------- training options


def test_case_params_unchanged_without_the_new_fractions():
    stage14 = {"thin_fraction": 0.3, "large_fraction": 0.5, "body_fraction": 0.4,
               "organ_fraction": 0.3, "segment_fraction": 0.4, "coarse_fraction": 0.25}
    for seed in range(20):
        a = synthetic_case_params(seed, stage14)
        assert a["textured"] is False
        assert a["vessel_free"] is False
        assert "texture_hu" not in a["generator"]
        assert "n_trees" not in a["generator"]
        assert synthetic_case_params(seed, {**stage14, "texture_fraction": 0.0,
                                            "vessel_free_fraction": 0.0}) == a
        # the new draws come last: a case that gets them is otherwise the same case
        b = synthetic_case_params(seed, {**stage14, "texture_fraction": 1.0})
        assert b["textured"]
        assert b["shape"] == a["shape"]
        assert b["spacing"] == a["spacing"]
        gen = {k: v for k, v in b["generator"].items()
               if k not in ("texture_hu", "texture_corr_vox")}
        assert gen == a["generator"]
        assert 15.0 <= b["generator"]["texture_hu"] <= 35.0
        assert 1.5 <= b["generator"]["texture_corr_vox"] <= 3.0


def test_case_params_fractions_are_fractions_of_cases():
    params = [synthetic_case_params(s, {"texture_fraction": 0.3, "vessel_free_fraction": 0.2})
              for s in range(200)]
    free = [p for p in params if p["vessel_free"]]
    assert 20 <= len(free) <= 60
    assert all(p["generator"]["n_trees"] == 0 and p["generator"]["free_segments"] == 0
               and "texture_hu" in p["generator"] for p in free)
    textured = [p for p in params if p["textured"] and not p["vessel_free"]]
    assert 30 <= len(textured) <= 90  # 0.3 of the 0.8 with vessels, about 48
    assert all("n_trees" not in p["generator"] for p in params if not p["vessel_free"])


def test_vessel_free_case_prepares_with_an_empty_label():
    opts = {**SMALL, "vessel_free_fraction": 1.0, "segment_fraction": 1.0}
    case = make_synthetic_case(11, (1.0, 1.0, 1.0), 5, NORM, opts)
    assert not case.label.any()
    assert case.fg_index.size == 0
    assert not case.scale.any()
    assert np.isfinite(case.image).all()


def test_train_config_checks_the_new_options():
    good = {"texture_fraction": 0.15, "vessel_free_fraction": 0.05, "texture_hu": [15, 35],
            "texture_corr_vox": [1.5, 3.0]}
    assert TrainConfig(synthetic=good).synthetic == good
    TrainConfig(synthetic={"texture_hu": [0.0, 500.0]})
    for key, value in (("texture_fraction", 1.5), ("vessel_free_fraction", -0.1),
                       ("texture_hu", [35, 15]), ("texture_hu", [-1, 5]),
                       ("texture_hu", [10, 600]), ("texture_corr_vox", [0, 2]),
                       ("texture_corr_vox", [3, 2])):
        with pytest.raises(ValueError, match=rf"synthetic\.{key}: must be"):
            TrainConfig(synthetic={key: value})


def test_training_on_vessel_free_cases_runs(tmp_path):
    from napari_tubular.training import train

    cfg = TrainConfig(data=["synthetic"], val_data=[], out=str(tmp_path / "run"),
                      target_spacing=(1.0, 1.0, 1.0), patch_size=(32, 32, 32), batch_size=2,
                      steps=3, lr=1e-3, K=5, device="cpu", num_threads=1,
                      model={"base_channels": 4, "depth": 2},
                      synthetic={**SMALL, "pool_size": 2, "refresh_every": 1,
                                 "vessel_free_fraction": 1.0})
    train(cfg)
    import csv

    rows = list(csv.DictReader(open(tmp_path / "run" / "log.csv")))
    assert rows
    assert all(np.isfinite(float(r["loss"])) for r in rows)


def test_vessel_free_generator_overrides_only_the_vessel_free_cases():
    plain = {"distractors": False, "organs": 0, "body": False}
    opts = {"vessel_free_fraction": 0.3, "organ_fraction": 1.0, "body_fraction": 1.0,
            "bare_body_fraction": 1.0, "vessel_free_generator": plain}
    params = [synthetic_case_params(s, opts) for s in range(40)]
    free = [p for p in params if p["vessel_free"]]
    assert free
    for p in free:
        assert p["generator"]["distractors"] is False
        assert p["generator"]["organs"] == 0
        assert p["generator"]["body"] is False
        assert "bare_body" not in p["generator"]  # it needs a body: dropped with it
        case = make_vessel_tree(shape=(20, 20, 20), spacing=p["spacing"], seed=p["seed"],
                                **p["generator"])
        assert not case.mask.any()
        assert case.params["n_blobs"] == 0
    for p in params:
        if not p["vessel_free"]:
            assert "distractors" not in p["generator"]
            assert p["generator"]["organs"] >= 1


def test_train_config_checks_vessel_free_generator():
    TrainConfig(synthetic={"vessel_free_generator": {"distractors": False, "texture_hu": 30.0}})
    with pytest.raises(ValueError, match=r"synthetic\.vessel_free_generator: unknown option"):
        TrainConfig(synthetic={"vessel_free_generator": {"no_such_option": 1}})
    with pytest.raises(ValueError, match=r"synthetic\.vessel_free_generator: must be a dict"):
        TrainConfig(synthetic={"vessel_free_generator": [1, 2]})
    with pytest.raises(ValueError, match=r"synthetic\.generator: unknown option"):
        TrainConfig(synthetic={"generator": {"no_such_option": 1}})
