"""CLI output paths and odd inputs (a session-15 audit): outputs that name an input, folders
and over-long names as outputs, absurd spacings, damaged or stale reports of ``refine``."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from napari_tubular.cli import main  # noqa: E402
from napari_tubular.io import Volume, VolumeIOError, read_volume, write_volume  # noqa: E402

from ._tiny_model import save_tiny_model


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("model") / "tiny.pt", K=3)


def _volume(seed=2, shape=(18, 22, 20)):
    from napari_tubular.synthetic import make_vessel_tree

    case = make_vessel_tree(shape, (1.3, 0.8, 0.9), seed=seed)
    return Volume(case.image, spacing=case.spacing, origin=(10.0, -5.0, 3.5)), case.mask


def _run(*argv):
    return main([str(a) for a in argv])


def _digest(path):
    return Path(path).read_bytes()


def test_an_output_that_is_an_input_is_refused_even_with_overwrite(tmp_path, model_file, capsys):
    """An audit: ``segment a a_labels -o .`` wrote a's labels over the second input before
    reading it; ``refine -o <probability>`` and ``evaluate --json <reference>`` replaced their
    inputs, all with ``--overwrite`` and exit status 0."""
    vol, mask = _volume()
    a = write_volume(tmp_path / "a.nii.gz", vol)
    second = write_volume(tmp_path / "a_labels.nii.gz", vol)
    before = _digest(second)
    assert _run("segment", a, second, "-o", tmp_path, "--model", model_file, "--device", "cpu",
                "--overwrite") == 2
    assert "is also an input" in capsys.readouterr().err
    assert _digest(second) == before
    assert not (tmp_path / "a_probability.nii.gz").exists()  # refused before any work
    # refine and evaluate
    prob = write_volume(tmp_path / "c_probability.nii.gz", Volume(np.full(vol.shape, 0.2,
                                                                          np.float32)))
    rad = write_volume(tmp_path / "c_radius.nii.gz", Volume(np.zeros(vol.shape, np.float32)))
    before = _digest(prob)
    assert _run("refine", prob, rad, "-o", prob, "--overwrite") == 2
    assert "is also an input" in capsys.readouterr().err
    assert _digest(prob) == before
    ref = write_volume(tmp_path / "ref.nii.gz", Volume(mask.astype(np.uint8), vol.spacing))
    pred = write_volume(tmp_path / "pred.nii.gz", Volume(mask.astype(np.uint8), vol.spacing))
    before = _digest(ref)
    for opt in ("--json", "--errors", "--sites"):
        assert _run("evaluate", pred, ref, opt, ref, "--overwrite") == 2
        assert "is also an input" in capsys.readouterr().err
    # through a link too
    link = tmp_path / "link.nii.gz"
    os.symlink(pred, link)
    assert _run("evaluate", pred, ref, "--errors", link, "--overwrite") == 2
    assert _digest(ref) == before


def test_evaluate_outputs_named_by_a_folder_give_an_error_not_a_traceback(tmp_path, capsys):
    """An audit: ``--json DIR --overwrite`` raised IsADirectoryError with a traceback."""
    _vol, mask = _volume()
    ref = write_volume(tmp_path / "ref.nii.gz", Volume(mask.astype(np.uint8)))
    folder = tmp_path / "evo"
    folder.mkdir()
    for opt in ("--json", "--csv", "--sites", "--errors"):
        assert _run("evaluate", ref, ref, opt, folder, "--overwrite") == 2
        assert "is a folder" in capsys.readouterr().err


def test_an_output_below_a_file_is_refused_before_anything_is_written(tmp_path, model_file,
                                                                      capsys):
    """An outside judge: ``evaluate --json afile/m.json`` said "[Errno 17] File exists:
    'afile'" after the comparison (and after writing --errors), ``segment -o afile/out``
    "[Errno 20] Not a directory: 'afile/out'"."""
    vol, mask = _volume()
    ref = write_volume(tmp_path / "ref.nii.gz", Volume(mask.astype(np.uint8)))
    image = write_volume(tmp_path / "image.nii.gz", vol)
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    for opt in ("--json", "--csv", "--sites", "--errors"):
        name = "e.nii.gz" if opt == "--errors" else "m.csv"
        assert _run("evaluate", ref, ref, opt, blocker / "sub" / name,
                    "--errors" if opt != "--errors" else "--json",
                    tmp_path / ("e.nii.gz" if opt != "--errors" else "m.json")) == 2
        err = capsys.readouterr().err
        assert f"{opt} {blocker / 'sub' / name}: {blocker} is a file, not a folder" in err
        assert not (tmp_path / "e.nii.gz").exists()
        assert not (tmp_path / "m.json").exists()
    assert _run("segment", image, "-o", blocker / "out", "--model", model_file,
                "--device", "cpu") == 2
    assert f"-o {blocker / 'out'}: {blocker} is a file, not a folder" in capsys.readouterr().err


def test_over_long_names_are_refused_before_anything_is_written(tmp_path, model_file, capsys):
    """An audit: a 240-character input name crashed with a traceback; a 225-character one
    was refused for its temporary file's name after one output had been written."""
    vol, _ = _volume()
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    with pytest.raises(VolumeIOError, match="file name is"):
        write_volume(tmp_path / ("x" * (limit - 3) + ".nii.gz"), vol)
    # the longest name that fits is written (its temporary name is short)
    fits = "y" * (limit - len(".nii.gz"))
    assert write_volume(tmp_path / f"{fits}.nii.gz", vol).exists()
    stem = "v" * (limit - len("_probability.nii.gz") + 2)  # the input fits, an output not
    src = write_volume(tmp_path / f"{stem}.nii.gz", vol)
    out = tmp_path / "out"
    assert _run("segment", src, "-o", out, "--model", model_file, "--device", "cpu") == 2
    assert "file name is" in capsys.readouterr().err
    assert not out.exists() or not list(out.iterdir())


