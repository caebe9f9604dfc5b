"""Output-path guards shared by the commands."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable
from pathlib import Path


def path_text(text: str) -> str:
    """argparse ``type`` of a file or folder argument: refuses an empty one (an outside judge:
    ``segment "$IMG" -o out`` with IMG unset segmented every volume of the working directory,
    and ``info ""`` read them all, "" being taken as "."; ``synth ""`` wrote its cases there)."""
    if not str(text).strip():
        raise argparse.ArgumentTypeError("an empty path (an unset shell variable?); give a file "
                                         "or folder, '.' for the working directory")
    return text


def path_arg(text: str) -> Path:
    """:func:`path_text` as a :class:`~pathlib.Path`."""
    return Path(path_text(text))


def not_found(what: str, path) -> FileNotFoundError:
    """The error for an input that is not there: ``"{what} not found: PATH"``, and for a
    symbolic link pointing nowhere where it points, as ``info`` says it (an outside judge:
    segment, evaluate and refine said a bare "not found" of a file ``ls`` lists)."""
    path = Path(path)
    if path.is_symlink():
        return FileNotFoundError(f"{what} not found: {path} is a symbolic link to "
                                 f"{os.path.realpath(path)}, which does not exist")
    return FileNotFoundError(f"{what} not found: {path}")


def refuse_inputs_as_outputs(outputs: Iterable, inputs: Iterable) -> None:
    """Raise ValueError when an output path names one of the inputs (the same file, through a
    link or another spelling too). An audit: ``refine ... -o <the probability map>
    --overwrite`` replaced the map by labels, ``evaluate --json <the reference>`` the reference
    by JSON text, and ``segment a.nii.gz a_labels.nii.gz -o .`` wrote a's labels over the second
    input before reading it; ``--overwrite`` is for earlier outputs, never for inputs."""
    from napari_tubular.io import same_file

    ins = [Path(p) for p in inputs if p is not None]
    for out in outputs:
        if out is None:
            continue
        out = Path(out)
        for inp in ins:
            if same_file(out, inp):
                raise ValueError(f"output {out} is also an input ({inp}); choose another output "
                                 "name or folder (--overwrite never replaces an input)")


def refuse_shared_outputs(named: dict) -> None:
    """Raise ValueError when two output options name the same file (an audit: ``evaluate
    --json same.nii.gz --errors same.nii.gz`` wrote the error map, then the JSON over it, and
    said "wrote" twice). ``named``: option name (e.g. ``"--json"``) -> path or None."""
    from napari_tubular.io import same_file

    seen: list[tuple[str, Path]] = []
    for opt, out in named.items():
        if out is None:
            continue
        out = Path(out)
        for other, earlier in seen:
            if same_file(out, earlier):
                raise ValueError(f"{other} and {opt} both name {out}; give each output its own "
                                 "file")
        seen.append((opt, out))


def refuse_file_as_folder(option: str, path, *, is_folder: bool = False) -> None:
    """Raise NotADirectoryError when a folder above ``path`` that exists is a file, so that
    the output can never be written (an outside judge: ``evaluate --json afile/m.json`` said
    "[Errno 17] File exists: 'afile'" after the comparison, and ``segment -o afile/out``
    "[Errno 20] Not a directory"), or is a symbolic link pointing nowhere (with ``is_folder``,
    ``path`` itself, an output folder, too: another judge's ``segment -o LINK`` said "[Errno
    17] File exists", ``evaluate`` compared every case and then failed each at its error map).
    ``option`` names the output (e.g. ``"--json"``)."""
    if path is None:
        return
    path = Path(path).expanduser()
    for folder in ([path] if is_folder else []) + list(path.parents):
        if folder.is_symlink() and not folder.exists():
            what = f"{option} {path}" + ("" if folder == path else f": {folder}")
            raise NotADirectoryError(f"{what} is a symbolic link to {os.readlink(folder)}, "
                                     "which does not exist (a folder that is not there); "
                                     "create that folder, or remove the link")
        if folder.exists():
            if not folder.is_dir():
                raise NotADirectoryError(f"{option} {path}: {folder} is a file, not a folder; "
                                         "choose another output path")
            return


def refuse_volume_name_as_folder(option: str, path, contents: str, *, dicom_note: str = "",
                                 models: bool = False) -> None:
    """Raise ValueError when an output folder that does not exist yet is named like a volume
    file (``run.nii.gz``, ``seg.dcm``), or with ``models`` like a model file (``run.pt``): the
    command would make a folder of that name with its files in it (outside judges: ``segment
    -o seg.nii.gz``, ``synth s.nii.gz`` and ``train --out run.nii.gz`` did). A folder that
    exists is taken as it is. ``option`` names the output as the user gave it (e.g. ``"-o"``),
    ``contents`` what is written in it (e.g. ``"NAME_labels.nii.gz, ..."``); ``dicom_note``
    ends the message for a name like a DICOM file."""
    from ..io import volume_format

    if path is None:
        return
    folder = Path(path).expanduser()
    if folder.exists():
        return
    kind = volume_format(folder)
    model = (models and folder.suffix.lower() in (".pt", ".pth")
             and len(folder.name) > len(folder.suffix))
    if kind is None and not model:
        return
    raise ValueError(f"{option} {path}: the output is a folder ({contents} are written in it), "
                     f"not a {'model' if model else 'volume'} file; name a folder"
                     + (dicom_note if kind == "DICOM" else ""))


def refuse_folder_as_output(path: Path, prefix: str = "") -> None:
    """Raise IsADirectoryError, before any work, when an output file a command names itself
    (``NAME_labels.nii.gz``, ``NAME_errors.nii.gz``) is an existing folder (outside judges:
    with --overwrite it failed only at the writing, "Is a directory", after the whole run;
    without, "already exists; pass --overwrite", which cannot replace a folder). ``prefix``
    opens the message (e.g. ``"--errors: "``)."""
    if Path(path).is_dir():
        raise IsADirectoryError(f"{prefix}output {path} is a folder (--overwrite replaces "
                                "files only); remove or rename it")


def refuse_unusable_link(path, prefix: str, who: str) -> None:
    """Raise, before any work, for an output file a command names itself (``segment``'s
    ``NAME_labels.nii.gz`` ..., ``evaluate``'s batch ``NAME_errors.nii.gz``) that is a
    symbolic link pointing nowhere (FileExistsError, with or without --overwrite: a leftover
    the user did not mean to write through), or one the writer would refuse
    (:func:`napari_tubular.io.output_target`'s VolumeIOError: a link to a file of another
    type). A link to an existing file is written through as usual (--overwrite). ``prefix``
    opens the message (e.g. ``"--errors: "``), ``who`` names the command that does not write
    through it (e.g. ``"the batch"``). Outside judges: evaluate's batch wrote such a link
    through to wherever it pointed, outside the --errors folder; segment made the missing file
    its labels' link named, in another folder, and said nothing of it."""
    from ..io import output_target

    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise FileExistsError(f"{prefix}output {path} is a symbolic link to "
                              f"{os.readlink(path)}, which does not exist (a dangling link); "
                              f"{who} does not write through it: remove the link")
    output_target(path)


def refuse_unwritable_type(option: str, path: Path, what: str) -> None:
    """Raise ValueError, before any work, for an output volume of a file type the writer
    cannot write (its own rule, ``io._write_ext``; the writer's message names a Python
    function, and came after the whole run). ``what`` opens the sentence: "refine writes the
    labels" -> "-o X.txt: refine writes the labels as .nii.gz, ... (the extension ...)"."""
    from ..io import WRITE_EXTENSIONS, VolumeIOError, _write_ext

    try:
        _write_ext(path)
    except VolumeIOError:
        raise ValueError(f"{option} {path}: {what} as {', '.join(WRITE_EXTENSIONS)} (the "
                         "extension picks the format); give a file name ending in one of "
                         "them") from None
