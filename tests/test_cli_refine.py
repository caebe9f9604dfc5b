"""CLI ``refine``: which files it refuses to write over, and what it says about its inputs (the
image for the partial-volume trim, a damaged report, where each default comes from)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from napari_tubular.cli import main
from napari_tubular.io import Volume, read_volume, write_volume


def _run(*argv):
    return main([str(a) for a in argv])


def _maps(folder: Path, case: str = "c1", report: bool = True, image_path=None) -> tuple:
    """A tube's probability and radius maps as segment names them, its image, and (with
    ``report``) a minimal segment report beside the maps recording the image."""
    shape = (16, 20, 20)
    prob = np.zeros(shape, np.float32)
    prob[2:14, 8:12, 8:12] = 1.0
    radius = np.where(prob > 0, 2.0, 0.0).astype(np.float32)
    image = np.where(prob > 0, 300.0, 0.0).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    p = write_volume(folder / f"{case}_probability.nii.gz", Volume(prob))
    r = write_volume(folder / f"{case}_radius.nii.gz", Volume(radius))
    img = write_volume(image_path or folder.parent / f"{case}.nii.gz", Volume(image))
    if report:
        (folder / f"{case}_report.json").write_text(json.dumps({
            "input": {"path": str(Path(img).resolve())},
            "outputs": {"labels": f"{case}_labels.nii.gz"},
            "parameters": {"tp": 0.6, "tr": 0.6, "min_size_mm3": 0.0,
                           "partial_volume_trim": 0.4, "polarity": "bright"},
        }))
    return p, r, img


def test_the_image_the_report_records_is_never_an_output(tmp_path, capsys):
    """An audit: ``refine -o <the segmented CT> --overwrite`` (the image recorded in the report,
    read for the partial-volume trim) replaced it with a uint8 mask, exit 0, while the same
    file given as --image was refused."""
    p, r, img = _maps(tmp_path / "seg")
    before = img.read_bytes()
    assert _run("refine", p, r, "-o", img, "--overwrite") == 2
    err = capsys.readouterr().err
    assert "segmented image recorded in" in err
    assert "--overwrite never replaces an input" in err
    # through a link, and spelled relative to another working directory
    link = tmp_path / "link.nii.gz"
    os.symlink(img, link)
    assert _run("refine", p, r, "-o", link, "--overwrite") == 2
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path / "seg")
        assert _run("refine", p, r, "-o", Path("..") / img.name, "--overwrite") == 2
    finally:
        os.chdir(cwd)
    assert img.read_bytes() == before
    assert "segmented image recorded in" in capsys.readouterr().err
    # the other inputs as before
    for inp in (p, r):
        assert _run("refine", p, r, "-o", inp, "--overwrite") == 2
        assert "is also an input" in capsys.readouterr().err
    # another file is fine
    assert _run("refine", p, r, "-o", tmp_path / "x_labels.nii.gz") == 0


def test_an_image_of_another_case_is_warned_about(tmp_path, capsys):
    """An audit: --image of another case on the same grid trimmed the labels without a word,
    while maps of two cases got a warning."""
    p, r, img = _maps(tmp_path / "seg")
    other = write_volume(tmp_path / "c2.nii.gz", read_volume(img))
    assert _run("refine", p, r, "-o", tmp_path / "a_labels.nii.gz", "--image", other) == 0
    err = capsys.readouterr().err
    assert "is not the image segment's report records" in err
    # the recorded image itself: no warning
    assert _run("refine", p, r, "-o", tmp_path / "b_labels.nii.gz", "--image", img) == 0
    assert "--image" not in capsys.readouterr().err
    # without a report: by the names
    q, s, img3 = _maps(tmp_path / "alone", case="c3", report=False)
    assert _run("refine", q, s, "-o", tmp_path / "c_labels.nii.gz", "--partial-volume", "0.4",
                "--image", other) == 0
    assert "is named 'c2', but the maps are case 'c3'" in capsys.readouterr().err
    assert _run("refine", q, s, "-o", tmp_path / "d_labels.nii.gz", "--partial-volume", "0.4",
                "--image", img3) == 0
    assert "--image" not in capsys.readouterr().err
    # the recorded image moved away: the copy given by its case name is taken in silence
    moved = tmp_path / "moved" / "c1.nii.gz"
    moved.parent.mkdir()
    os.replace(img, moved)
    assert _run("refine", p, r, "-o", tmp_path / "e_labels.nii.gz", "--image", moved) == 0
    assert "--image" not in capsys.readouterr().err


def test_a_corrupt_report_is_called_unreadable_and_left_alone(tmp_path, capsys):
    """An audit: a corrupt report was called "no segment report beside the maps", and refine
    said it "could not be updated" although -o was not segment's labels file."""
    p, r, _img = _maps(tmp_path / "seg")
    (tmp_path / "seg" / "c1_report.json").write_text("{bad")
    assert _run("refine", p, r, "-o", tmp_path / "seg2" / "o_labels.nrrd") == 0
    err = capsys.readouterr().err
    assert "the segment report beside the maps cannot be read (" in err
    assert "JSONDecodeError" in err
    assert "no segment report" not in err
    assert "could not be updated" not in err
    # all parameters given: still said that the report was not read
    assert _run("refine", p, r, "-o", tmp_path / "o2_labels.nii.gz", "--tp", "0.6", "--tr",
                "0.6", "--min-size", "0", "--partial-volume", "off", "--blob-ratio", "off",
                "--min-confidence", "off") == 0
    assert "cannot be read" in capsys.readouterr().err
    # over segment's own labels the update is tried, and its failure said
    assert _run("refine", p, r, "-o", tmp_path / "seg" / "c1_labels.nii.gz") == 0
    assert "could not be updated" in capsys.readouterr().err
    # a report missing a key: the same message, naming the key
    (tmp_path / "seg" / "c1_report.json").write_text(json.dumps({"parameters": {"tp": 0.5}}))
    assert _run("refine", p, r, "-o", tmp_path / "o3_labels.nii.gz") == 0
    err = capsys.readouterr().err
    assert "cannot be read (" in err
    assert "'tr'" in err


