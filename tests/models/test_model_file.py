"""Model files: round trip, meta validation, and clear errors for wrong/corrupted/old files."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_tubular.models import (  # noqa: E402
    FORMAT_VERSION,
    ModelFormatError,
    TubularUNet,
    load_model,
    read_model_meta,
    save_model,
    serialization,  # noqa: E402
)

NORM = {"kind": "window", "low": -100, "high": 600}


def _meta(**kw):
    meta = {
        "K": 3,
        "spacing": (0.8, 0.8, 0.8),
        "normalization": NORM,
        "patch_size": (16, 16, 16),
        "training": {"data": "synthetic vessel trees", "cases": 12, "epochs": np.int64(3)},
        "metrics": {"dice": np.float32(0.5), "cldice": 0.75},
    }
    meta.update(kw)
    return meta


@pytest.fixture
def net():
    torch.manual_seed(0)
    return TubularUNet(base_channels=2, depth=2, num_scales=4, residual=True, deep_supervision=True)


def test_round_trip_same_outputs_and_meta(tmp_path, net):
    path = save_model(tmp_path / "m.pt", net, _meta(), json_sidecar=True)
    net2, meta = load_model(path, device="cpu")
    x = torch.randn(1, 1, 8, 8, 8)
    net.eval()
    with torch.no_grad():
        a, b = net(x), net2(x)
    for key in ("seg", "scale"):
        assert torch.equal(a[key], b[key])
    assert all(torch.equal(s, t) for s, t in zip(a["ds"], b["ds"]))
    assert not net2.training
    assert meta["K"] == 3
    assert meta["spacing"] == [0.8, 0.8, 0.8]
    assert meta["patch_size"] == [16, 16, 16]
    assert meta["normalization"] == {"kind": "window", "low": -100.0, "high": 600.0}
    assert meta["training"]["epochs"] == 3
    assert isinstance(meta["training"]["epochs"], int)
    assert meta["metrics"]["dice"] == pytest.approx(0.5)
    assert meta["arch"] == net.config
    assert meta["format_version"] == FORMAT_VERSION
    from napari_tubular import __version__

    assert meta["package_version"] == __version__
    assert meta["path"] == str(path)
    # the file needs no pickled code: plain weights_only load works
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == "napari-tubular-model"
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["K"] == 3
    assert sidecar["arch"] == net.config
    assert read_model_meta(path)["metrics"] == meta["metrics"]


def test_saved_model_is_readable_like_other_outputs(tmp_path, net):
    """Written through a private temporary file, the model ends with the usual permissions."""
    import os
    import stat

    umask = os.umask(0o022)
    try:
        path = save_model(tmp_path / "shared.pt", net, _meta())
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_a_replaced_model_file_keeps_its_permissions(tmp_path, net):
    """A private (0600) model replaced in place (tune ... --overwrite, save_model with
    overwrite) stays private: it used to take the umask's 0644."""
    import os
    import stat

    from napari_tubular.models import read_model_file, write_model_copy

    umask = os.umask(0o022)
    try:
        path = save_model(tmp_path / "private.pt", net, _meta())
        os.chmod(path, 0o600)
        save_model(path, net, _meta(), overwrite=True)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        payload = read_model_file(path)
        write_model_copy(payload, path, payload["meta"], overwrite=True)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        fresh = write_model_copy(payload, tmp_path / "copy.pt", payload["meta"])
        assert stat.S_IMODE(fresh.stat().st_mode) == 0o644
    finally:
        os.umask(umask)


def test_save_refuses_overwrite_when_asked(tmp_path, net):
    path = save_model(tmp_path / "m.pt", net, _meta())
    with pytest.raises(FileExistsError, match="m.pt"):
        save_model(path, net, _meta(), overwrite=False)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"K": 5}, "num_scales"),
        ({"spacing": (1, 1)}, "spacing"),
        ({"patch_size": (16, 16.5, 16)}, "patch_size"),
        ({"normalization": {"kind": "magic"}}, "normalization"),
        ({"training": {"fn": print}}, "cannot store"),
    ],
)
def test_save_rejects_invalid_meta(tmp_path, net, change, match):
    with pytest.raises(ModelFormatError, match=match):
        save_model(tmp_path / "m.pt", net, _meta(**change))
    assert not (tmp_path / "m.pt").exists()


def test_save_rejects_missing_keys(tmp_path, net):
    meta = _meta()
    del meta["spacing"]
    with pytest.raises(ModelFormatError, match="spacing"):
        save_model(tmp_path / "m.pt", net, meta)


def test_missing_files_and_default(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "nope.pt")
    monkeypatch.setattr(serialization, "DEFAULT_MODEL_PATH", tmp_path / "weights" / "default.pt")
    with pytest.raises(FileNotFoundError, match="no default model"):
        load_model("default")


def _corrupt(path, payload_change):
    payload = torch.load(path, weights_only=True)
    payload_change(payload)
    torch.save(payload, path)