def test_absurd_spacing_and_thin_volumes_have_their_own_messages():
    """An audit: spacing (800, 800, 1000) (micrometres as mm) ended in the allocator's
    'tried to allocate 983040000000000 bytes'; two 1 mm slices were asked about units."""
    from napari_tubular.inference import _check_model_grid

    with pytest.raises(ValueError, match="micrometres"):
        _check_model_grid((64, 64, 64), (800.0, 800.0, 1000.0), (0.8, 0.8, 0.8))
    with pytest.raises(ValueError, match="too thin") as info:
        _check_model_grid((2, 64, 64), (1.0, 0.8, 0.8), (0.8, 0.8, 0.8))
    assert "micrometres" not in str(info.value)
    _check_model_grid((96, 128, 128), (1.5, 0.8, 0.8), (0.8, 0.8, 0.8))  # an ordinary CT


@pytest.fixture
def segmented(tmp_path, model_file, monkeypatch):
    from napari_tubular import inference

    # the tiny model's detections are as bright as the tissue around them: without the
    # flat-component step they stay, and refine has labels to work on
    monkeypatch.setattr(inference, "_suppress_flat_components", lambda *a, **k: 0.0)
    vol, _ = _volume()
    src = write_volume(tmp_path / "case.nii.gz", vol)
    out = tmp_path / "o"
    assert _run("segment", src, "-o", out, "--model", model_file, "--device", "cpu", "--tp",
                "0.5", "--tr", "0.3", "--min-size", "0", "--quiet") == 0
    return src, out


def test_refine_says_when_the_report_cannot_be_read(segmented, tmp_path, capsys):
    _src, out = segmented
    (out / "case_report.json").write_text("[]")
    capsys.readouterr()
    assert _run("refine", out / "case_probability.nii.gz", out / "case_radius.nii.gz", "-o",
                tmp_path / "r_labels.nii.gz") == 0
    err = capsys.readouterr().err
    assert "the segment report beside the maps cannot be read" in err


def test_refine_over_segments_labels_updates_its_report(segmented, tmp_path, capsys):
    """An audit: after ``refine -o <segment's labels> --tp 0.8 --overwrite`` the report still
    said tp 0.6 and the old volume, and a later plain ``refine`` followed it."""
    _src, out = segmented
    labels = out / "case_labels.nii.gz"
    old = json.loads((out / "case_report.json").read_text())
    assert _run("refine", out / "case_probability.nii.gz", out / "case_radius.nii.gz", "-o",
                labels, "--tr", "0.95", "--overwrite") == 0
    assert "updated" in capsys.readouterr().err
    new = json.loads((out / "case_report.json").read_text())
    assert new["parameters"]["tr"] == pytest.approx(0.95)
    assert new["parameters"]["tp"] == old["parameters"]["tp"]
    written = read_volume(labels).data > 0
    assert new["volume_ml"] == pytest.approx(written.sum() * np.prod(read_volume(labels).spacing)
                                             / 1000)
    assert new["refined"]["by"] == "napari-tubular refine"
    # a plain refine now reproduces these labels
    again = tmp_path / "again_labels.nii.gz"
    assert _run("refine", out / "case_probability.nii.gz", out / "case_radius.nii.gz", "-o",
                again) == 0
    np.testing.assert_array_equal(read_volume(again).data, read_volume(labels).data)
    # refining to another file leaves the report alone
    before = (out / "case_report.json").read_text()
    assert _run("refine", out / "case_probability.nii.gz", out / "case_radius.nii.gz", "-o",
                tmp_path / "other_labels.nii.gz", "--tr", "0.5") == 0
    assert (out / "case_report.json").read_text() == before