def test_messages_name_extensions_and_each_defaults_source(tmp_path, capsys):
    """An audit: -o x.txt told a CLI user to call write_dicom_series(folder, ...); without a
    report, the fixed 20 mm^3 was said to come from the default model's tuned thresholds."""
    p, r, _img = _maps(tmp_path / "seg", report=False)
    assert _run("refine", p, r, "-o", tmp_path / "x.txt") == 2
    err = capsys.readouterr().err
    assert "write_dicom_series" not in err
    assert ".nii.gz, .nii, .nrrd, .mha, .mhd" in err
    assert not list(tmp_path.glob("x*"))
    assert _run("refine", p, r, "-o", tmp_path / "y_labels.nii.gz") == 0
    err = capsys.readouterr().err
    assert "min size from refine's fixed default" in err
    assert "tp, tr from the" in err
    assert "min size from the default model" not in err


@pytest.mark.parametrize("ext", [".nii", ".nrrd", ".mha", ".mhd"])
def test_every_written_extension_is_accepted(tmp_path, ext):
    p, r, _img = _maps(tmp_path / "seg", report=False)
    assert _run("refine", p, r, "-o", tmp_path / f"y_labels{ext}") == 0
    assert (tmp_path / f"y_skeleton{ext}").exists()


def test_labels_and_skeleton_are_written_as_a_pair(tmp_path, capsys, monkeypatch):
    """An outside judge: a skeleton that could not be written (or Ctrl-C between the two
    writes) left the new labels beside the old skeleton; both stay as they were, with no
    temporary file left, and the error names the output."""
    from napari_tubular import io as nt_io
    from napari_tubular.io import VolumeIOError

    p, r, _ = _maps(tmp_path / "maps")
    out = tmp_path / "maps" / "c1_labels.nii.gz"
    assert _run("refine", p, r, "-o", out) == 0
    before = {f.name: f.read_bytes() for f in (tmp_path / "maps").iterdir()}
    real = nt_io.write_volume

    def failing(path, *args, **kwargs):
        if "skeleton" in Path(path).name:
            raise VolumeIOError(f"{path}: cannot write the volume (No space left on device)")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(nt_io, "write_volume", failing)
    assert _run("refine", p, r, "-o", out, "--min-size", "1e6", "--overwrite") == 2
    err = capsys.readouterr().err
    assert "c1_skeleton.nii.gz: cannot write the volume (No space left" in err
    assert "partial" not in err
    assert {f.name: f.read_bytes() for f in (tmp_path / "maps").iterdir()} == before

    def interrupted(path, *args, **kwargs):
        if "skeleton" in Path(path).name:
            raise KeyboardInterrupt
        return real(path, *args, **kwargs)

    monkeypatch.setattr(nt_io, "write_volume", interrupted)
    assert _run("refine", p, r, "-o", out, "--min-size", "1e6", "--overwrite") == 130
    assert {f.name: f.read_bytes() for f in (tmp_path / "maps").iterdir()} == before
    monkeypatch.setattr(nt_io, "write_volume", real)
    assert _run("refine", p, r, "-o", out, "--min-size", "1e6", "--overwrite") == 0
    names = sorted(f.name for f in (tmp_path / "maps").iterdir())
    assert names == sorted(before)  # no temporary file left
    report = json.loads((tmp_path / "maps" / "c1_report.json").read_text())
    assert report["parameters"]["min_size_mm3"] == 1e6


