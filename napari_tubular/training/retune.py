"""A model file's refinement thresholds tuned again, without training: ``napari-tubular tune``.

``train`` tunes ``T_p`` / ``T_r`` and the confidence filter's level at the end of a run with
validation data (:func:`napari_tubular.training.tuning.tune_model`). Models trained before that
tuning ran at the volumes' own grids (session 35), runs stopped before it, ``last.pt``-era
snapshots and models tuned on other data keep thresholds that do not suit them;
:func:`tune_model_file` runs the same tuning on validation volumes and writes a copy of the
model file with the new ``metrics.refine``, everything else kept (the weights tensor for
tensor).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

#: the ``metrics.refine.source`` of thresholds that ``napari-tubular tune`` tuned
TUNE_SOURCE = "tune validation"
#: the generated validation volumes of ``--val-data synthetic`` (as ``train --val-cases``)
DEFAULT_VAL_CASES = 4

ProgressFn = Callable[[int, int, str], None]

__all__ = ["TUNE_SOURCE", "DEFAULT_VAL_CASES", "validation_volumes", "tune_model_file"]


def _training(meta: dict) -> dict:
    """The model's ``training`` description, ``{}`` when it is not a dict (a free description,
    not checked on load: an outside judge's hand-edited ``"training": "x"`` ended tune in an
    AttributeError traceback)."""
    training = meta.get("training")
    return training if isinstance(training, dict) else {}


def _is_synthetic(val_data: Sequence[str]) -> bool:
    words = list(dict.fromkeys(str(v).strip().lower() for v in val_data))  # given twice: once
    if "synthetic" in words and len(words) > 1:
        raise ValueError("validation data: 'synthetic' (generated volumes) cannot be mixed "
                         "with folders; give one or the other")
    return words == ["synthetic"]


def validation_volumes(val_data: Sequence[str], meta: dict, *, val_cases: int | None = None,
                       seed: int | None = None) -> list[dict]:
    """The validation volumes to tune a model on, checked before any network runs.

    Args:
        val_data: folders of ``<name>_image`` / ``<name>_label`` pairs (as ``train
            --val-data``), or ``["synthetic"]``: generated volumes at their own grids.
        meta: the model's meta (its spacing for the grid checks; for synthetic volumes its
            run's seed and synthetic options, ``training.config``).
        val_cases: the number of generated volumes (default :data:`DEFAULT_VAL_CASES`).
        seed: the generated volumes are those a ``train`` run of this seed validates on
            (:func:`~napari_tubular.training.config.validation_seed`: never a seed it trains
            on); default the model's own run's seed (0 without one).

    Returns:
        ``[{"name", "load"}]``: ``load() -> (image, label, spacing)`` at the volume's grid.

    Raises:
        FileNotFoundError / ValueError: a missing folder, one without pairs, a pair whose label
            is not on its image's grid or whose grid the model cannot read, no label with a
            vessel (labels without one are left out with a warning: their score counts only
            false positives).
    """
    if not val_data:
        raise ValueError("no validation data: give folder(s) of NAME_image / NAME_label pairs "
                         "or 'synthetic'")
    if [str(v).strip().lower() for v in val_data] == ["none"]:
        # train's word for no validation: tune cannot do without
        raise ValueError("validation data 'none': tune needs validation volumes; give "
                         "folder(s) of NAME_image / NAME_label pairs or 'synthetic'")
    config = _training(meta).get("config")
    config = config if isinstance(config, dict) else {}
    if _is_synthetic(val_data):
        return _synthetic_volumes(config, val_cases, seed)
    if val_cases is not None:
        raise ValueError("--val-cases counts generated volumes: it goes with --val-data "
                         "synthetic, not with folders")
    if seed is not None:
        raise ValueError("--seed picks generated volumes: it goes with --val-data synthetic, "
                         "not with folders")
    return _folder_volumes(val_data, meta)


def _synthetic_volumes(config: dict, val_cases: int | None, seed: int | None) -> list[dict]:
    from .config import validation_seed
    from .data import native_synthetic_case

    n = DEFAULT_VAL_CASES if val_cases is None else val_cases
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"--val-cases must be a whole number of at least 1, got {val_cases!r}")
    run_seed = config.get("seed", 0) if seed is None else seed
    if isinstance(run_seed, bool) or not isinstance(run_seed, (int, np.integer)) or run_seed < 0:
        if seed is None:
            # an outside judge: the model's own seed, edited, was said to be "--seed", which
            # the user had not given
            raise ValueError(f"the model's run seed (meta training.config.seed) is {run_seed!r}, "
                             "not a whole number of at least 0; give the volumes' --seed N")
        raise ValueError(f"--seed must be a whole number of at least 0, got {run_seed!r}")
    from .config import HELD_OUT_SEED_BASE

    if validation_seed(int(run_seed), int(n) - 1) >= HELD_OUT_SEED_BASE:
        # the project's held-out evaluation volumes (scripts/evaluate_default.py) begin there
        what = f"--seed {run_seed}" if seed is not None else \
            f"the model's run seed {run_seed} (give another with --seed)"
        raise ValueError(f"{what}: its validation seeds would reach the held-out "
                         f"evaluation volumes (seeds from {HELD_OUT_SEED_BASE}); choose a "
                         "smaller seed")
    options = config.get("synthetic") if isinstance(config.get("synthetic"), dict) else {}

    def loader(s: int):
        def load():
            case = native_synthetic_case(s, options)
            return case.image, case.mask, case.spacing
        return load

    seeds = [validation_seed(int(run_seed), i) for i in range(int(n))]
    return [{"name": f"synthetic seed {s}", "load": loader(s)} for s in seeds]


def _folder_volumes(val_data: Sequence[str], meta: dict) -> list[dict]:
    from .config import _folder_key, _unique_folders
    from .data import constant_image_value, find_pairs, label_values_note, read_pair

    val_data = _unique_folders([str(v) for v in val_data], "--val-data")
    trained = _training(meta).get("data")
    trained = {_folder_key(str(d)) for d in trained if str(d).lower() != "synthetic"} if \
        isinstance(trained, list) else set()
    shared = [v for v in val_data if _folder_key(v) in trained]
    if shared:
        warnings.warn(f"validation data is the model's training data ({', '.join(shared)}): "
                      "the thresholds are tuned on volumes the network has learnt", UserWarning,
                      stacklevel=3)
    spacing = meta["spacing"]
    out, empty = [], []
    pairs = find_pairs(val_data, "validation data")
    names = [Path(i).name for i, _ in pairs]
    for image_path, label_path in pairs:
        # every pair read and checked before the network runs (an error after minutes of
        # tuning would waste them); read again when its turn comes, one volume in memory
        img, lab = read_pair(image_path, label_path, spacing, task="tune on")
        # the voxels above 0 are vessel, as scored (an outside judge: a label of -1 marks
        # only, no vessel to score, was taken in and scored as an empty reference, -0.13)
        if not np.any(lab.data > 0):
            empty.append(Path(label_path).name)
            continue
        note = label_values_note(lab.data, done="scored")
        if note:
            warnings.warn(f"{label_path}: {note}", UserWarning, stacklevel=3)
        value = constant_image_value(img.data)
        if value is not None:
            # as train warns of it (an outside judge: tune took a blank image in silence)
            warnings.warn(f"{image_path}: the image is constant ({value:g}): no vessel can "
                          "be seen in it, so its score says nothing about the thresholds",
                          UserWarning, stacklevel=3)
        del img, lab

        def load(i=image_path, la=label_path):
            img, lab = read_pair(i, la, spacing, task="tune on")
            return img.data, lab.data, img.spacing

        # a name that two folders share is given with its folder (an outside judge: two
        # synth folders' case_000_image.nii.gz ... were listed twice, in the progress and in
        # the record's "validation", which volume was which unsaid)
        name = Path(image_path).name
        out.append({"name": str(image_path) if names.count(name) > 1 else name, "load": load})
    if not out:
        raise ValueError(f"every validation label is empty, no voxel above 0 ({len(empty)} "
                         f"pair(s) in {', '.join(map(str, val_data))}): there is no vessel to "
                         "score the thresholds on")
    if empty:
        warnings.warn(f"{len(empty)} validation label(s) are empty (no vessel voxel: none "
                      "above 0) and left out of the tuning (their score would count only false "
                      f"positives): {', '.join(empty[:5])}{', ...' if len(empty) > 5 else ''}",
                      UserWarning, stacklevel=3)
    return out


def _refuse_unwritable_folder(out: Path) -> None:
    """PermissionError, before any work, when the model file cannot be written into its
    folder (the nearest one that exists, where the missing ones would be made): an outside
    judge's ``-o`` into a read-only folder was refused only after the whole tuning, naming
    the copy's temporary file. Asked of the system (``os.access``) and tried with a file
    made and removed at once (``os.access`` says yes to root on a read-only mount)."""
    import tempfile

    target = Path(os.path.realpath(out)) if out.is_symlink() else out
    folder = target.expanduser().absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        return  # a file where a folder goes: said by the writer's own checks
    why = None
    if not os.access(folder, os.W_OK | os.X_OK):
        why = "permission denied"
    else:
        try:
            fd, probe = tempfile.mkstemp(prefix=".napari-tubular-", suffix=".tmp", dir=folder)
        except OSError as exc:
            why = (exc.strerror or str(exc)).lower()
        else:
            os.close(fd)
            os.remove(probe)
    if why:
        raise PermissionError(f"output {out}: cannot write into the folder {folder} ({why}); "
                              "write the tuned copy elsewhere")


def check_output(model_path: Path, out, overwrite: bool = False) -> Path:
    """Refuse, before any work, an output that would replace the installed default model (with
    ``overwrite`` too), the model file itself or another existing file without ``overwrite``."""
    from napari_tubular.io import same_file, volume_format
    from napari_tubular.models import DEFAULT_MODEL_PATH

    out = Path(out)
    if out.is_dir():
        # before the name's test (an outside judge: -o RUN_FOLDER, as train's --out, was said
        # to be "named like a volume file": io.volume_format takes a folder as a DICOM series)
        raise IsADirectoryError(f"output {out} is a folder; give the model file to write "
                                f"(e.g. {out / 'tuned.pt'})")
    if volume_format(out) is not None:
        raise ValueError(f"output {out} is named like a volume file; tune writes a model file "
                         "(e.g. tuned.pt)")
    if same_file(out, DEFAULT_MODEL_PATH) or (
            out.expanduser().resolve().parent == DEFAULT_MODEL_PATH.parent.resolve()):
        raise ValueError(f"output {out} is in the installed package ({DEFAULT_MODEL_PATH.parent}),"
                         " which tune never writes into; write the tuned copy elsewhere and "
                         "give it to segment --model")
    if out.is_symlink():
        # written through (the file it points to), as the volume writers do, and refused as
        # they refuse it (an outside judge: a link pointing into a folder that did not exist
        # made that folder, in another place, with the model in it; a link to a volume file
        # was replaced by a model file with --overwrite)
        target = Path(os.path.realpath(out))
        if not target.parent.is_dir():
            raise FileNotFoundError(f"output {out} is a symbolic link to {target}, in a folder "
                                    "that does not exist; write to another name, or remove "
                                    "the link first")
        if volume_format(target) is not None:
            raise ValueError(f"output {out} is a symbolic link to {target}, a volume file; "
                             "tune writes a model file: write to another name, or remove "
                             "the link first")
    _refuse_unwritable_folder(out)
    if same_file(out, model_path) and not overwrite:
        raise FileExistsError(f"output {out} is the model file being tuned; choose another "
                              "name, or pass --overwrite to replace its thresholds in place")
    if out.exists() and not overwrite:
        raise FileExistsError(f"output {out} exists; pass --overwrite to replace it")
    if out.is_file() and not same_file(out, model_path):
        # --overwrite replaces a model file only (an outside judge: -o RUN/last.pt --overwrite
        # replaced a run's training checkpoint with a model, and 'train --resume' then failed)
        from napari_tubular.models import ModelFormatError
        from napari_tubular.models.serialization import _read_payload

        try:
            _read_payload(out)
        except ModelFormatError as exc:
            raise FileExistsError(f"output {out} exists and is not a model file that --overwrite "
                                  f"may replace ({exc}); write to another name, or remove it "
                                  "first") from None
    return out


def tune_model_file(model, out, val_data: Sequence[str], *, val_cases: int | None = None,
                    seed: int | None = None, device: str = "auto", amp: bool = True,
                    overwrite: bool = False, progress: ProgressFn | None = None,
                    cancel: Callable[[], bool] | None = None) -> dict | None:
    """Tune ``model``'s refinement thresholds on validation volumes and write a copy of the
    model file with them to ``out``.

    The tuning is ``train``'s (:func:`~napari_tubular.training.tuning.tune_model`: the network
    once per volume at its own grid, the grid of ``T_p`` / ``T_r`` with the fallback pair and
    the model's own, then the confidence filter's level at the chosen pair); the copy holds the
    new record in ``metrics.refine`` (``source`` :data:`TUNE_SOURCE`, ``previous``: the
    thresholds it replaces, ``validation``: what it was tuned on) and everything else of the
    file as it was, the weights and their checksum included. Nothing is written when
    cancelled; the file is written whole or not at all.

    Args:
        model: a model file (or ``"default"``: the installed model, whose copy goes to
            ``out``; the installed file is never written).
        out: the model file to write; never the installed default, nor ``model`` itself or
            another existing file without ``overwrite``.
        val_data, val_cases, seed: see :func:`validation_volumes`.
        device: "auto", "cpu", "cuda", "cuda:N"; ``amp``: bfloat16 autocast on CUDA.
        progress: ``progress(i, n, name)`` as validation volume ``i`` of ``n`` is reached.
        cancel: ``cancel() -> bool``, asked within the network and the refinements.

    Returns:
        ``{"path", "refine", "previous", "previous_thresholds", "previous_min_confidence"}``
        (the new record, the old one or None, the pair ``(T_p, T_r)`` and the confidence
        filter's level ``segment`` used for the model before: None for a model without tuned
        thresholds, :func:`~napari_tubular.inference.recommended_thresholds`,
        :func:`~napari_tubular.inference.tuned_min_confidence`), or None when cancelled.
    """
    from napari_tubular.models import (
        load_model,
        read_model_file,
        resolve_device,
        resolve_model_path,
        write_model_copy,
    )
    from napari_tubular.models.serialization import _checksum

    from .tuning import tune_model

    model_path = resolve_model_path(model)
    out = check_output(model_path, out, overwrite)
    dev = resolve_device(device)
    payload = read_model_file(model_path)  # what is written back, read once
    meta = payload["meta"]
    volumes = validation_volumes(val_data, meta, val_cases=val_cases, seed=seed)
    if cancel is not None and cancel():  # stopped while the pairs were checked
        return None
    net, loaded = load_model(model_path, dev)
    if _checksum(net.state_dict()) != payload["checksum"]:
        raise RuntimeError(f"{model_path} changed while it was read (a run writing it?); "
                           "run tune again when it is written")
    previous = (meta.get("metrics") or {}).get("refine")
    previous = previous if isinstance(previous, dict) else None
    from napari_tubular.inference import (
        has_tuned_thresholds,
        recommended_thresholds,
        tuned_min_confidence,
    )

    initial = before = None
    if has_tuned_thresholds(meta):
        # the pair and the level segment used for the model, kept on a tie: a hand-edited
        # record's missing T_r (or T_p) is the fallback's, as segment reads it (an outside
        # judge: a record with tp alone was said to be "not tuned (the fallback ...)", and the
        # model's own T_p was not among the pairs kept on a tie)
        before = recommended_thresholds(meta)
        initial = {"tp": before[0], "tr": before[1],
                   "min_confidence": tuned_min_confidence(meta),
                   "inherited_from": "the model file before tune"}

    def each():
        for i, v in enumerate(volumes):
            if progress:
                progress(i + 1, len(volumes), v["name"])
            yield v["load"]()

    steps = _training(meta).get("steps")
    record = tune_model((net, loaded), each(), device=dev, amp=amp and dev.startswith("cuda"),
                        cancel=cancel, initial=initial,
                        weights_step=steps if isinstance(steps, int) else None,
                        source=TUNE_SOURCE)
    if record is None or (cancel is not None and cancel()):
        return None
    from napari_tubular import __version__

    record["validation"] = [v["name"] for v in volumes]
    record["tuned_by"] = f"napari-tubular {__version__} tune"
    record["previous"] = ({k: previous[k] for k in ("tp", "tr", "min_confidence", "score",
                                                    "source") if k in previous}
                          if previous else None)
    new_meta = {**meta, "metrics": {**(meta.get("metrics") or {}), "refine": record}}
    write_model_copy(payload, out, new_meta, overwrite=overwrite)
    return {"path": out, "refine": record, "previous": previous,
            "previous_thresholds": before,
            "previous_min_confidence": tuned_min_confidence(meta)}