def test_refine_image_in_another_orientation_is_reindexed(segmented, tmp_path, capsys):
    """An audit: ``--image`` compared only shapes, so the same image stored with x flipped was
    used voxel by voxel (311 label voxels differed)."""
    src, out = segmented
    vol = read_volume(src)
    flip = np.diag([1.0, 1.0, -1.0])  # x reversed, the same physical grid
    origin = np.asarray(vol.origin) + vol.direction @ (np.array([0, 0, vol.shape[2] - 1])
                                                       * np.asarray(vol.spacing))
    flipped = write_volume(tmp_path / "flipped.nii.gz",
                           Volume(np.ascontiguousarray(vol.data[:, :, ::-1]), vol.spacing,
                                  origin=tuple(origin), direction=vol.direction @ flip))
    prob, rad = out / "case_probability.nii.gz", out / "case_radius.nii.gz"
    a, b = tmp_path / "a_labels.nii.gz", tmp_path / "b_labels.nii.gz"
    assert _run("refine", prob, rad, "-o", a, "--image", src) == 0
    capsys.readouterr()
    assert _run("refine", prob, rad, "-o", b, "--image", flipped) == 0
    assert "re-indexed" in capsys.readouterr().err
    np.testing.assert_array_equal(read_volume(a).data, read_volume(b).data)
    moved = write_volume(tmp_path / "moved.nii.gz",
                         Volume(vol.data, vol.spacing, origin=(0.3, 0.0, 0.0),
                                direction=vol.direction))
    assert _run("refine", prob, rad, "-o", tmp_path / "c_labels.nii.gz", "--image", moved) == 2
    assert "not on the probability map's grid" in capsys.readouterr().err


def test_evaluate_warns_when_the_threshold_leaves_nothing(tmp_path, capsys):
    """An audit: ``--threshold 1.5`` on a probability map gave Dice 0 without a word."""
    _vol, mask = _volume()
    ref = write_volume(tmp_path / "ref.nii.gz", Volume(mask.astype(np.uint8)))
    prob = write_volume(tmp_path / "p.nii.gz", Volume(mask.astype(np.float32) * 0.9))
    assert _run("evaluate", prob, ref, "--threshold", "1.5") == 0
    assert "no voxel of p.nii.gz is above --threshold 1.5" in capsys.readouterr().err
    assert _run("evaluate", prob, ref, "--threshold", "0.5") == 0
    err = capsys.readouterr().err
    assert "no voxel" not in err
    assert "every voxel" not in err
    # an audit: --threshold -1 made every voxel foreground without a word
    assert _run("evaluate", prob, ref, "--threshold", "-1") == 0
    assert "every voxel of p.nii.gz is above --threshold -1" in capsys.readouterr().err


def test_evaluate_refuses_two_outputs_on_one_file(tmp_path, capsys):
    """An audit: ``--json same.nii.gz --errors same.nii.gz`` wrote the error map, then the
    JSON over it, and exited 0."""
    _vol, mask = _volume()
    ref = write_volume(tmp_path / "ref.nii.gz", Volume(mask.astype(np.uint8)))
    pred = write_volume(tmp_path / "pred.nii.gz", Volume(mask.astype(np.uint8)))
    same = tmp_path / "same.nii.gz"
    for a, b in (("--json", "--errors"), ("--json", "--sites"), ("--json", "--csv")):
        assert _run("evaluate", pred, ref, a, same, b, same) == 2
        assert f"{a} and {b} both name" in capsys.readouterr().err
        assert not same.exists()
    assert _run("evaluate", pred, ref, "--json", tmp_path / "m.json", "--errors",
                tmp_path / "e.nii.gz") == 0