def test_a_map_without_vessels_is_said_so_not_lower_tp(tmp_path, capsys):
    """An outside judge: refine on a constant image's all-zero probability map advised "lower
    T_p", which cannot help; it says, as segment does, that the map holds no vessel."""
    folder = tmp_path / "maps"
    folder.mkdir()
    zero = np.zeros((12, 14, 16), np.float32)
    p = write_volume(folder / "c_probability.nii.gz", Volume(zero))
    r = write_volume(folder / "c_radius.nii.gz", Volume(zero))
    out = folder / "c_labels.nii.gz"
    assert _run("refine", p, r, "-o", out) == 0
    err = capsys.readouterr().err
    assert "the probability map holds no vessel (highest probability 0.00)" in err
    assert "lower T_p" not in err
    assert read_volume(out).data.sum() == 0
    assert read_volume(folder / "c_skeleton.nii.gz").data.dtype == np.uint8


def test_a_wrong_image_is_refused_also_when_there_is_nothing_to_trim(tmp_path, capsys):
    """``--image`` was checked only when there were labels to trim: an image of another shape
    given with an empty map went through with exit status 0. It is refused either way, and
    the right image still passes."""
    folder = tmp_path / "maps"
    folder.mkdir()
    zero = np.zeros((12, 14, 16), np.float32)
    p = write_volume(folder / "c_probability.nii.gz", Volume(zero))
    r = write_volume(folder / "c_radius.nii.gz", Volume(zero))
    wrong = write_volume(tmp_path / "c.nii.gz", Volume(np.zeros((12, 14, 20), np.float32)))
    assert _run("refine", p, r, "-o", folder / "a_labels.nii.gz", "--image", wrong) == 2
    assert "is not on the probability map's grid" in capsys.readouterr().err
    right = write_volume(tmp_path / "right.nii.gz", Volume(zero))
    assert _run("refine", p, r, "-o", folder / "b_labels.nii.gz", "--image", right) == 0


