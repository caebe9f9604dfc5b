"""``napari-tubular tune``: a model file's refinement thresholds tuned again on validation
volumes, without training (:mod:`napari_tubular.training.retune`), written to a copy of the
file with the weights unchanged."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_tubular.cli import main  # noqa: E402
from tests.test_tuning import tiny_config  # noqa: E402

SYN = ["--val-data", "synthetic", "--val-cases", "1"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 4-step run tuned by train on one synthetic validation volume."""
    from napari_tubular.training import train

    out = tmp_path_factory.mktemp("tune") / "run"
    train(tiny_config(out, val_cases=1, steps=4, val_every=4))
    return out


def _spy_on_tie_preferences(monkeypatch) -> list:
    """The ``(prefer, prefer_level)`` each call of ``tuning.tune_thresholds`` is asked for
    (what wins a tie), appended as the tuning runs."""
    from napari_tubular.training import tuning

    asked = []
    real = tuning.tune_thresholds

    def spy(*args, **kwargs):
        asked.append((kwargs.get("prefer"), kwargs.get("prefer_level")))
        return real(*args, **kwargs)

    monkeypatch.setattr(tuning, "tune_thresholds", spy)
    return asked


def _payload(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _without_refine(meta: dict) -> dict:
    return {**meta, "metrics": {k: v for k, v in meta["metrics"].items() if k != "refine"}}


def test_tune_writes_a_copy_with_the_tuning_and_the_same_weights(run, tmp_path, monkeypatch,
                                                                  capsys):
    """The copy holds what the tuning function returned (on the run's own validation volume:
    train's choice and scores again), the weights tensor for tensor and the rest of the file
    as it was; the progress, the thresholds before and after and their scores are printed."""
    from napari_tubular.inference import recommended_thresholds, tuned_min_confidence
    from napari_tubular.models import read_model_meta
    from napari_tubular.models.serialization import _checksum
    from napari_tubular.training import tuning
    from napari_tubular.training.retune import TUNE_SOURCE

    returned = []
    real = tuning.tune_model

    def spy(*args, **kwargs):
        res = real(*args, **kwargs)
        returned.append(dict(res))
        return res

    monkeypatch.setattr(tuning, "tune_model", spy)
    out = tmp_path / "tuned.pt"
    assert main(["tune", str(run / "model.pt"), *SYN, "-o", str(out), "--device", "cpu"]) == 0
    before, after = _payload(run / "model.pt"), _payload(out)
    stored = after["meta"]["metrics"]["refine"]
    assert len(returned) == 1
    assert {k: stored[k] for k in returned[0]} == returned[0]
    trained = before["meta"]["metrics"]["refine"]
    for key in ("tp", "tr", "score", "scores", "fallback", "min_confidence",
                "confidence_scores", "volumes", "weights_step"):
        assert stored[key] == trained[key], key
    assert stored["source"] == TUNE_SOURCE
    assert stored["previous"]["tp"] == trained["tp"]
    assert stored["validation"] == [
        "synthetic seed 100000000"]
    # the weights byte for byte, the file's other entries and meta unchanged
    assert after["checksum"] == before["checksum"] == _checksum(after["state_dict"])
    assert list(after["state_dict"]) == list(before["state_dict"])
    for name, t in before["state_dict"].items():
        assert after["state_dict"][name].dtype == t.dtype
        assert after["state_dict"][name].numpy().tobytes() == t.numpy().tobytes()
    assert {k: v for k, v in after.items() if k not in ("meta", "state_dict")} == {
        k: v for k, v in before.items() if k not in ("meta", "state_dict")}
    assert _without_refine(after["meta"]) == _without_refine(before["meta"])
    # segment reads them
    meta = read_model_meta(out)
    assert recommended_thresholds(meta) == (stored["tp"], stored["tr"])
    assert tuned_min_confidence(meta) == stored["min_confidence"]
    cap = capsys.readouterr()
    assert "[tune] validation volume 1/1: synthetic seed 100000000" in cap.err
    assert f"before: T_p {trained['tp']:g} / T_r {trained['tr']:g}, score " in cap.out
    assert f"after:  T_p {stored['tp']:g} / T_r {stored['tr']:g}, score {stored['score']:.4f}" \
        in cap.out
    assert f"wrote {out}" in cap.out


def test_tune_never_overwrites_without_overwrite(run, tmp_path, capsys):
    """An existing output, the model file itself included, is refused before any work and
    left as it was; with --overwrite the model is re-tuned in place (its weights kept)."""
    from napari_tubular.models import read_model_meta, write_model_copy
    from napari_tubular.models.serialization import read_model_file

    model = tmp_path / "model.pt"
    payload = read_model_file(run / "model.pt")
    meta = payload["meta"]
    # thresholds that are not the tuning's: an earlier tuning on the model's grid
    write_model_copy(payload, model, {**meta, "metrics": {**meta["metrics"], "refine": {
        "tp": 0.95, "tr": 0.85, "source": "train validation"}}})
    other = tmp_path / "other.pt"
    other.write_bytes(b"keep me")
    original = model.read_bytes()
    assert main(["tune", str(model), *SYN, "-o", str(other)]) == 2
    assert "other.pt exists; pass --overwrite to replace it" in capsys.readouterr().err
    assert main(["tune", str(model), *SYN, "-o", str(model)]) == 2
    assert "is the model file being tuned" in capsys.readouterr().err
    assert other.read_bytes() == b"keep me"
    assert model.read_bytes() == original
    link = tmp_path / "link.pt"
    link.symlink_to(model)
    assert main(["tune", str(model), *SYN, "-o", str(link)]) == 2
    assert "is the model file being tuned" in capsys.readouterr().err
    # in place (through a link: the file it points to is replaced, the link kept)
    assert main(["tune", str(model), *SYN, "-o", str(link), "--overwrite"]) == 0
    assert link.is_symlink()
    refine = read_model_meta(model)["metrics"]["refine"]
    assert refine["previous"]["tp"] == 0.95
    assert refine["initial"]["tp"] == 0.95
    assert (refine["tp"], refine["tr"]) == (meta["metrics"]["refine"]["tp"],
                                            meta["metrics"]["refine"]["tr"])
    assert _payload(model)["checksum"] == payload["checksum"]
    assert not list(tmp_path.glob("*.tmp"))


def test_tune_never_writes_into_the_installed_package(run, tmp_path, monkeypatch, capsys):
    """'default' is tuned into a copy elsewhere; the installed model's folder is refused as
    the output, --overwrite or not (a stand-in for it here: the test never risks the real
    one)."""
    from napari_tubular import models
    from napari_tubular.models import serialization

    weights = tmp_path / "weights"
    weights.mkdir()
    shipped = weights / "default.pt"
    shutil.copy(run / "model.pt", shipped)
    monkeypatch.setattr(serialization, "DEFAULT_MODEL_PATH", shipped)
    monkeypatch.setattr(models, "DEFAULT_MODEL_PATH", shipped)
    original = shipped.read_bytes()
    for out in (shipped, weights / "mine.pt"):
        assert main(["tune", "default", *SYN, "-o", str(out), "--overwrite"]) == 2
        assert "installed package" in capsys.readouterr().err
    assert shipped.read_bytes() == original
    assert sorted(weights.iterdir()) == [shipped]


def _write_pair(folder, name, shape=(24, 24, 24), label=True, label_shape=None):
    from napari_tubular.io import write_volume
    from napari_tubular.synthetic import make_vessel_tree

    folder.mkdir(exist_ok=True)
    case = make_vessel_tree(shape, (1.0, 1.0, 1.0), seed=2)
    write_volume(folder / f"{name}_image.nii.gz", case.image.astype(np.float32))
    mask = case.mask if label else np.zeros_like(case.mask)
    write_volume(folder / f"{name}_label.nii.gz",
                 mask[tuple(slice(0, n) for n in (label_shape or shape))].astype(np.uint8))


@pytest.mark.parametrize("case", ["missing model", "not a model", "truncated model",
                                  "checkpoint", "empty folder", "mismatched pair",
                                  "no vessel", "cases with a folder", "no folder", "none"])
def test_tune_errors_are_clear_and_write_nothing(case, run, tmp_path, capsys):
    """Each error is one line naming the cause (no traceback), exit status 2, before the
    network runs, and nothing is written."""
    model, val = str(run / "model.pt"), tmp_path / "val"
    args = ["--val-data", str(val)]
    expected = {
        "missing model": "does not exist",
        "not a model": "is not a napari-tubular model file",
        "truncated model": "is not a readable napari-tubular model file",
        "checkpoint": "is a napari-tubular training checkpoint",
        "empty folder": "no image/label volume pairs found",
        "mismatched pair": "does not match image",
        "no vessel": "every validation label is empty",
        "cases with a folder": "--val-cases counts generated volumes",
        "no folder": "validation data folder not found",
        "none": "tune needs validation volumes",
    }[case]
    if case == "missing model":
        model = str(tmp_path / "nothing.pt")
    elif case == "not a model":
        (tmp_path / "text.pt").write_text("not a model")
        model = str(tmp_path / "text.pt")
    elif case == "truncated model":
        (tmp_path / "cut.pt").write_bytes((run / "model.pt").read_bytes()[:4000])
        model = str(tmp_path / "cut.pt")
    elif case == "checkpoint":
        model = str(run / "last.pt")
    elif case == "empty folder":
        val.mkdir()
    elif case == "mismatched pair":
        _write_pair(val, "a", label_shape=(22, 24, 24))
    elif case == "no vessel":
        _write_pair(val, "a", label=False)
    elif case == "cases with a folder":
        _write_pair(val, "a")
        args += ["--val-cases", "2"]
    if case in ("missing model", "not a model", "truncated model", "checkpoint"):
        args = SYN
    if case == "none":
        args = ["--val-data", "none"]
    out = tmp_path / "out.pt"
    assert main(["tune", model, *args, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert expected in err
    assert "Traceback" not in err
    assert err.startswith("napari-tubular tune: error: ")
    assert not out.exists()


def test_a_label_without_vessel_is_left_out_with_a_warning(run, tmp_path, capsys):
    from napari_tubular.models import read_model_meta

    val = tmp_path / "val"
    _write_pair(val, "a")
    _write_pair(val, "b", label=False)
    out = tmp_path / "out.pt"
    assert main(["tune", str(run / "model.pt"), "--val-data", str(val), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "1 validation label(s) are empty" in err
    assert "b_label.nii.gz" in err
    assert "validation volume 1/1: a_image.nii.gz" in err
    refine = read_model_meta(out)["metrics"]["refine"]
    assert refine["volumes"] == 1
    assert refine["validation"] == ["a_image.nii.gz"]


def test_ctrl_c_stops_the_tuning_and_writes_nothing(run, tmp_path, monkeypatch, capsys):
    """Ctrl-C (SIGINT) during the tuning stops it at the next volume or refinement: exit
    status 130, no output, no temporary file left."""
    import os
    import signal

    from napari_tubular.training import tuning

    real = tuning.native_maps

    def interrupted(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # the command's handler asks the tuning to stop
        yield from real(*args, **kwargs)

    monkeypatch.setattr(tuning, "native_maps", interrupted)
    out = tmp_path / "out.pt"
    assert main(["tune", str(run / "model.pt"), *SYN, "-o", str(out)]) == 130
    err = capsys.readouterr().err
    assert "Ctrl-C: stopping the tuning" in err
    assert "out.pt is not written" in err
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_help_lists_tune(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "tune" in capsys.readouterr().out


def test_tune_keeps_the_models_own_thresholds_and_level_on_a_tie(run, tmp_path, monkeypatch):
    """An outside judge: ``tune default`` on two volumes where the shipped 0.6 / 0.6 scored as
    0.6 / 0.3 wrote 0.6 / 0.3 and the filter off for its 0.99 (the same score, 0.9121). The
    tuning is asked to keep the pair and the level segment used for the model on a tie (the
    fallback pair and the filter off for a model without tuned thresholds)."""
    from napari_tubular.models import write_model_copy
    from napari_tubular.models.serialization import read_model_file

    asked = _spy_on_tie_preferences(monkeypatch)
    payload = read_model_file(run / "model.pt")
    meta = payload["meta"]
    for name, refine in (("own.pt", {"tp": 0.95, "tr": 0.85, "min_confidence": 0.99,
                                     "source": "train validation"}),
                         ("untuned.pt", None)):
        metrics = {k: v for k, v in meta["metrics"].items() if k != "refine"}
        if refine:
            metrics["refine"] = refine
        write_model_copy(payload, tmp_path / name, {**meta, "metrics": metrics})
        assert main(["tune", str(tmp_path / name), *SYN, "-o", str(tmp_path / f"t_{name}"),
                     "--quiet"]) == 0
    assert asked == [((0.95, 0.85), 0.99), ((0.9, 0.5), None)]


@pytest.mark.parametrize("training", ["a text", {"config": "a text", "steps": "four"},
                                      {"config": {"seed": "abc"}}])
def test_a_hand_edited_training_description_is_no_traceback(training, run, tmp_path, capsys):
    """An outside judge: ``meta.training`` is a free description (not checked on load), but
    tune read it as a dict: ``"training": "x"`` ended in an AttributeError traceback (exit 1);
    a model's own seed edited to "abc" was said to be a bad "--seed", which was not given."""
    from napari_tubular.models import write_model_copy
    from napari_tubular.models.serialization import read_model_file

    payload = read_model_file(run / "model.pt")
    model, out = tmp_path / "edited.pt", tmp_path / "out.pt"
    write_model_copy(payload, model, {**payload["meta"], "training": training})
    code = main(["tune", str(model), *SYN, "-o", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if isinstance(training, dict) and isinstance(training["config"], dict):
        assert code == 2
        assert "the model's run seed (meta training.config.seed) is 'abc'" in err
        assert "--seed N" in err
        assert not out.exists()
        # a --seed given is the one used
        assert main(["tune", str(model), *SYN, "--seed", "1", "-o", str(out), "--quiet"]) == 0
    else:
        assert code == 0
        assert out.exists()


def test_an_output_link_is_refused_where_the_volume_writers_refuse_one(run, tmp_path, capsys):
    """-o is written through a symbolic link, as a volume file is; an outside judge: a link
    into a folder that did not exist made that folder (elsewhere) with the model in it, and a
    link to a volume file was replaced by a model with --overwrite. Both are refused before
    any work, nothing made or replaced."""
    into_nothing = tmp_path / "a.pt"
    into_nothing.symlink_to(tmp_path / "gone" / "deeper" / "model.pt")
    volume = tmp_path / "labels.nii.gz"
    volume.write_bytes(b"a volume")
    to_volume = tmp_path / "b.pt"
    to_volume.symlink_to(volume)
    for link, said in ((into_nothing, "in a folder that does not exist"),
                       (to_volume, "a volume file; tune writes a model file")):
        assert main(["tune", str(run / "model.pt"), *SYN, "-o", str(link), "--overwrite",
                     "--quiet"]) == 2
        err = capsys.readouterr().err
        assert said in err
        assert "Traceback" not in err
    assert not (tmp_path / "gone").exists()
    assert volume.read_bytes() == b"a volume"
    # a link to a file in a folder that exists is written through, the link kept
    fine = tmp_path / "c.pt"
    fine.symlink_to(tmp_path / "real.pt")
    assert main(["tune", str(run / "model.pt"), *SYN, "-o", str(fine), "--quiet"]) == 0
    assert fine.is_symlink()
    assert (tmp_path / "real.pt").is_file()


def test_validation_volumes_of_the_same_name_are_told_apart(run, tmp_path, capsys):
    """An outside judge: two validation folders of synth's names (case_000_image.nii.gz in
    each) were listed by name alone, twice, in the progress and the record's "validation";
    a 0/255 label's warning said its voxels were "trained", which tune does not do."""
    from napari_tubular.io import read_volume, write_volume
    from napari_tubular.models import read_model_meta

    one, two = tmp_path / "one", tmp_path / "two"
    _write_pair(one, "case_000")
    _write_pair(two, "case_000")
    label = read_volume(two / "case_000_label.nii.gz")
    write_volume(two / "case_000_label.nii.gz", (label.data * 255).astype(np.uint8),
                 reference=label, overwrite=True)
    out = tmp_path / "out.pt"
    assert main(["tune", str(run / "model.pt"), "--val-data", str(one), str(two),
                 "-o", str(out)]) == 0
    err = capsys.readouterr().err
    names = [str(one / "case_000_image.nii.gz"), str(two / "case_000_image.nii.gz")]
    assert f"validation volume 1/2: {names[0]}" in err
    assert f"validation volume 2/2: {names[1]}" in err
    assert read_model_meta(out)["metrics"]["refine"]["validation"] == names
    assert "label values other than 0 and 1 (255): every voxel above 0 is scored as " \
        "vessel" in err


def test_a_label_of_negative_values_only_is_empty(run, tmp_path, capsys):
    """The voxels above 0 are vessel (as scored); an outside judge: a label of -1 marks only
    was taken as one with a vessel and scored as an empty reference (the score of false
    positives only, -0.13, which the tuning leaves out for an empty label)."""
    from napari_tubular.io import read_volume, write_volume

    val = tmp_path / "val"
    _write_pair(val, "a")
    _write_pair(val, "b")
    label = read_volume(val / "b_label.nii.gz")
    write_volume(val / "b_label.nii.gz", -label.data.astype(np.int16), reference=label,
                 overwrite=True)
    out = tmp_path / "out.pt"
    assert main(["tune", str(run / "model.pt"), "--val-data", str(val), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "1 validation label(s) are empty (no vessel voxel: none above 0)" in err
    assert "b_label.nii.gz" in err
    assert "validation volume 2/" not in err
    (val / "a_label.nii.gz").unlink()
    (val / "a_image.nii.gz").unlink()
    assert main(["tune", str(run / "model.pt"), "--val-data", str(val), "-o",
                 str(tmp_path / "out2.pt")]) == 2
    assert "every validation label is empty, no voxel above 0" in capsys.readouterr().err


def test_tune_model_leaves_out_a_label_without_a_voxel_above_0(monkeypatch):
    """tuning.tune_model (train's tuning too) leaves out a label of negative values only: the
    network never runs on it."""
    from napari_tubular.training import tuning

    seen = []

    def fake_native_maps(model, volumes, *args, **kwargs):
        seen.extend(label for _image, label, _spacing in volumes)
        return iter(())

    monkeypatch.setattr(tuning, "native_maps", fake_native_maps)
    label = -np.ones((4, 4, 4), np.int16)
    with pytest.raises(ValueError, match="every validation label is empty"):
        tuning.tune_model((None, {}), [(np.zeros((4, 4, 4)), label, (1, 1, 1))])
    assert seen == []


def test_a_ctrl_c_during_the_writing_is_not_said_to_write_nothing(run, tmp_path, monkeypatch,
                                                                    capsys):
    """A Ctrl-C after the tuning's last check, as the file is written: it is written whole
    (atomically), and the command says so after its "is not written" (which said the opposite
    of what happened, with exit status 0)."""
    import os
    import signal

    from napari_tubular import models

    real = models.write_model_copy

    def interrupted(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(models, "write_model_copy", interrupted)
    out = tmp_path / "out.pt"
    assert main(["tune", str(run / "model.pt"), *SYN, "-o", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert out.is_file()
    assert "Ctrl-C: stopping the tuning" in err
    assert f"the Ctrl-C came as the tuning was done and {out} being written: it is written " \
        "whole" in err


def test_an_output_folder_is_said_to_be_a_folder(run, tmp_path, capsys):
    """An outside judge: -o RUN_FOLDER (as train's --out takes one) was refused as "named
    like a volume file" (a folder counts as a DICOM series there), --overwrite or not; and
    'synthetic' given twice was "mixed with folders"."""
    folder = tmp_path / "run"
    folder.mkdir()
    for extra in ([], ["--overwrite"]):
        assert main(["tune", str(run / "model.pt"), *SYN, "-o", str(folder), *extra]) == 2
        err = capsys.readouterr().err
        assert f"output {folder} is a folder; give the model file to write (e.g. " \
            f"{folder / 'tuned.pt'})" in err
        assert "named like a volume" not in err
    out = tmp_path / "out.pt"
    assert main(["tune", str(run / "model.pt"), "--val-data", "synthetic", "Synthetic",
                 "--val-cases", "1", "-o", str(out), "--quiet"]) == 0
    assert out.is_file()


def test_inherited_thresholds_are_said_to_be_inherited(run, tmp_path, capsys):
    """A fine-tuned model (train --init-model, without validation) holds its initial model's
    record with ``inherited_from``; an outside judge: "before" said "tuned by tune validation"
    (the initial model's source), as if they had been tuned on its own weights."""
    from napari_tubular.models import write_model_copy
    from napari_tubular.models.serialization import read_model_file

    payload = read_model_file(run / "model.pt")
    meta = payload["meta"]
    model = tmp_path / "fine.pt"
    write_model_copy(payload, model, {**meta, "metrics": {**meta["metrics"], "refine": {
        "tp": 0.95, "tr": 0.3, "min_confidence": 0.99, "source": "tune validation",
        "inherited_from": "first.pt"}}})
    assert main(["tune", str(model), *SYN, "-o", str(tmp_path / "out.pt"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "before: T_p 0.95 / T_r 0.3, score " in out
    assert ", inherited from first.pt (tuned there by tune validation), not tuned on these " \
        "weights; confidence filter 0.99" in out


def test_overwrite_replaces_only_a_model_file(run, tmp_path, capsys):
    """--overwrite replaces a model file, never a run's training checkpoint (last.pt, which
    'train --resume' reads) or another file that is not a model: both are refused before any
    work and left as they were."""
    checkpoint = tmp_path / "last.pt"
    shutil.copy(run / "last.pt", checkpoint)
    other = tmp_path / "notes.pt"
    other.write_bytes(b"keep me")
    for path in (checkpoint, other):
        before = path.read_bytes()
        code = main(["tune", str(run / "model.pt"), *SYN, "-o", str(path), "--overwrite"])
        err = capsys.readouterr().err
        assert code == 2
        assert "is not a model file that --overwrite may replace" in err
        assert path.read_bytes() == before
    assert "training checkpoint" in err or "not a napari-tubular model file" in err
    model = tmp_path / "model.pt"
    shutil.copy(run / "model.pt", model)
    assert main(["tune", str(run / "model.pt"), *SYN, "-o", str(model), "--overwrite"]) == 0


@pytest.mark.parametrize("words", [
    ["--val-data", "val", "runs/r1/model.pt", "-o", "t.pt"],
    ["-o", "t.pt", "--val-data", "val", "other", "runs/r1/model.pt"],
    # an abbreviation argparse takes for --val-data (the hint was missing: a bare "the
    # following arguments are required: MODEL")
    ["--val-d", "val", "runs/r1/model.pt", "-o", "t.pt"],
])
def test_a_model_taken_by_val_data_is_named_so(words, capsys):
    """An outside judge: ``tune --val-data val/ runs/r1/model.pt -o t.pt`` said only "the
    following arguments are required: MODEL" (--val-data, of several folders, took the model
    path); the error names the word taken and where MODEL goes."""
    with pytest.raises(SystemExit) as exc:
        main(["tune", *words])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "MODEL missing: --val-data took 'runs/r1/model.pt'" in err
    assert "put MODEL before --val-data" in err


def test_options_between_positionals_still_parse():
    """The hint leaves the intermixed reading as it was: options between or after
    positional arguments, MODEL after --val-data's folders ended by another option."""
    from napari_tubular.cli import build_parser, parse_args

    args = parse_args(build_parser(), ["tune", "--val-data", "a", "b", "-o", "t.pt", "m.pt"])
    assert (args.model, args.val_data, args.out) == ("m.pt", ["a", "b"], "t.pt")
    args = parse_args(build_parser(), ["evaluate", "p.nii.gz", "--json", "m.json", "r.nii.gz"])
    assert (args.pred, args.ref) == (Path("p.nii.gz"), Path("r.nii.gz"))
    args = parse_args(build_parser(), ["segment", "a.nii.gz", "-o", "out", "b.nii.gz"])
    assert args.inputs == ["a.nii.gz", "b.nii.gz"]


@pytest.mark.parametrize("words", [
    ["tune", "m.pt", "--val-data", "a", "--val-data", "b", "-o", "t.pt"],
    ["tune", "--val-data", "a", "-o", "t.pt", "m.pt", "--val-data", "b"],
])
def test_val_data_given_twice_takes_the_folders_of_both(words):
    """An outside judge: ``tune MODEL --val-data a --val-data b -o t.pt`` tuned on b alone
    (argparse's "store": the last one replaced the first, and the validation volumes of a were
    dropped without a word); both folders are used, as ``--val-data a b``."""
    from napari_tubular.cli import build_parser, parse_args

    args = parse_args(build_parser(), words)
    assert (args.model, args.val_data, args.out) == ("m.pt", ["a", "b"], "t.pt")


def test_train_data_and_val_data_given_twice_take_the_folders_of_both():
    """The same for ``train --data a --data b --val-data c --val-data d`` (it trained on b
    and validated on d alone)."""
    from napari_tubular.cli import build_parser, parse_args

    args = parse_args(build_parser(), ["train", "--data", "a", "--val-data", "c", "--data",
                                       "b", "--val-data", "d", "--out", "r"])
    assert (args.data, args.val_data) == (["a", "b"], ["c", "d"])


@pytest.mark.parametrize(("refine", "pair", "missing"), [
    ({"tp": 0.8}, (0.8, 0.5), "T_r 0.5"),
    ({"tr": 0.3, "source": "hand"}, (0.9, 0.3), "T_p 0.9"),
])
def test_a_record_missing_a_threshold_is_described_as_segment_reads_it(
        refine, pair, missing, run, tmp_path, monkeypatch, capsys):
    """An outside judge: a hand-edited ``metrics.refine`` with ``tp`` but no ``tr`` was said
    to be "before: not tuned (the fallback T_p 0.9 / T_r 0.5) ... confidence filter off",
    and the fallback pair kept on a tie, while segment used the file's T_p with T_r 0.5 and
    the filter's level 0.99. tune says and keeps (on a tie) what segment used."""
    from napari_tubular.inference import recommended_thresholds, tuned_min_confidence
    from napari_tubular.models import read_model_meta, write_model_copy
    from napari_tubular.models.serialization import read_model_file

    asked = _spy_on_tie_preferences(monkeypatch)
    payload = read_model_file(run / "model.pt")
    meta = payload["meta"]
    model = tmp_path / "edited.pt"
    write_model_copy(payload, model, {**meta, "metrics": {**meta["metrics"], "refine": refine}})
    edited = read_model_meta(model)
    assert recommended_thresholds(edited) == pair  # what segment uses
    level = tuned_min_confidence(edited)
    assert level == 0.99
    assert main(["tune", str(model), *SYN, "-o", str(tmp_path / "out.pt"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"before: T_p {pair[0]:g} / T_r {pair[1]:g}, score " in out
    assert f"the file's record has no {missing.split()[0]}: segment used the fallback's " \
        f"{missing}; confidence filter 0.99" in out
    assert "not tuned" not in out
    assert asked == [(pair, level)]


def test_a_constant_validation_image_is_warned_of_as_train_does(run, tmp_path, capsys):
    """An outside judge: train warns of a constant image ("the image is constant (40) ..."),
    tune took one as a validation volume in silence. It says so too (the pair is kept, as
    train keeps it)."""
    from napari_tubular.io import write_volume

    val = tmp_path / "val"
    _write_pair(val, "a")
    _write_pair(val, "b")
    write_volume(val / "b_image.nii.gz", np.full((24, 24, 24), 40.0, np.float32),
                 overwrite=True)
    out = tmp_path / "out.pt"
    assert main(["tune", str(run / "model.pt"), "--val-data", str(val), "-o", str(out),
                 "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "b_image.nii.gz: the image is constant (40): no vessel can be seen in it" in err
    assert "a_image.nii.gz: the image is constant" not in err


@pytest.mark.parametrize("how", ["access", "read-only mount"])
def test_an_unwritable_output_folder_is_refused_before_the_tuning(how, run, tmp_path,
                                                                  monkeypatch, capsys):
    """An outside judge: ``-o`` into a folder that cannot be written was refused only after
    the whole tuning ("Permission denied: OUT.pt.x1y2.tmp", a temporary name). It is refused
    before any network runs, naming the folder: as os.access says (a user's folder), or as
    a file made there fails (root on a read-only mount, where os.access says yes)."""
    import errno
    import os
    import tempfile

    from napari_tubular.training import tuning

    locked = tmp_path / "locked"
    locked.mkdir()
    if how == "access":
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **k: False if Path(p) == locked
                            else real_access(p, mode, **k))
    else:
        real_mkstemp = tempfile.mkstemp

        def mkstemp(*args, dir=None, **kwargs):  # noqa: A002 (tempfile's own name)
            if dir is not None and Path(dir) == locked:
                raise OSError(errno.EROFS, "Read-only file system")
            return real_mkstemp(*args, dir=dir, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    tuned = []
    monkeypatch.setattr(tuning, "tune_model", lambda *a, **k: tuned.append(1))
    for out in (locked / "t.pt", locked / "new" / "t.pt"):
        assert main(["tune", str(run / "model.pt"), *SYN, "-o", str(out)]) == 2
        cap = capsys.readouterr()
        assert f"output {out}: cannot write into the folder {locked}" in cap.err
        assert "validation volume" not in cap.err
    assert not tuned
    assert list(locked.iterdir()) == []


def _fake_result(path, score, levels):
    refine = {"tp": 0.95, "tr": 0.3, "score": score, "volumes": 2, "time_s": 1.0,
              "min_confidence": 0.99, "confidence_scores": levels,
              "fallback": {"tp": 0.9, "tr": 0.5, "score": score - 0.02},
              "initial": {"tp": 0.6, "tr": 0.6, "score": score - 0.09}}
    return {"refine": refine, "previous": {"tp": 0.6, "tr": 0.6, "source": "x"},
            "previous_thresholds": (0.6, 0.6), "previous_min_confidence": 0.99,
            "path": path}


@pytest.mark.parametrize(("score", "levels", "warned"), [
    (-0.035, {"off": -0.025, "0.9": -0.025, "0.99": -0.025}, True),
    (0.0, {"off": 0.0}, True),
    (-0.01, {"off": 0.2, "0.99": -0.01}, False),
    (0.9063, {"off": 0.9063}, False),
])
def test_a_tuning_where_no_pair_scores_above_0_is_warned_of(score, levels, warned, tmp_path,
                                                             monkeypatch, capsys):
    """An outside judge: on noisy volumes the default model did not fit, tune wrote T_p 0.95 /
    T_r 0.3 (score -0.035, as labels without any vessel score) and said only "segment --model
    OUT uses the new thresholds"; segment --model OUT then wrote empty labels on the volumes
    tuned on. A best score <= 0 is said on stderr (exit status 0, the file written)."""
    from napari_tubular.training import retune

    out = tmp_path / "t.pt"
    monkeypatch.setattr(retune, "tune_model_file",
                        lambda *a, **k: _fake_result(out, score, levels))
    assert main(["tune", "m.pt", "--val-data", "v", "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert f"[tune] wrote {out}" in captured.out
    assert ("no threshold pair scored above 0" in captured.err) is warned