def test_refine_says_when_its_thresholds_leave_nothing(tmp_path, capsys):
    """An audit: ``refine --tr 50`` wrote an empty labels file, exit 0, no word."""
    prob = np.zeros((16, 16, 16), np.float32)
    prob[4:12, 6:10, 6:10] = 0.95
    p = write_volume(tmp_path / "c_probability.nii.gz", Volume(prob))
    r = write_volume(tmp_path / "c_radius.nii.gz", Volume((prob > 0).astype(np.float32) * 2))
    assert _run("refine", p, r, "-o", tmp_path / "a_labels.nii.gz", "--tr", "50") == 0
    assert "the labels are empty although the probability map holds vessels" in \
        capsys.readouterr().err
    assert not read_volume(tmp_path / "a_labels.nii.gz").data.any()
    assert _run("refine", p, r, "-o", tmp_path / "b_labels.nii.gz") == 0
    assert "labels are empty" not in capsys.readouterr().err
    assert read_volume(tmp_path / "b_labels.nii.gz").data.any()


def test_folder_input_says_what_it_passes_over(tmp_path, model_file, capsys):
    """An audit: an Analyze pair and a sub-folder of volumes were skipped without a note."""
    vol, _ = _volume()
    folder = tmp_path / "in"
    write_volume(folder / "a.nii.gz", vol)
    write_volume(folder / "sub" / "b.nii.gz", vol)
    (folder / "old.hdr").write_bytes(b"x")
    (folder / "old.img").write_bytes(b"x")
    assert _run("segment", folder, "-o", tmp_path / "o", "--model", model_file, "--device",
                "cpu", "--quiet") == 0
    err = capsys.readouterr().err
    assert "3 entries not segmented" in err
    assert "sub/" in err
    assert "old.hdr" in err
    assert (tmp_path / "o" / "a_labels.nii.gz").exists()
    # a compressed MetaImage's data file is part of its header's volume, not an entry passed
    # over (an audit: "1 entry not segmented: t.zraw")
    import SimpleITK as sitk

    zf = tmp_path / "zf"
    zf.mkdir()
    sitk.WriteImage(sitk.GetImageFromArray(vol.data), str(zf / "t.mhd"), True)
    assert (zf / "t.zraw").exists()
    assert _run("segment", zf, "-o", tmp_path / "zo", "--model", model_file, "--device",
                "cpu", "--quiet") == 0
    assert "not segmented" not in capsys.readouterr().err
    assert (tmp_path / "zo" / "t_labels.mhd").exists() or \
        any((tmp_path / "zo").glob("t_labels.*"))


def test_an_uncompressed_nifti_named_nii_gz_is_read_with_a_warning(tmp_path):
    """An audit: it was refused as a corrupt header ("Not a gzipped file"), though SimpleITK
    reads it by its content."""
    import shutil

    vol, _ = _volume()
    plain = write_volume(tmp_path / "plain.nii", vol)
    misnamed = tmp_path / "plain_as.nii.gz"
    shutil.copy(plain, misnamed)
    with pytest.warns(UserWarning, match="not compressed"):
        got = read_volume(misnamed)
    np.testing.assert_array_equal(got.data, read_volume(plain).data)
    assert got.same_geometry(read_volume(plain))


def test_refine_to_another_format_beside_the_report_leaves_it_alone(segmented, capsys):
    """A review: labels written as .nrrd beside a report of .nii.gz labels rewrote the report,
    which then described a file that had not changed."""
    _src, out = segmented
    before = (out / "case_report.json").read_text()
    assert _run("refine", out / "case_probability.nii.gz", out / "case_radius.nii.gz", "-o",
                out / "case_labels.nrrd", "--tr", "0.9") == 0
    assert (out / "case_report.json").read_text() == before


def test_batch_errors_may_go_to_the_predictions_folder(tmp_path, capsys):
    """A review: batch ``evaluate --errors <the predictions folder>`` was refused as 'an
    input', though it only adds NAME_errors files there."""
    _vol, mask = _volume()
    preds, refs = tmp_path / "p", tmp_path / "r"
    write_volume(preds / "c1_labels.nii.gz", Volume(mask.astype(np.uint8)))
    write_volume(refs / "c1_label.nii.gz", Volume(mask.astype(np.uint8)))
    assert _run("evaluate", preds, refs, "--errors", preds) == 0
    assert (preds / "c1_errors.nii.gz").exists()