def test_a_long_refinement_says_its_progress_and_a_short_one_does_not(capsys):
    from napari_tubular._cli.refine import RefineProgress

    now = [0.0]
    progress = RefineProgress(clock=lambda: now[0])
    for done, t in ((0, 0.0), (10, 0.5), (20, 1.0)):  # done within DELAY_S: silent
        now[0] = t
        progress(done, 100, "refining")
    assert capsys.readouterr().err == ""
    for done, t in ((30, 3.0), (35, 3.5), (40, 4.0), (100, 10.0)):
        now[0] = t
        progress(done, 100, "refining")
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["refine: refining 30% (3 s so far, about 7 s left)",
                     "refine: refining 40% (4 s so far, about 6 s left)",
                     "refine: refining 100% (10 s so far)"]


def test_refine_passes_its_progress_to_the_refinement(tmp_path, monkeypatch):
    from napari_tubular import inference

    seen = []
    original = inference.refine_maps

    def spy(*args, progress=None, **kwargs):
        seen.append(progress)
        return original(*args, progress=progress, **kwargs)

    monkeypatch.setattr(inference, "refine_maps", spy)
    p, r, _ = _maps(tmp_path / "out")
    assert _run("refine", p, r, "-o", tmp_path / "x_labels.nii.gz") == 0
    assert len(seen) == 1
    assert callable(seen[0])


def test_refine_over_segments_labels_replaces_its_label_messages_and_counts(tmp_path, capsys):
    """An outside judge: after ``segment --min-size 100000`` (empty labels) and ``refine -o
    <segment's labels> --min-size 20 --overwrite``, the report gave refine's volume and Betti
    numbers beside segment's ``components_removed`` 2 and "the labels are empty"."""
    p, r, _img = _maps(tmp_path / "seg")
    prob = read_volume(p).data
    prob[2:4, 1:3, 1:3] = 1.0  # a speck of 8 voxels beside the tube
    write_volume(p, Volume(prob), overwrite=True)
    rp = tmp_path / "seg" / "c1_report.json"
    report = json.loads(rp.read_text())
    report["parameters"].update(components_removed=2, blobs_removed=[], cavities_filled=0)
    report["messages"] = [
        "intensities rescaled (asked for): robust range 0..300",
        "the labels are empty: the network found only specks smaller than 100000 mm^3 "
        "(highest probability 1.00), no vessel",
        "3 component(s), 0.20 mL in all, dropped from the labels: no voxel of theirs reached "
        "probability 0.99",
        "T_p=0.9 leaves an empty pseudo-skeleton (no voxel has probability > T_p): the "
        "refined mask is empty; lower T_p.",
    ]
    rp.write_text(json.dumps(report))
    out = tmp_path / "seg" / "c1_labels.nii.gz"
    assert _run("refine", p, r, "-o", out, "--min-size", "20", "--partial-volume", "off",
                "--overwrite") == 0
    assert "updated" in capsys.readouterr().err
    new = json.loads(rp.read_text())
    assert new["volume_ml"] > 0
    assert new["parameters"]["components_removed"] == 1  # the speck, 8 mm^3 < 20
    assert new["messages"] == ["intensities rescaled (asked for): robust range 0..300"]
    # and what refine says about its labels goes in
    assert _run("refine", p, r, "-o", out, "--tr", "50", "--overwrite") == 0
    new = json.loads(rp.read_text())
    assert new["volume_ml"] == 0
    assert new["messages"][0].startswith("intensities rescaled")
    assert len(new["messages"]) == 2
    assert new["messages"][1].startswith("the labels are empty although")