def test_wrong_and_corrupted_files(tmp_path, net):
    good = save_model(tmp_path / "m.pt", net, _meta())
    raw = good.read_bytes()

    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    text = tmp_path / "text.pt"
    text.write_text("hello, not a model\n")
    truncated = tmp_path / "trunc.pt"
    truncated.write_bytes(raw[: len(raw) // 2])
    plain = tmp_path / "plain.pt"
    torch.save(net.state_dict(), plain)
    for path, match in [
        (empty, "empty"),
        (text, "not a PyTorch file at all"),
        (truncated, "not a readable"),
        (plain, "not a napari-tubular model file"),
        (tmp_path, "not a file"),
    ]:
        with pytest.raises(ModelFormatError, match=match):
            load_model(path)


def test_other_format_version(tmp_path, net):
    path = save_model(tmp_path / "m.pt", net, _meta())

    def bump(p):
        p["format_version"] = FORMAT_VERSION + 1
        p["meta"]["package_version"] = "9.9.9"

    _corrupt(path, bump)
    with pytest.raises(ModelFormatError, match=r"format version 2.*9\.9\.9"):
        load_model(path)


@pytest.mark.parametrize(("version", "loads"), [("9.9.9", False), ("0.99.0", False),
                                               ("0.0.1", True), ("0.1.7", True), ("dev", True)])
def test_package_version_newer_than_ours_is_refused(tmp_path, net, version, loads):
    """Same format, written by a newer napari-tubular (major.minor): refused, naming both
    versions; an older one (or an unreadable version string) loads."""
    path = save_model(tmp_path / "m.pt", net, _meta())

    def stamp(p):
        p["meta"]["package_version"] = version

    _corrupt(path, stamp)
    if loads:
        load_model(path)
    else:
        with pytest.raises(ModelFormatError, match=rf"written by napari-tubular {version}, "
                           r"newer than this napari-tubular .*upgrade"):
            load_model(path)


def test_changed_weights_fail_the_checksum(tmp_path, net):
    path = save_model(tmp_path / "m.pt", net, _meta())

    def flip(p):
        name = sorted(p["state_dict"])[0]
        p["state_dict"][name].view(-1)[0] += 1.0

    _corrupt(path, flip)
    with pytest.raises(ModelFormatError, match="checksum"):
        load_model(path)
    # the meta alone stays readable; verify=True checks the weights as load_model does
    assert read_model_meta(path)["K"] == 3
    with pytest.raises(ModelFormatError, match="is corrupted: the weights do not match"):
        read_model_meta(path, verify=True)


def test_weights_that_do_not_fit_the_architecture(tmp_path, net):
    path = save_model(tmp_path / "m.pt", net, _meta())

    def change_arch(p):
        p["meta"]["arch"]["base_channels"] = 3

    _corrupt(path, change_arch)
    with pytest.raises(ModelFormatError, match="do not fit") as err:
        load_model(path)
    # an outside judge: torch's message, one line per tensor, made a 23-line error under
    # segment and tune; one line now says how many differ and one of them
    msg = str(err.value)
    assert "\n" not in msg
    assert "tensor(s) of another shape (e.g. " in msg
    assert "in the file, " in msg
    assert "in the architecture)" in msg


def test_weights_with_missing_and_unexpected_tensors_are_one_line(tmp_path, net):
    path = save_model(tmp_path / "m.pt", net, _meta())

    def rename(p):
        state = p["state_dict"]
        first = sorted(state)[0]
        state["other.weight"] = state.pop(first)
        p["checksum"] = serialization._checksum(state)

    _corrupt(path, rename)
    with pytest.raises(ModelFormatError, match="do not fit") as err:
        load_model(path)
    msg = str(err.value)
    assert "\n" not in msg
    assert "1 tensor(s) missing (e.g. " in msg
    assert "1 unexpected tensor(s) (e.g. other.weight)" in msg


def test_read_model_meta_checks_the_meta_as_load_model_does(tmp_path, net):
    """An audit: ``train --init-model`` on a file whose meta lacks K ended in ``KeyError: 'K'``
    (``segment`` said "invalid meta"), and K = 'five' in "invalid literal for int()" naming no
    file. read_model_meta now checks the meta as load_model does."""
    path = save_model(tmp_path / "m.pt", net, _meta())
    assert read_model_meta(path)["K"] == 3
    payload = torch.load(path, weights_only=False)
    for change in ({"K": None}, {"K": "five"}, {"spacing": [1.0, -1.0, 1.0]}):
        bad = {**payload, "meta": {k: v for k, v in {**payload["meta"], **change}.items()
                                   if v is not None}}
        torch.save(bad, tmp_path / "bad.pt")
        with pytest.raises(ModelFormatError, match=r"bad\.pt: invalid meta"):
            read_model_meta(tmp_path / "bad.pt")


@pytest.mark.parametrize(("change", "key"), [
    ({"metrics": {"refine": {"tp": "x", "tr": 0.5}}}, r"\['refine'\]\['tp'\] must be a number"),
    ({"metrics": {"refine": {"tp": 0.5, "tr": -1}}}, r"\['refine'\]\['tr'\] must be a number"),
    ({"metrics": {"refine": {"tp": 3, "tr": 0.5}}}, r"\['refine'\]\['tp'\]"),
    ({"metrics": {"refine": {"tp": 0.5, "tr": 0.5, "min_confidence": "abc"}}},
     r"\['min_confidence'\] must be a number in \(0, 1\] or null"),
    ({"metrics": {"refine": {"tp": 0.5, "tr": 0.5, "min_confidence": 7}}}, "min_confidence"),
    ({"metrics": {"refine": [0.5, 0.5]}}, r"\['refine'\] \(the tuned refinement thresholds\) "
                                          "must be a dict"),
    ({"metrics": [1]}, r"meta\['metrics'\] must be a dict"),
    ({"radius_calibration": {"pred_mm": [1.0, 2.0]}}, r"meta\['radius_calibration'\]"),
    ({"radius_calibration": {"pred_mm": ["1", "2"], "true_mm": [1, 2]}},
     r"meta\['radius_calibration'\]"),
    ({"radius_calibration": "abc"}, r"meta\['radius_calibration'\]"),
    ({"normalization": {"kind": "window", "low": "x", "high": 600}},
     r"meta\['normalization'\]: window normalization: low must be a finite number, got 'x'"),
    ({"normalization": {"kind": "window", "low": -100, "high": float("inf")}},
     "high must be a finite number"),
    ({"normalization": {"kind": "zscore", "mean": "x", "std": 1.0}},
     "mean must be a finite number"),
    ({"normalization": {"kind": "percentile", "lower": None, "upper": 99}},
     "lower must be a finite number"),
    ({"spacing": ["x", 1.0, 1.0]}, r"meta\['spacing'\] must be 3 numbers"),
    ({"spacing": ["1", 1.0, 1.0]}, r"meta\['spacing'\] must be 3 numbers"),
])
def test_hand_edited_stored_settings_are_refused_on_load(tmp_path, net, change, key):
    """An outside judge: a model file with a hand-edited ``metrics.refine.tp = "x"`` (or a bad
    min_confidence / radius calibration) was refused only after the network had run on the
    whole volume; ``"metrics": [1]`` ended in an AttributeError traceback, a ``"refine"`` list
    was ignored in silence, a text in the normalisation or spacing in a message naming no
    key, ``"std": "x"`` / ``"lower": null`` in a TypeError or at inference. load_model and
    read_model_meta now refuse them, naming the file and the key."""
    path = save_model(tmp_path / "m.pt", net, _meta())
    _corrupt(path, lambda p: p["meta"].update(change))
    with pytest.raises(ModelFormatError, match=r"m\.pt: invalid meta: .*" + key):
        load_model(path)
    with pytest.raises(ModelFormatError, match=key):
        read_model_meta(path)


def test_stored_settings_that_load(tmp_path, net):
    """What a model file may hold there: no refine, ``min_confidence`` null, ``metrics`` null,
    an empty calibration."""
    for change in ({"metrics": {"refine": {"tp": 0.6, "tr": 0.6, "min_confidence": None}}},
                   {"metrics": None}, {"radius_calibration": {}},
                   {"radius_calibration": {"pred_mm": [1, 2], "true_mm": [1.5, 2.5]}}):
        path = save_model(tmp_path / "m.pt", net, _meta())
        _corrupt(path, lambda p, c=change: p["meta"].update(c))
        assert load_model(path)[1]["K"] == 3


def test_a_loaded_pair_with_bad_thresholds_is_refused_before_the_network_runs(net):
    """The same check for a ``(net, meta)`` pair given to predict / segment in Python."""
    from napari_tubular.inference import segment

    calls = []
    net.register_forward_hook(lambda *a: calls.append(1))
    meta = {**_meta(), "arch": net.config, "metrics": {"refine": {"tp": "x", "tr": 0.5}}}
    with pytest.raises(ModelFormatError, match=r"\['tp'\] must be a number"):
        segment(np.zeros((16, 16, 16), np.float32), model=(net, meta), spacing=(0.8, 0.8, 0.8))
    assert not calls


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"),
                                   RuntimeError("PytorchStreamWriter failed writing file")])
def test_a_failed_write_names_the_model_file_not_its_temporary_file(tmp_path, net,
                                                                     monkeypatch, error):
    """A write that fails partway (a full disk) said the temporary file's name; it names the
    model file asked for, keeps the error's type, and leaves no file behind."""
    import torch

    def save(*args, **kwargs):
        open(args[1], "wb").write(b"partial")
        raise error

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(type(error), match=r"could not write the model file .*m\.pt \(") as info:
        save_model(tmp_path / "m.pt", net, _meta())
    assert ".tmp" not in str(info.value)
    assert list(tmp_path.iterdir()) == []