def test_refine_refuses_an_image_of_another_size_on_the_same_spacing(segmented, tmp_path,
                                                                     capsys):
    """An audit: a larger image with the same spacing and origin was taken as 're-indexed'
    (a crop) and the trim used the wrong voxels."""
    src, out = segmented
    vol = read_volume(src)
    bigger = np.zeros(tuple(n + 4 for n in vol.shape), np.float32)
    bigger[:vol.shape[0], :vol.shape[1], :vol.shape[2]] = vol.data
    big = write_volume(tmp_path / "big.nii.gz", Volume(bigger, vol.spacing, origin=vol.origin,
                                                       direction=vol.direction))
    assert _run("refine", out / "case_probability.nii.gz", out / "case_radius.nii.gz", "-o",
                tmp_path / "x_labels.nii.gz", "--image", big) == 2
    assert "not on the probability map's grid" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["info", ""], ["segment", "", "-o", "out"], ["segment", "IN", "-o", ""],
    ["segment", "IN", "-o", "out", "--model", ""], ["synth", ""], ["evaluate", "", "IN"],
    ["evaluate", "IN", "IN", "--json", ""],
    ["refine", "", "IN", "-o", "x_labels.nii.gz"], ["refine", "IN", "IN", "-o", ""],
    ["train", "--synthetic", "--out", ""], ["train", "--data", "", "--out", "run"]])