def test_a_trim_skipped_for_a_missing_image_is_not_recorded_as_applied(tmp_path, capsys):
    """An outside judge: with the image segment recorded gone, ``refine -o <segment's labels>
    --overwrite`` wrote untrimmed labels and left ``partial_volume_trim`` 0.4 in the report;
    once the image was back, a plain ``refine`` trimmed, and its labels were not these."""
    p, r, img = _maps(tmp_path / "seg")
    kept = img.with_name("kept.nii.gz")
    img.rename(kept)
    out = tmp_path / "seg" / "c1_labels.nii.gz"
    assert _run("refine", p, r, "-o", out, "--overwrite") == 0
    assert "labels not trimmed" in capsys.readouterr().err
    report = json.loads((tmp_path / "seg" / "c1_report.json").read_text())
    assert report["parameters"]["partial_volume_trim"] is None
    assert any("labels not trimmed" in m for m in report["messages"])
    kept.rename(img)
    again = tmp_path / "again_labels.nii.gz"
    assert _run("refine", p, r, "-o", again) == 0
    np.testing.assert_array_equal(read_volume(again).data, read_volume(out).data)


def test_the_image_given_for_the_trim_is_recorded_for_a_later_refine(tmp_path, capsys):
    """An outside judge: the segmented image moved, ``refine -o <segment's labels> --image
    <its new place> --overwrite`` trimmed with it, but the report kept the old path, so a plain
    ``refine`` skipped the trim and its labels were not these."""
    p, r, img = _maps(tmp_path / "seg")
    moved = tmp_path / "moved" / img.name
    moved.parent.mkdir()
    img.rename(moved)
    out = tmp_path / "seg" / "c1_labels.nii.gz"
    assert _run("refine", p, r, "-o", out, "--image", moved, "--overwrite") == 0
    report = json.loads((tmp_path / "seg" / "c1_report.json").read_text())
    assert report["input"]["path"] == str(moved.resolve())
    assert report["refined"]["image_recorded_before"] == str(img.resolve())
    capsys.readouterr()
    again = tmp_path / "again_labels.nii.gz"
    assert _run("refine", p, r, "-o", again) == 0
    assert "labels not trimmed" not in capsys.readouterr().err
    np.testing.assert_array_equal(read_volume(again).data, read_volume(out).data)


def test_outputs_that_are_symbolic_links_are_written_through(tmp_path):
    """As write_volume does (an outside judge: the link was replaced by a new file, its target
    left as it was): refine -o over a link (and its skeleton's link) replaces the files they
    point to and keeps the links."""
    p, r, _img = _maps(tmp_path / "seg", report=False)
    (tmp_path / "store").mkdir()
    links = {}
    for kind in ("labels", "skeleton"):
        target = write_volume(tmp_path / "store" / f"y_{kind}.nii.gz",
                              Volume(np.full((16, 20, 20), 7, np.uint8)))
        links[kind] = tmp_path / f"y_{kind}.nii.gz"
        links[kind].symlink_to(target)
    assert _run("refine", p, r, "-o", links["labels"], "--overwrite") == 0
    for kind, link in links.items():
        assert link.is_symlink(), kind
        stored = read_volume(tmp_path / "store" / f"y_{kind}.nii.gz").data
        assert stored.max() == 1, kind  # the refined mask, not the 7s it held
    assert sorted(f.name for f in (tmp_path / "store").iterdir()) == [
        "y_labels.nii.gz", "y_skeleton.nii.gz"]


def test_an_image_float32_cannot_hold_is_refused_for_the_trim(tmp_path, capsys):
    """An outside judge: --image of a CT multiplied by 1e300 trimmed the labels from overflowed
    values (numpy's "overflow encountered in cast" on stderr); refused as segment refuses it."""
    p, r, img = _maps(tmp_path / "seg", report=False)
    huge = write_volume(tmp_path / "huge.nii.gz",
                        read_volume(img).data.astype(np.float64) * 1e300 + 1e300)
    out = tmp_path / "o_labels.nii.gz"
    assert _run("refine", p, r, "-o", out, "--image", huge) == 2
    err = capsys.readouterr().err
    assert "--image" in err
    assert "beyond float32's range" in err
    assert "RuntimeWarning" not in err
    assert not out.exists()