def test_an_empty_path_argument_is_refused(tmp_path, monkeypatch, capsys, argv):
    """An outside judge: an empty path (an unset shell variable: ``segment "$IMG" -o out``) was
    taken as ".": segment set out to segment every volume of the working directory, info read
    them all, synth wrote its cases there. Each command refuses it before any work."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.nii.gz").write_bytes(b"")  # a volume file the working directory holds
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "an empty path (an unset shell variable?)" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii.gz"]


@pytest.mark.skipif(os.name == "nt", reason="symbolic links")
def test_an_input_that_is_a_dangling_link_is_said_as_such(tmp_path, model_file, capsys):
    """An outside judge: segment, evaluate and refine said "not found: b.nii.gz" of a symbolic
    link that ``ls`` lists (info says where it points), and a folder's dangling link was
    passed over as if NIfTI files were not read. Each names the link and its missing file."""
    vol, mask = _volume()
    folder = tmp_path / "in"
    write_volume(folder / "a.nii.gz", vol)
    ok = write_volume(tmp_path / "ok.nii.gz", Volume(mask.astype(np.uint8)))
    gone = tmp_path / "gone.nii.gz"
    link = tmp_path / "b.nii.gz"
    link.symlink_to(gone)
    (folder / "b.nii.gz").symlink_to(gone)
    said = f"not found: {link} is a symbolic link to {gone}, which does not exist"
    for argv in (("segment", link, "-o", tmp_path / "out", "--model", model_file),
                 ("evaluate", link, ok), ("evaluate", ok, link), ("evaluate", link),
                 ("refine", link, ok, "-o", tmp_path / "r_labels.nii.gz")):
        assert _run(*argv) == 2, argv
        assert said in capsys.readouterr().err, argv
    assert _run("segment", tmp_path / "nope.nii.gz", "-o", tmp_path / "out") == 2
    assert f"input not found: {tmp_path / 'nope.nii.gz'}\n" in capsys.readouterr().err
    assert _run("segment", folder, "-o", tmp_path / "out", "--model", model_file,
                "--device", "cpu") == 0
    err = capsys.readouterr().err
    assert "not segmented" in err
    assert "b.nii.gz (a symbolic link to a missing file)" in err


def test_options_between_the_positional_arguments(tmp_path, model_file, capsys):
    """An outside judge: ``segment a.nii.gz -o out b.nii.gz``, ``evaluate PRED --json m.json
    REF`` and ``info a --json b`` failed with "unrecognized arguments: b.nii.gz" under the
    top-level usage (argparse reads a sub-command's positionals in one run). They are read
    intermixed now, as for any single command; a real extra argument is still refused, under
    the command's own usage."""
    vol, mask = _volume()
    a = write_volume(tmp_path / "a.nii.gz", vol)
    b = write_volume(tmp_path / "b.nii.gz", vol)
    m = write_volume(tmp_path / "m.nii.gz", Volume(mask.astype(np.uint8), spacing=vol.spacing))
    out = tmp_path / "out"
    assert _run("segment", a, "-o", out, "--model", model_file, "--device", "cpu", b,
                "--quiet") == 0
    assert sorted(p.name for p in out.glob("*_labels.nii.gz")) == ["a_labels.nii.gz",
                                                                   "b_labels.nii.gz"]
    assert _run("evaluate", m, "--json", tmp_path / "e.json", m, "--tolerance", "0") == 0
    assert json.loads((tmp_path / "e.json").read_text())["dice"] == 1.0
    assert _run("evaluate", m, "--break-gap", "2", m) == 2  # still known as given
    assert "--break-gap is for the self-check" in capsys.readouterr().err
    assert _run("info", a, "--json", b) == 0
    assert [d["path"] for d in json.loads(capsys.readouterr().out)] == [str(a), str(b)]
    with pytest.raises(SystemExit) as exc:
        _run("evaluate", m, "--json", tmp_path / "f.json", m, m)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "usage: napari-tubular evaluate" in err
    assert f"unrecognized arguments: {m}" in err
    assert not (tmp_path / "f.json").exists()


@pytest.mark.parametrize(("words", "expected"), [
    (["synth", "--", "o1", "-x"], {"outdir": Path("o1")}),
    (["evaluate", "--json", "m.json", "--", "-p.nii", "--csv"],
     {"pred": Path("-p.nii"), "ref": Path("--csv"), "csv": None}),
    (["segment", "a.nii", "-o", "out", "--", "-o.nii"],
     {"inputs": ["a.nii", "-o.nii"], "output": "out"}),
    (["segment", "a.nii", "-o", "out", "b.nii", "--", "-c.nii", "--quiet"],
     {"inputs": ["a.nii", "b.nii", "-c.nii", "--quiet"], "quiet": False}),
])
def test_words_after_a_double_dash_are_positional_arguments(words, expected, capsys):
    """An outside judge: ``synth -- out --n 3`` wrote 3 cases into ``out`` (argparse's
    intermixed reading, Python 3.11, drops a "--" before the first positional argument and read
    ``--n 3`` as the option; the plain reading refused them); every word after "--" is a
    positional argument, a file name starting with '-' included, and one too many is refused
    under its own name."""
    from napari_tubular.cli import build_parser, parse_args

    if words[0] == "synth":
        with pytest.raises(SystemExit) as exc:
            parse_args(build_parser(), [*words[:3], "--n", "3"])
        assert exc.value.code == 2
        assert "unrecognized arguments: --n 3" in capsys.readouterr().err
        words = words[:3]
    args = parse_args(build_parser(), words)
    for key, value in expected.items():
        assert getattr(args, key) == value, key
    assert getattr(args, "n", 1) == 1


@pytest.mark.skipif(os.name == "nt", reason="symbolic links")
@pytest.mark.parametrize("command", ["segment", "segment-sub", "synth", "evaluate-batch",
                                     "evaluate-json", "refine"])
def test_an_output_folder_that_is_a_dangling_link_is_refused_before_any_work(
        tmp_path, model_file, capsys, command):
    """An outside judge: ``segment -o LINK`` (a symbolic link to a folder that is not there)
    said "[Errno 17] File exists: 'LINK'", synth "cannot create its folder LINK (File
    exists)", and evaluate's batch compared every case, then failed each at its error map
    (exit 2). Each says what the link is, before any work; nothing is made where it points."""
    vol, mask = _volume()
    a = write_volume(tmp_path / "in" / "a.nii.gz", vol)
    m = write_volume(tmp_path / "in" / "a_gt.nii.gz",
                     Volume(mask.astype(np.uint8), spacing=vol.spacing))
    write_volume(tmp_path / "ref" / "a.nii.gz", Volume(mask.astype(np.uint8),
                                                       spacing=vol.spacing))
    write_volume(tmp_path / "pred" / "a.nii.gz", Volume(mask.astype(np.uint8),
                                                        spacing=vol.spacing))
    gone = tmp_path / "gone"
    link = tmp_path / "link"
    link.symlink_to(gone)
    argv = {"segment": ("segment", a, "-o", link, "--model", model_file),
            "segment-sub": ("segment", a, "-o", link / "sub", "--model", model_file),
            "synth": ("synth", link, "--shape", "16", "16", "16"),
            "evaluate-batch": ("evaluate", tmp_path / "pred", tmp_path / "ref", "--errors",
                               link),
            "evaluate-json": ("evaluate", m, m, "--json", link / "m.json"),
            "refine": ("refine", m, m, "-o", link / "x_labels.nii.gz")}[command]
    assert _run(*argv) == 2
    captured = capsys.readouterr()
    assert (f"{link} is a symbolic link to {gone}, which does not exist (a folder that is not "
            "there); create that folder, or remove the link") in captured.err
    assert "dice" not in captured.out
    assert "sliding window" not in captured.err
    assert not gone.exists()