def test_an_output_under_a_file_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    """An outside judge: ``refine ... -o afile/labels.nii.gz`` read the maps and refined them,
    then said "cannot create its folder afile (File exists)"; the output path is checked up
    front, as segment checks its -o (nothing is read or refined)."""
    import napari_tubular.inference as inference
    import napari_tubular.io as io

    p, r, _ = _maps(tmp_path / "seg")
    afile = tmp_path / "afile"
    afile.write_text("not a folder")

    def no_work(*args, **kwargs):
        raise AssertionError("the maps were read or refined before the output was checked")

    monkeypatch.setattr(inference, "refine_maps", no_work)
    monkeypatch.setattr(io, "read_volume", no_work)
    capsys.readouterr()
    for out in (afile / "labels.nii.gz", afile / "deeper" / "labels.nii.gz"):
        assert _run("refine", p, r, "-o", out) == 2
        err = capsys.readouterr().err
        assert f"-o {out}: {afile} is a file, not a folder" in err
        assert "AssertionError" not in err
        assert "Traceback" not in err
    assert afile.read_text() == "not a folder"


def test_volumes_said_at_segments_given_spacing_are_in_its_units(tmp_path, capsys):
    """An outside judge: after ``segment --spacing`` (a stack's micrometres given as the README
    advises) refine still printed "min size 20 mm^3" and wrote "min component 20 mm^3" and
    "0.20 mL in all" into its messages and the report, of what are cubic units of --spacing
    (its "volume" line and the report's ``units`` said so already). Without --spacing the
    words stay mm^3."""
    from napari_tubular.inference import in_spacing_units

    assert in_spacing_units("0.0024 mL of what; (min component 20 mm^3) 1e-05 mL, 17 HU") == (
        "2.4 cubic units of --spacing of what; (min component 20 cubic units of --spacing) "
        "0.01 cubic units of --spacing, 17 HU")
    p, r, _img = _maps(tmp_path / "seg")
    rp = tmp_path / "seg" / "c1_report.json"
    report = json.loads(rp.read_text())
    del report["parameters"]["min_size_mm3"]  # refine's default: said on the first line
    report["parameters"]["spacing_override"] = [2.0, 0.5, 0.5]
    rp.write_text(json.dumps(report))
    out = tmp_path / "seg" / "c1_labels.nii.gz"
    assert _run("refine", p, r, "-o", out, "--tr", "50", "--partial-volume", "off") == 0
    err = capsys.readouterr().err
    assert "min size 20 cubic units of segment's --spacing (" in err
    assert "min component 20 cubic units of segment's --spacing)" in err
    assert "mm^3" not in err
    assert "cubic units of segment's --spacing" in json.loads(rp.read_text())["messages"][-1]
    report["parameters"]["spacing_override"] = None
    rp.write_text(json.dumps(report))
    assert _run("refine", p, r, "-o", out, "--tr", "50", "--partial-volume", "off",
                "--overwrite") == 0
    err = capsys.readouterr().err
    assert "min size 20 mm^3 (" in err
    assert "cubic units" not in err


def test_a_missing_map_is_said_before_anything_else(tmp_path, capsys):
    """An outside judge: a mistyped probability or radius map printed the thresholds, "no
    segment report beside the maps" and a case-mismatch warning before "volume not found";
    the missing map is now the only line, and names which map it is."""
    p, r, _img = _maps(tmp_path / "seg")
    for args, what in (((tmp_path / "nope_probability.nii.gz", r), "probability map"),
                       ((p, tmp_path / "nope_radius.nii.gz"), "radius map")):
        assert _run("refine", *args, "-o", tmp_path / "x_labels.nii.gz") == 2
        err = capsys.readouterr().err
        assert err.startswith("napari-tubular refine: error: volume not found: ")
        assert f"(the {what})" in err
        assert err.count("\n") == 1


def test_a_skeleton_output_that_is_a_folder_is_refused_before_any_work(tmp_path, capsys,
                                                                       monkeypatch):
    """An outside judge: a folder named like the skeleton refine writes beside the labels
    (X_skeleton.nii.gz) made ``--overwrite`` fail at the writing, "Is a directory", after the
    refinement."""
    import napari_tubular.inference as inference

    p, r, _img = _maps(tmp_path / "seg")
    (tmp_path / "x_skeleton.nii.gz").mkdir()

    def no_work(*args, **kwargs):
        raise AssertionError("refined before the outputs were checked")

    monkeypatch.setattr(inference, "refine_maps", no_work)
    assert _run("refine", p, r, "-o", tmp_path / "x_labels.nii.gz", "--overwrite") == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'x_skeleton.nii.gz'}, is a folder" in err


@pytest.mark.parametrize("which", ["probability", "radius", "image"])
def test_complex_maps_and_images_are_refused(tmp_path, capsys, which):
    """An outside judge: complex maps (or a complex --image for the trim) were refined from
    their real parts, with numpy's "ComplexWarning: Casting complex values to real discards
    the imaginary part" and exit 0. Refused with a message naming the file, nothing written."""
    nib = pytest.importorskip("nibabel")
    p, r, img = _maps(tmp_path / "seg")
    given = {"probability": p, "radius": r, "image": img}[which]
    src = nib.load(str(given))
    cplx = tmp_path / f"complex_{given.name}"
    nib.save(nib.Nifti1Image(np.asarray(src.dataobj).astype(np.complex64), src.affine),
             str(cplx))
    args = {"probability": (cplx, r), "radius": (p, cplx), "image": (p, r, "--image", cplx)}
    out = tmp_path / "out_labels.nii.gz"
    assert _run("refine", *args[which], "-o", out) == 2
    err = capsys.readouterr().err
    assert f"{cplx}" in err
    assert "holds complex values (dtype complex64)" in err
    assert "ComplexWarning" not in err
    assert not out.exists()


@pytest.mark.skipif(os.name == "nt", reason="symbolic links")
def test_a_dangling_link_as_the_skeleton_beside_the_labels_is_refused(tmp_path, capsys):
    """An outside judge: X_skeleton.nii.gz beside -o X_labels.nii.gz, a symbolic link to a
    missing file in another folder (a leftover), was written through without --overwrite, the
    file made there and "wrote ... X_skeleton.nii.gz" saying nothing of it. refine names the
    skeleton itself: refused before the refinement, with or without --overwrite, as segment
    refuses such a link among its outputs; -o itself, named by the user, is written through
    such a link as write_volume does."""
    p, r, _ = _maps(tmp_path / "seg")
    (tmp_path / "x").mkdir()
    gone = tmp_path / "x" / "gone.nii.gz"
    out = tmp_path / "new_labels.nii.gz"
    skel = tmp_path / "new_skeleton.nii.gz"
    skel.symlink_to(gone)
    for extra in ([], ["--overwrite"]):
        assert _run("refine", p, r, "-o", out, *extra) == 2
        err = capsys.readouterr().err
        assert (f"output {skel} is a symbolic link to {gone}, which does not exist (a dangling "
                "link); refine does not write through it: remove the link") in err
        assert not out.exists()
        assert list((tmp_path / "x").iterdir()) == []
    skel.unlink()
    mine = tmp_path / "x" / "mine.nii.gz"
    out.symlink_to(mine)
    assert _run("refine", p, r, "-o", out) == 0
    assert out.is_symlink()
    assert read_volume(mine).shape == (16, 20, 20)


@pytest.mark.parametrize("stray", ["new_labels.zraw", "new_skeleton.zraw"])
def test_a_detached_metaimage_data_file_there_is_refused_before_the_refinement(tmp_path, capsys,
                                                                              stray):
    """An outside judge: ``-o new_labels.mhd`` beside a stray ``new_skeleton.zraw`` (the data
    file the skeleton's header would name) refined, wrote the labels in place and then failed
    on the skeleton with the API's "pass overwrite=True": half a pair written, exit 2. The
    data files are checked with the outputs, before any work; --overwrite replaces them."""
    p, r, _ = _maps(tmp_path / "seg")
    (tmp_path / stray).write_text("junk")
    out = tmp_path / "new_labels.mhd"
    assert _run("refine", p, r, "-o", out) == 2
    err = capsys.readouterr().err
    header = stray.replace(".zraw", ".mhd")
    assert (f"output file(s) exist: {tmp_path / stray} (the data file of {header}); pass "
            "--overwrite to replace them") in err
    assert "overwrite=True" not in err
    assert sorted(q.name for q in tmp_path.iterdir()) == sorted(["seg", "c1.nii.gz", stray])
    assert _run("refine", p, r, "-o", out, "--overwrite") == 0
    assert read_volume(out).shape == (16, 20, 20)
    assert read_volume(tmp_path / "new_skeleton.mhd").shape == (16, 20, 20)


def test_the_report_is_updated_when_the_labels_are_a_link_to_another_name(tmp_path, capsys):
    """An outside judge: segment's NAME_labels.nii.gz was a symbolic link to a file of another
    name (written through, the report recording the link's target, as segment records its
    outputs resolved); ``refine -o NAME_labels.nii.gz --overwrite`` wrote new labels through
    it and left the report as segment wrote it (tp 0.6, the old volume), without a word."""
    p, r, _img = _maps(tmp_path / "seg")
    elsewhere = tmp_path / "store"
    elsewhere.mkdir()
    target = write_volume(elsewhere / "other.nii.gz", Volume(np.zeros((16, 20, 20), np.uint8)))
    link = tmp_path / "seg" / "c1_labels.nii.gz"
    try:
        link.symlink_to(target)
    except OSError:  # pragma: no cover (no symbolic links here)
        pytest.skip("symbolic links are not available")
    rp = tmp_path / "seg" / "c1_report.json"
    report = json.loads(rp.read_text())
    report["outputs"]["labels"] = str(link.resolve())  # what segment records
    rp.write_text(json.dumps(report))
    assert _run("refine", p, r, "-o", link, "--tp", "0.8", "--overwrite") == 0
    assert f"updated {rp}: these labels replaced segment's" in capsys.readouterr().err
    updated = json.loads(rp.read_text())
    assert updated["parameters"]["tp"] == 0.8
    assert updated["volume_ml"] > 0
    assert link.is_symlink()  # written through the link
    assert read_volume(target).data.any()
    # labels written elsewhere under another name leave the report alone, as before
    other = tmp_path / "seg" / "c1_tp90_labels.nii.gz"
    assert _run("refine", p, r, "-o", other, "--tp", "0.9") == 0
    assert f"updated {rp}" not in capsys.readouterr().err
    assert json.loads(rp.read_text())["parameters"]["tp"] == 0.8


def test_a_report_that_is_a_link_is_updated_through_it(tmp_path, capsys):
    """An outside judge: segment writes NAME_report.json through a symbolic link (the link
    kept, as --overwrite says), but refine's update replaced the link by a file of its own,
    and the file the link pointed to kept segment's thresholds."""
    p, r, _img = _maps(tmp_path / "seg")
    rp = tmp_path / "seg" / "c1_report.json"
    kept = tmp_path / "reports" / "c1.json"
    kept.parent.mkdir()
    kept.write_text(rp.read_text())
    rp.unlink()
    try:
        rp.symlink_to(kept)
    except OSError:  # pragma: no cover (no symbolic links here)
        pytest.skip("symbolic links are not available")
    labels = tmp_path / "seg" / "c1_labels.nii.gz"
    assert _run("refine", p, r, "-o", labels, "--tp", "0.8") == 0
    assert f"updated {rp}" in capsys.readouterr().err
    assert rp.is_symlink()
    assert json.loads(kept.read_text())["parameters"]["tp"] == 0.8
    assert not list(kept.parent.glob(".*tmp"))
    assert not list(rp.parent.glob(".*tmp"))
