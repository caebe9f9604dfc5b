"""The training loop: :func:`train`.

One optimiser step = one batch of patches sampled from the case pool (foreground oversampling),
augmented on the device, through the model, the configured loss, AdamW. Every ``val_every``
steps the main process segments the validation volumes whole (sliding window) and computes Dice,
clDice, Betti errors and HD95 with :func:`napari_tubular.topology.compute_metrics`; the best model
(by ``(dice + cldice) / 2``) is written with :func:`napari_tubular.models.save_model`.

Files in the run folder: ``config.json``, ``log.csv`` and ``log.json`` (one row per logged step,
validation columns filled on validation steps), ``curves.png``, ``last.pt`` (full checkpoint for
``resume``), ``best.pt`` (best validation) and ``model.pt`` (final weights), the latter two model
files with their meta (normalisation, spacing, K, patch size, training description, metrics).
"""

from __future__ import annotations

import csv
import fnmatch
import itertools
import json
import math
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from . import ddp
from .config import TRAIN_SEED_BASE, VAL_SEED_BASE, TrainConfig  # noqa: F401 (re-exported)
from .data import (
    FixedPool,
    PreparedCase,
    SyntheticPool,
    augment_batch,
    find_pairs,
    load_pair,
    make_synthetic_case,
    make_tube_val_cases,
    sample_batch,
)

ProgressFn = Callable[[int, int, str], None]

DEFAULT_NORMALIZATION = {"kind": "window", "low": -200.0, "high": 600.0}
"""Normalisation used when the config gives none (CT-like data, as the synthetic generator's)."""

SCALE_HEAD_PREFIX = "scale_head."  # the DDT scale head's last layer (re-initialised when K changes)

LOG_COLUMNS = [
    "step", "time_s", "lr", "loss", "loss_main", "loss_cls", "loss_dis", "loss_cldice",
    "loss_region", "loss_boundary", "boundary_alpha", "loss_ds", "cldice_weight", "cases_seen",
    "val_dice", "val_cldice", "val_b0_error", "val_b1_error", "val_hd95_mm", "val_tube_dice",
    "val_score",
]


class Cancelled(RuntimeError):
    """Raised by :func:`train` when ``cancel()`` returned True (after saving ``last.pt``)."""


class TrainingDiverged(RuntimeError):
    """Raised by :func:`train` when a step's loss or gradient is not finite (NaN / inf): the
    message names the step, the loss terms that are not finite and what to try.

    Attributes:
        details: the keyword arguments of :func:`divergence_message` that made the message, so
            that a caller with other controls than the command line's options can say it with
            its own ``hints`` (the napari panel: an outside judge read "--lr", "--no-amp" and
            "--resume" in a panel that has none of them); empty when not known.
    """

    def __init__(self, message: str = "", details: dict | None = None):
        super().__init__(message)
        self.details = dict(details or {})


#: how :func:`divergence_message` names what to try, for the command line (``{lr}``: the
#: configured learning rate; ``{now}``: the rate at the step; ``{last}``: the checkpoint file)
CLI_DIVERGENCE_HINTS = {
    "lr": "lower the learning rate (--lr {lr:g}; {now:.3g} at this step)",
    "amp": "disable mixed precision (--no-amp)",
    "resume": "{last} holds the weights of step {step}: continue with --resume and a lower --lr",
    "no_checkpoint": "no checkpoint was written yet (nothing to resume)",
}


def _output_tensors(outputs) -> list:
    """The tensors of a network's output dict (``seg``, ``scale``, the ``ds`` heads)."""
    found = []
    for value in (outputs.values() if isinstance(outputs, dict) else [outputs]):
        if isinstance(value, (list, tuple)):
            found.extend(v for v in value if hasattr(v, "detach"))
        elif hasattr(value, "detach"):
            found.append(value)
    return found


def divergence_message(step: int, config: TrainConfig, loss: float, parts: dict, *, lr: float,
                       amp: bool, input_finite: bool = True, output_finite: bool = True,
                       gradient: float | None = None, checkpoint_step: int | None = None,
                       out: Path | None = None, hints: dict | None = None) -> str:
    """What :class:`TrainingDiverged` says (an outside judge: NaN logits stopped a run with
    "training diverged at step 2 (loss nan); lower --lr", one step early and naming neither
    the loss term nor the data or mixed precision; a non-finite gradient was applied and made
    every weight NaN).

    ``hints``: how to name the learning rate, mixed precision and a resume (the keys of
    :data:`CLI_DIVERGENCE_HINTS`, which the missing ones come from): the command line's
    options by default."""
    names = {**CLI_DIVERGENCE_HINTS, **(hints or {})}
    bad = [f"{k} {v:g}" for k, v in parts.items()
           if isinstance(v, float) and k.startswith("loss") and not math.isfinite(v)]
    if gradient is not None:
        what = (f"the gradient is not finite (norm {gradient:g}; loss {loss:.4g}): the step "
                "was not applied")
    elif math.isfinite(loss):  # under DDP: another process's loss
        what = "the loss is not finite in another process"
    else:
        what = f"the loss is not finite ({loss:g}"
        what += f"; term(s) {', '.join(bad)})" if bad else ")"
    if not input_finite:
        cause = "; the input patch holds NaN or infinite intensities"
    elif not output_finite:
        cause = "; the network's output (logits) is already not finite"
    else:
        cause = ""
    hints = [names["lr"].format(lr=config.lr, now=lr),
             "check the data (NaN / infinite voxels, labels other than 0 / 1, the "
             "normalization)"]
    if amp:
        hints.append(names["amp"])
    if checkpoint_step is not None and out is not None:
        kept = names["resume"].format(last=out / "last.pt", step=checkpoint_step,
                                      lr=config.lr, now=lr)
    else:
        kept = names["no_checkpoint"]
    return (f"training diverged at step {step} of {config.steps}: {what}{cause}. Try to "
            f"{', '.join(hints[:-1])} or {hints[-1]}; {kept}")


#: the message of a run cancelled while it prepared its data (or before its first step)
NOT_STARTED = "interrupted before the first step; nothing saved"


# --------------------------------------------------------------------------- helpers
def resolve_normalization(config: TrainConfig) -> dict:
    from napari_tubular.models import validate_normalization

    return validate_normalization(config.normalization or DEFAULT_NORMALIZATION)


def model_arch(config: TrainConfig) -> dict:
    """Constructor arguments of the network (``num_scales`` from ``K``)."""
    arch = dict(config.model)
    if "num_scales" in arch and arch["num_scales"] != config.K + 1:
        raise ValueError(f"model.num_scales ({arch['num_scales']}) must be K + 1 = {config.K + 1}")
    arch["num_scales"] = config.K + 1
    return arch


#: between checkpoints the logs are rewritten at most this often (seconds), after the first
#: 20 logged steps
LOG_WRITE_S = 15.0

#: the files a run writes (and ``overwrite`` deletes first), besides its snapshots
_RUN_FILES = ("log.csv", "log.json", "curves.png", "last.pt", "best.pt", "model.pt")
_SNAPSHOTS = "step_*.pt"


def run_folder_in_use(config: TrainConfig) -> bool:
    """True when ``config.out`` holds files that a new run (no ``overwrite``, no ``resume``)
    must not replace: :func:`train` refuses it (the viewer's Fine-tune panel says so in its
    own words)."""
    out = Path(config.out)
    return (not config.resume and not config.overwrite and out.is_dir()
            and any(out.iterdir()))


def init_model_would_be_replaced(config) -> bool:
    """Whether a new run with ``overwrite`` would delete the model file it starts from (one of
    the run files of its own ``out`` folder: ``model.pt`` of a stopped run, say). Its caller
    says it in its own words (the napari panel names its checkbox, not --overwrite)."""
    init, out = getattr(config, "init_model", None), Path(config.out)
    return bool(getattr(config, "overwrite", False) and not getattr(config, "resume", False)
                and init
                and init != "default" and out.is_dir()
                and Path(init).expanduser().resolve().parent == out.resolve()
                and (Path(init).name in _RUN_FILES
                     or fnmatch.fnmatch(Path(init).name, _SNAPSHOTS)))


def _prepare_run_dir(config: TrainConfig, is_main: bool) -> tuple[Path, list[Path]]:
    """The run folder, checked, and the folders this call created (deepest first), for
    :func:`_remove_created` (a previous run's files go at the first step:
    :func:`_clear_previous_run`)."""
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"out: {out} exists and is not a folder")
    if config.resume:
        if not (out / "last.pt").is_file():
            raise FileNotFoundError(f"resume: no checkpoint {out / 'last.pt'} to resume from")
        return out, []
    if run_folder_in_use(config):
        raise FileExistsError(
            f"out: run folder {out} is not empty; pass --overwrite to replace its files or "
            "--resume to continue its training"
        )
    init = config.init_model
    if init_model_would_be_replaced(config):
        # an audit: --overwrite emptied the folder, then the model to start from was gone
        raise ValueError(f"init_model {init} is one of the files --overwrite would delete in "
                         f"{out}; copy it elsewhere first, or choose another --out")
    created = []
    if is_main:
        created = [d for d in (out, *out.absolute().parents) if not d.exists()]
        out.mkdir(parents=True, exist_ok=True)
    return out, created


def _clear_previous_run(out: Path) -> None:
    """``--overwrite``: remove a previous run's files from ``out``, once the new run's data is
    ready and its first step begins (an audit: they were removed before the data was read, so
    a run that then failed on a bad label left the folder without its models)."""
    for name in _RUN_FILES:
        if (out / name).exists():
            (out / name).unlink()
    for snap in out.glob(_SNAPSHOTS):
        snap.unlink()


def _remove_created(created: list[Path]) -> None:
    """Remove the folders a run created (deepest first) as long as they are empty: a run that
    fails or is cancelled before writing anything leaves no empty run folder behind (an audit:
    ``--depth 0`` or Ctrl-C while the data was generated did). Folders that hold anything, and
    folders that were there before the run, are kept."""
    for folder in created:
        try:
            folder.rmdir()
        except OSError:  # not empty (or gone, or not ours to remove): stop there
            return


def lr_at(config: TrainConfig, frac: float, step: int) -> float:
    """Linear warm-up over the first min(100, 3% of steps) steps, then poly decay (power 0.9)."""
    warm = max(1, min(100, int(0.03 * config.steps)))
    w = min(1.0, (step + 1) / warm)
    return config.lr * w * max(0.0, 1.0 - min(frac, 1.0)) ** 0.9 + 1e-7


def cldice_weight_at(config: TrainConfig, frac: float, step: int) -> float:
    """clDice weight: 0 during warm-up, then a linear ramp to ``cldice_weight``."""
    if config.loss not in ("ddt+cldice", "dice+cldice") or config.cldice_weight <= 0:
        return 0.0
    if config.cldice_warmup_steps is not None:
        start = config.cldice_warmup_steps / config.steps
        pos = step / config.steps
        pos = max(pos, frac) if config.max_minutes else pos
    else:
        start, pos = config.cldice_warmup_fraction, frac
    if pos < start:
        return 0.0
    ramp = config.cldice_ramp_fraction
    if ramp <= 0:
        return config.cldice_weight
    return config.cldice_weight * min(1.0, (pos - start) / ramp)


class LossFn:
    """The configured training loss.

    ``__call__(out, label, scale, cldice_w, phi=None, frac=0.)`` returns ``(total, parts)``
    where ``out`` is the model's output dict, ``label`` (B,1,Z,Y,X) float 0/1, ``scale``
    (B,1,Z,Y,X) float classes, ``cldice_w`` the current clDice weight ``a`` and ``parts`` a dict
    of floats for the log.

    - ``ddt+cldice``: ``L_cls + L_dis + (1 - a) softDice + a softclDice`` on the segmentation
      head (the Dice-clDice loss of the clDice paper, with ``a`` ramped in after warm-up). The
      soft Dice term is there from the first step: DDT's class-balanced ``L_cls`` alone weights
      the rare vessel voxels about 100 times more than background, which inflates the
      probability map around every vessel (threshold 0.5 over-segments; measured here:
      validation Dice 0.11 after 300 CPU steps); Dice keeps it calibrated to the mask.
    - ``ddt``: ``L_cls + L_dis`` (the paper's objective alone).
    - ``dice+ce``: ``softDice + BCE`` (seg head only); ``dice+cldice``: ``(1 - a) softDice +
      a softclDice + BCE``.
    - ``boundary``: ``alpha GDL + (1 - alpha) L_B``, alpha = max(0.01, 1 - progress).

    Any loss, with a model that has deep-supervision heads (``out["ds"]``) and
    ``ds_weight > 0``: ``+ ds_weight * DeepSupervisionLoss`` on the multi-label pyramid targets
    (:func:`deep_supervision_targets`).
    """

    def __init__(self, config: TrainConfig) -> None:
        import torch

        from napari_tubular import losses

        self.kind = config.loss
        self.cldice = losses.SoftclDiceLoss(iters=config.cldice_iters)
        self.dice = losses.SoftDiceLoss(batch=True)
        self.bce = torch.nn.BCEWithLogitsLoss()
        if self.kind in ("ddt+cldice", "ddt"):
            self.ddt = losses.DDTLoss(K=config.K)
        elif self.kind == "boundary":
            self.boundary = losses.BoundaryLoss()
            self.region = losses.GeneralizedDiceLoss()
            # the paper's linear schedule, its unit the whole run: alpha = max(0.01, 1 - frac)
            self.alpha_schedule = losses.BoundaryAlphaScheduler(start=1.0, decrement=1.0,
                                                                floor=0.01)
        self.ds_weight = float(config.ds_weight)
        self.K = int(config.K)
        self.ds = losses.DeepSupervisionLoss()

    def __call__(self, out: dict, label, scale, cldice_w: float, phi=None, frac: float = 0.0):
        from napari_tubular.losses import allow_non_finite

        # a non-finite output gives a non-finite loss, which the loop stops on with the
        # terms, the output and what to try (the losses alone would refuse it, naming less)
        with allow_non_finite():
            return self._terms(out, label, scale, cldice_w, phi, frac)

    def _terms(self, out: dict, label, scale, cldice_w: float, phi, frac: float):
        seg = out["seg"].float()
        parts: dict[str, float] = {}
        if self.kind in ("ddt+cldice", "ddt"):
            # a cache prepared with a larger K holds classes up to that K: round(D) clipped at
            # K is the same as clipping those classes at K
            main = self.ddt(seg, out["scale"].float(), label,
                            scale.long()[:, 0].clamp(max=self.ddt.K))
            parts.update({f"loss_{k}": float(v) for k, v in self.ddt.last_parts.items()
                          if k != "total"})
            if self.kind == "ddt+cldice":
                main = main + (1.0 - cldice_w) * self.dice(seg, label)
        elif self.kind == "boundary":
            self.alpha_schedule.epoch = frac  # the fraction of the run done
            alpha = self.alpha_schedule.alpha
            region, boundary = self.region(seg, label), self.boundary(seg, phi)
            main = alpha * region + (1 - alpha) * boundary
            # the terms apart: the total rises by design as alpha moves the weight from the
            # region term to the boundary term (an audit read the rising curve as divergence)
            parts.update({"loss_region": float(region.detach()),
                          "loss_boundary": float(boundary.detach()), "boundary_alpha": alpha})
        else:
            main = (1.0 - cldice_w) * self.dice(seg, label) + self.bce(seg, label)
        parts["loss_main"] = float(main.detach())
        total = main
        if cldice_w > 0:
            cl = self.cldice(seg, label)
            total = total + cldice_w * cl
            parts["loss_cldice"] = float(cl.detach())
        heads = out.get("ds")
        if heads and self.ds_weight > 0:
            targets = deep_supervision_targets(label, scale, self.K, heads)
            ds = self.ds([h.float() for h in heads], targets)
            total = total + self.ds_weight * ds
            parts["loss_ds"] = float(ds.detach())
        return total, parts


def deep_supervision_targets(label, scale, K: int, heads) -> list:
    """Multi-label targets of the deep-supervision heads (METHODS.md section 6): the label
    max-pooled to each head's size, one channel per head channel. One channel: the vessel mask
    (a coarse voxel is positive when its cell holds vessel). C channels: the scale classes
    ``1..K`` cut into C equal bands (class ``k`` in band ``ceil(k C / K)``), so that a cell
    holding a thin and a thick vessel is positive for both bands; background (class 0, or
    outside the label) in none."""
    import torch

    from napari_tubular.losses import multilabel_pyramid_targets

    C = int(heads[0].shape[1])
    sizes = [tuple(h.shape[2:]) for h in heads]
    if C == 1:
        return multilabel_pyramid_targets((label > 0.5).float(), sizes)
    k = scale[:, 0].round().clamp(0, K).long()
    band = torch.where((k > 0) & (label[:, 0] > 0.5), torch.div(k * C + K - 1, K,
                                                                 rounding_mode="floor"), 0)
    return multilabel_pyramid_targets(band, sizes, num_classes=C + 1)  # k <= K: band <= C


def validate(model, cases: list[PreparedCase], config: TrainConfig, device,
             tubes: list[PreparedCase] | None = None) -> dict[str, float]:
    """Mean Dice, clDice, Betti errors and HD95 of the thresholded (0.5) predictions.

    ``tubes`` (``config.val_tubes``): straight-tube phantoms; their mean Dice is ``tube_dice``
    and enters the score: ``(dice + cldice + tube_dice) / 3`` (else ``(dice + cldice) / 2``).
    """
    from napari_tubular.inference import sliding_window_predict
    from napari_tubular.topology.metrics import compute_metrics, dice_score

    cuda = str(device).startswith("cuda")
    was_training = model.training
    model.eval()

    def _prob(case):
        prob, _, _ = sliding_window_predict(
            case.image, model, tuple(config.patch_size), overlap=0.25,
            batch_size=4 if cuda else 1, device=str(device), amp=bool(config.amp) and cuda)
        return prob.cpu().numpy() if hasattr(prob, "cpu") else np.asarray(prob)

    rows, tube_dice = [], []
    try:
        for case in cases:
            rows.append(compute_metrics(_prob(case) > 0.5, case.label > 0, case.spacing,
                                        measured_lengths=False))
        for case in tubes or []:
            tube_dice.append(dice_score(_prob(case) > 0.5, case.label > 0))
    finally:
        model.train(was_training)
    out = {}
    for key in ("dice", "cldice", "b0_error", "b1_error", "hd95_mm"):
        vals = np.array([np.nan if r.get(key) is None else float(r[key]) for r in rows],
                        dtype=float)
        finite = vals[np.isfinite(vals)]
        out[key] = float(finite.mean()) if finite.size else float("nan")
    if tube_dice:
        out["tube_dice"] = float(np.mean(tube_dice))
        out["score"] = (out["dice"] + out["cldice"] + out["tube_dice"]) / 3
    else:
        out["score"] = (out["dice"] + out["cldice"]) / 2
    return out


def val_seed(config: TrainConfig, i: int) -> int:
    """The seed of synthetic validation volume ``i`` of a run (``VAL_SEED_BASE + 1000 * seed +
    i``): the volumes it validates on and tunes its thresholds on (``napari-tubular tune
    --val-data synthetic`` too, :func:`~.config.validation_seed`)."""
    from .config import validation_seed

    return validation_seed(config.seed, i)


def _load_val_cases(config: TrainConfig, normalization: dict, progress: ProgressFn | None):
    if not config.val_data:
        return []
    if config.val_is_synthetic:
        cases = []
        for i in range(config.val_cases):
            cases.append(make_synthetic_case(
                val_seed(config, i), config.target_spacing, config.K,
                normalization, config.synthetic))
            if progress:
                progress(i + 1, config.val_cases, "preparing validation cases")
        return cases
    pairs = find_pairs(config.val_data, "validation data")
    return [load_pair(i, la, config.target_spacing, config.K, normalization) for i, la in pairs]


def _native_val_volumes(config: TrainConfig):
    """``(image, label, spacing)`` of the validation volumes of :func:`_load_val_cases` at
    their own grids, one at a time (the synthetic ones generated again from their seeds, the
    files read again): what the thresholds are tuned on, as ``segment`` sees a volume."""
    if not config.val_data:
        return
    if config.val_is_synthetic:
        from .data import native_synthetic_case

        for i in range(config.val_cases):
            case = native_synthetic_case(val_seed(config, i), config.synthetic)
            yield case.image, case.mask, case.spacing
        return
    from napari_tubular.io import read_volume

    for image_path, label_path in find_pairs(config.val_data, "validation data"):
        img = read_volume(image_path)
        yield img.data, read_volume(label_path).data, img.spacing


def _make_pool(config: TrainConfig, normalization: dict, dist: ddp.DistInfo, seeds_drawn: int,
               rng: np.random.Generator, progress: ProgressFn | None,
               resume: dict | None = None):
    if config.is_synthetic:
        start = TRAIN_SEED_BASE * (config.seed + 1) + dist.rank * 100_000 + seeds_drawn
        return SyntheticPool(
            itertools.count(start), config.target_spacing, config.K, normalization,
            options=config.synthetic, min_shape=config.patch_size, workers=config.workers,
            rng=rng, progress=progress, with_phi=config.loss == "boundary", resume=resume,
        )
    pairs = find_pairs(config.data)
    cases = []
    for i, (img, lab) in enumerate(pairs):
        cases.append(load_pair(img, lab, config.target_spacing, config.K, normalization,
                               min_shape=config.patch_size, with_phi=config.loss == "boundary"))
        if progress:
            progress(i + 1, len(pairs), "loading training volumes")
    if cases and not any(np.any(c.label) for c in cases):
        raise ValueError(
            f"every training label is empty ({len(cases)} pair(s) in {', '.join(config.data)}): "
            "there is no vessel to learn"
        )
    return FixedPool(cases, rng=rng)


def _json_safe(value):
    """``value`` with non-finite floats as None (JSON ``null``): an audit's strict parser
    rejected the bare ``NaN`` of an empty validation mask's HD95 (``evaluate`` writes null)."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def _write_log(out: Path, rows: list[dict], config: TrainConfig, extra: dict) -> None:
    # both files whole or as they were, like last.pt (an audit: log.csv was rewritten in
    # place, so a run killed, or a reader looking, while it was written saw it cut short)
    tmp_csv = out / "log.csv.tmp"
    with open(tmp_csv, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=LOG_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in LOG_COLUMNS})
    os.replace(tmp_csv, out / "log.csv")
    doc = _json_safe({"config": config.to_dict(), **extra, "rows": rows})
    tmp = out / "log.json.tmp"
    tmp.write_text(json.dumps(doc, indent=1, default=float, allow_nan=False))
    os.replace(tmp, out / "log.json")


def plot_curves(rows: list[dict], path: Path, title: str = "") -> Path | None:
    """Training loss and validation metrics against the step (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    tr = [r for r in rows if r.get("loss") is not None]
    va = [r for r in rows if r.get("val_dice") is not None]
    fig = Figure(figsize=(10, 4), dpi=100)
    ax1, ax2 = fig.subplots(1, 2)
    if tr:
        ax1.plot([r["step"] for r in tr], [r["loss"] for r in tr], label="total")
        ax1.plot([r["step"] for r in tr], [r["loss_main"] for r in tr], label="main", alpha=0.7)
        cl = [r for r in tr if r.get("loss_cldice") is not None]
        if cl:
            ax1.plot([r["step"] for r in cl], [r["loss_cldice"] for r in cl], label="clDice term",
                     alpha=0.7)
        ax1.set_yscale("log")
    ax1.set_xlabel("step")
    ax1.set_title("training loss")
    if tr:
        ax1.legend(loc="upper right", fontsize=8)
    if va:
        s = [r["step"] for r in va]
        ax2.plot(s, [r["val_dice"] for r in va], "o-", label="Dice")
        ax2.plot(s, [r["val_cldice"] for r in va], "s-", label="clDice")
        ax2.set_ylim(0, 1)
        ax3 = ax2.twinx()
        ax3.plot(s, [r["val_b0_error"] for r in va], "^--", color="tab:red", label="b0 error")
        ax3.set_ylabel("Betti-0 error per volume")
        ax3.legend(loc="lower right", fontsize=8)
    ax2.set_xlabel("step")
    ax2.set_title("validation")
    if va:
        ax2.legend(loc="lower left", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format=path.suffix.lstrip(".") or "png")
    os.replace(tmp, path)  # whole or as it was (see _write_log)
    return path


def _unwrap(model):
    return getattr(model, "module", model)


#: the losses that train both heads (the others train the segmentation head only)
_BOTH_HEADS = ("ddt+cldice", "ddt")


def wrap_ddp(model, config: TrainConfig, device: str, local_rank: int = 0):
    """``model`` in DistributedDataParallel (the process group joined already).

    A loss of the segmentation head only (``dice+ce``, ``dice+cldice``, ``boundary``) leaves
    the scale head without a gradient, and so do deep-supervision heads with ``ds_weight`` 0:
    DDP is then told to look for unused parameters, which it otherwise refuses at
    the second step (an audit: ``torchrun ... --loss dice+ce`` failed with "Expected to have
    finished reduction in the prior iteration"). Those parameters stay as they are, as in a
    single process.
    """
    import torch

    unused = (config.loss not in _BOTH_HEADS
              or (bool(getattr(model, "config", {}).get("deep_supervision"))
                  and not config.ds_weight > 0))
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[local_rank] if str(device).startswith("cuda") else None,
        find_unused_parameters=unused)


# --------------------------------------------------------------------------- train
#: the progress message of the validation after the last step
FINAL_VALIDATION_MESSAGE = "validating the final weights"


def train(config: TrainConfig, progress: ProgressFn | None = None,
          cancel: Callable[[], bool] | None = None,
          on_first_step: Callable[[], None] | None = None) -> Path:
    """Train a model as configured and return the path of the best model file.

    Args:
        config: the run's :class:`TrainConfig`.
        progress: ``progress(done, total, message)``, called with the step count (message holds
            loss, speed and ETA) and during data preparation.
        cancel: returns True to stop; ``last.pt`` and ``model.pt`` (the weights so far) are
            saved first, then :class:`Cancelled` raised. It is also asked while the data is
            prepared (after each case): a run cancelled before its first step saves nothing
            and leaves no run folder it created.
        on_first_step: called once when the data is ready and the first step begins (a
            cancellation from then on saves the weights).

    Returns:
        ``out/best.pt`` (best validation score) if validation ran, else ``out/model.pt``.

    Raises:
        FileExistsError: ``out`` is not empty and neither ``resume`` nor ``overwrite`` is set.
        FileNotFoundError / ValueError: missing data, unpaired volumes, invalid options; a
            resume with nothing left to do (``steps`` not above the checkpoint's step, or the
            ``max_minutes`` budget spent: it counts the training time of all sessions).
        Cancelled: ``cancel()`` returned True.

    Under ``torchrun`` (or with ``config.ddp``) each process trains on its own batches with
    DistributedDataParallel (gloo on CPU, nccl on CUDA); rank 0 validates, logs and saves.
    """
    import torch

    from napari_tubular.models import build_model, resolve_device, save_model

    config.validate()
    device = resolve_device(config.device)
    dtype = torch.device(device).type
    dist = ddp.setup(config.ddp, dtype)
    if dist.enabled and dtype == "cuda":
        device = f"cuda:{dist.local_rank}"
    try:
        out, created = _prepare_run_dir(config, dist.is_main)
        try:
            return _train(config, progress, cancel, on_first_step, device, dist, build_model,
                          save_model, out)
        except BaseException:
            if dist.is_main:
                _remove_created(created)
            raise
    finally:
        ddp.cleanup(dist)


def _train(config, progress, cancel, on_first_step, device, dist, build_model, save_model,
           out: Path) -> Path:
    import torch

    is_main = dist.is_main
    report = progress if is_main else None

    not_started = NOT_STARTED + (f" ({out / 'last.pt'} is as it was)" if config.resume else "")

    def check_cancel() -> None:
        if cancel and cancel():
            raise Cancelled(not_started)

    def prepare_progress(done: int, total: int, message: str) -> None:
        # a Ctrl-C while the data is prepared stops after the current case (an audit: it
        # announced a save, generated every case and ended with "nothing was saved")
        check_cancel()
        if report:
            report(done, total, message)

    ddp.barrier(dist)
    if config.num_threads:
        torch.set_num_threads(int(config.num_threads))
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True  # fixed patch size
    normalization = resolve_normalization(config)
    arch = model_arch(config)
    torch.manual_seed(config.seed)
    init_state, inherited, ck = None, {}, None
    if config.resume:
        ck = _read_checkpoint(out / "last.pt")
        _check_resume(ck, config)
        # a fine-tuning run's network, normalisation and inherited T_p / T_r and calibration
        # are its initial model's, not the config's defaults (an audit: a resumed run rebuilt
        # the default network, or trained on and saved the default window)
        arch = dict(ck.get("arch") or arch)
        if config.init_model:
            _record_arch(config, arch)
        normalization = dict(ck.get("normalization") or normalization)
        inherited = dict(ck.get("inherited") or {})
        if config.init_model and "arch" not in ck:  # a checkpoint of an older version
            arch, normalization, _state, inherited = _init_from_model(config)
    elif config.init_model:
        arch, normalization, init_state, inherited = _init_from_model(config)
    _check_patch_for_depth(config.patch_size, int(arch.get("depth", 4)))
    model = build_model(arch).to(device)
    if init_state is not None:
        missing, unexpected = model.load_state_dict(init_state, strict=False)
        if unexpected or any(not k.startswith(SCALE_HEAD_PREFIX) for k in missing):
            raise ValueError(f"init_model: weights do not fit the architecture (missing "
                             f"{missing}, unexpected {unexpected})")
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    step, rows, best, elapsed0, seeds_drawn = 0, [], -math.inf, 0.0, 0
    last_val_metrics: dict = {}
    rng = np.random.default_rng([config.seed, dist.rank])
    gen = torch.Generator().manual_seed(config.seed * 1000 + dist.rank)
    if ck is not None:
        model.load_state_dict(ck["model_state"])
        opt.load_state_dict(ck["optimizer"])
        step, rows, best = int(ck["step"]), list(ck["rows"]), float(ck["best_score"])
        # best.pt is written at each validation, last.pt only at checkpoints: after a kill
        # between them best.pt holds a better score than last.pt knew (an audit: the resumed
        # run replaced it with a worse one)
        best = max(best, _saved_best_score(out / "best.pt"))
        elapsed0, seeds_drawn = float(ck["elapsed_s"]), int(ck.get("seeds_drawn", 0))
        # the last validation's metrics go on into model.pt (an audit: resuming a finished
        # run rewrote model.pt with no metrics at all)
        last_val_metrics = _last_val_metrics(rows)
        rng = np.random.default_rng([config.seed, dist.rank, step])
        gen.manual_seed(config.seed * 1000 + dist.rank + 7 * step)
        _restore_random_state(ck, config, dist, rng, gen)
    net = wrap_ddp(model, config, device, dist.local_rank) if dist.enabled else model
    loss_fn = LossFn(config)
    use_amp = bool(config.amp) and device.startswith("cuda")
    check_cancel()
    val_cases = _load_val_cases(config, normalization, prepare_progress) if is_main else []
    check_cancel()
    has_val = bool(config.val_data) and (config.val_cases > 0 or not config.val_is_synthetic)
    if config.val_tubes and not has_val and is_main:
        # an audit: --val-tubes with --val-data none generated the phantoms and never measured
        # them, without a word
        warnings.warn("val_tubes: this run does not validate (no validation data, or "
                      "val_cases 0 with synthetic validation), so the tube phantoms are not "
                      "measured either; give validation data to validate on them",
                      UserWarning, stacklevel=2)
    val_tubes = (make_tube_val_cases(config.target_spacing, config.K, normalization)
                 if is_main and config.val_tubes and has_val else [])
    check_cancel()
    pool_resume = None
    if ck is not None and _continues_random_state(ck, config, dist):
        pool_resume = ck.get("pool_state")  # the synthetic cases it held (SyntheticPool)
    pool = _make_pool(config, normalization, dist, seeds_drawn, rng, prepare_progress,
                      pool_resume)
    pool.seeds_drawn_before = seeds_drawn
    if is_main:  # after the data loaded: a run that fails to start leaves its folder empty
        config.save(out / "config.json")
    description = config.description or (
        f"napari-tubular train, loss {config.loss}, data {', '.join(config.data)}")
    meta_base = {
        "K": config.K, "spacing": list(config.target_spacing),
        "normalization": normalization, "patch_size": list(config.patch_size),
    }

    if inherited.get("radius_calibration"):
        meta_base["radius_calibration"] = inherited["radius_calibration"]

    def meta(metrics: dict) -> dict:
        if inherited.get("refine") and "refine" not in metrics:
            # the initial model's tuned T_p / T_r, until the new weights are tuned themselves
            metrics = {**metrics, "refine": inherited["refine"]}
        # the training loss of the last logged step (an audit: a run without validation wrote
        # its model files with "metrics": {})
        metrics = {**metrics, **_last_train_loss(rows)}
        return {**meta_base, "arch": _unwrap(net).config, "metrics": metrics, "training": {
            "description": description, "loss": config.loss, "steps": step,
            "time_s": round(elapsed0 + time.perf_counter() - t_loop, 1),
            "cases_seen": _cases_seen(pool),
            "data": list(config.data), "batch_size": config.batch_size,
            "world_size": dist.world, "device": device, "amp": use_amp,
            "config": config.to_dict(),
        }}

    checkpointed = [step if ck is not None else None]  # the step last.pt holds

    def diverged(loss_value: float, parts: dict, x, outputs, gradient=None):
        """Stop on a non-finite loss or gradient (training cannot go on from NaN), with the
        log written and a message that says what went wrong and what to try."""
        if is_main:
            if acc.get("loss"):  # the steps since the last logged one, as on a cancel
                rows.append(_row(step, elapsed0 + time.perf_counter() - t_loop,
                                 opt.param_groups[0]["lr"], acc, pool))
                acc.clear()
            if rows:
                _write_log(out, rows, config, {"best_score": best, "step": step, **log_extra})
        details = dict(
            step=step + 1, config=config, loss=loss_value, parts=parts,
            lr=opt.param_groups[0]["lr"], amp=use_amp,
            input_finite=bool(torch.isfinite(x).all()),
            output_finite=all(bool(torch.isfinite(t.detach()).all()) for t in
                              _output_tensors(outputs)),
            gradient=gradient, checkpoint_step=checkpointed[0], out=out)
        raise TrainingDiverged(divergence_message(**details), details)

    def save_checkpoint() -> None:
        if not is_main:
            return
        checkpointed[0] = step
        state = {
            "config": config.to_dict(), "model_state": _unwrap(net).state_dict(),
            "optimizer": opt.state_dict(), "step": step, "rows": rows, "best_score": best,
            "arch": _unwrap(net).config, "normalization": normalization, "inherited": inherited,
            "elapsed_s": elapsed0 + time.perf_counter() - t_loop,
            "seeds_drawn": int(getattr(pool, "generated", 0)) + seeds_drawn,
            "pool_state": pool.state() if hasattr(pool, "state") else None,
            # the folders themselves, for a resume from another working directory or with
            # the folders spelled otherwise (_check_resume)
            "data_folders": _data_folders(config.data),
            # the random streams of the patch sampling and the augmentation, so that a resume
            # goes on where they stopped (_restore_random_state)
            "random_state": {"numpy": rng.bit_generator.state, "torch": gen.get_state(),
                             "torch_global": torch.get_rng_state(), "seed": config.seed,
                             "world_size": dist.world},
            # the working directory that the relative paths of config.json are taken from (a
            # resume from elsewhere rebases them: checkpoint_workdir)
            "workdir": os.getcwd(),
        }
        tmp = out / "last.pt.tmp"
        torch.save(state, tmp)
        os.replace(tmp, out / "last.pt")
        _write_log(out, rows, config, {"best_score": best, "step": step, **log_extra})
        plot_curves(rows, out / "curves.png", title=f"{config.loss} ({out.name})")

    t_loop = time.perf_counter()
    last_log_write = -math.inf
    best_step = None  # the step whose weights this session wrote to best.pt
    log_extra: dict = {}  # what log.json records besides the rows (the thresholds chosen)
    acc: dict[str, list] = {}
    model.train()
    start_step, budget_stop = step, False
    try:
        while True:
            elapsed = elapsed0 + time.perf_counter() - t_loop
            frac = step / config.steps
            if config.max_minutes:
                frac = max(frac, elapsed / (60 * config.max_minutes))
            stop = step >= config.steps or frac >= 1.0
            cancelled = bool(cancel and cancel())
            stop, cancelled = ddp.any_flag(stop, dist, device), ddp.any_flag(cancelled, dist, device)
            if cancelled and step == start_step:
                # before the first step (Ctrl-C while the data loaded): no weights were trained,
                # so none are written (an audit: an untrained model.pt and a last.pt of step 0);
                # the handler below removes the new run's config.json, as for any failure there
                raise Cancelled(not_started)
            if step == start_step and is_main and not config.resume:
                _clear_previous_run(out)
            if step == start_step and on_first_step:
                on_first_step()
            if cancelled:
                if is_main and acc.get("loss"):
                    # the steps since the last logged one get their row, as at the end of a
                    # run (an audit: cancelled at step 16 with log_every 10, the log ended at
                    # step 10 and the losses of steps 11-16 were lost for the resumed run too)
                    rows.append(_row(step, elapsed0 + time.perf_counter() - t_loop,
                                     opt.param_groups[0]["lr"], acc, pool))  # the last step's
                    acc = {}
                save_checkpoint()
                if is_main:  # the weights so far, usable as a model (segment --model)
                    save_model(out / "model.pt", _unwrap(net), meta(last_val_metrics))
                raise Cancelled(f"training cancelled at step {step}: the weights so far are in "
                                f"{out / 'model.pt'}; resume with --resume")
            if stop:
                budget_stop = step < config.steps
                break
            lr = lr_at(config, frac, step)
            for g in opt.param_groups:
                g["lr"] = lr
            cw = cldice_weight_at(config, frac, step)
            img, lab, sc, ph = sample_batch(pool, config.batch_size, config.patch_size, rng,
                                            config.fg_fraction)
            x = torch.from_numpy(img).to(device, non_blocking=True)
            y = torch.from_numpy(lab).to(device).float()
            s = torch.from_numpy(sc).to(device).float()
            phi = torch.from_numpy(ph).to(device) if ph is not None else None
            if config.augment:
                x, y, s, phi = augment_batch(x, y, s, gen, K=config.K, phi=phi,
                                             rotate_deg=config.rotate_deg,
                                             scale_range=config.scale_range)
            with torch.autocast(device_type="cuda" if use_amp else "cpu", dtype=torch.bfloat16,
                                enabled=use_amp):
                outputs = net(x)
            loss, parts = loss_fn(outputs, y, s, cw, phi=phi, frac=frac)
            # on every rank together (one rank alone raising left the others waiting in the
            # gradient all-reduce)
            if ddp.any_flag(not bool(torch.isfinite(loss.detach())), dist, device):
                diverged(float(loss.detach()), parts, x, outputs)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(net.parameters(), 12.0)
            if not torch.isfinite(grad_norm):
                # the step is not applied: a non-finite gradient, clipped, turns every weight
                # into NaN (and the next checkpoint would keep them)
                diverged(float(loss.detach()), parts, x, outputs, gradient=float(grad_norm))
            opt.step()
            step += 1
            pool.refresh()
            acc.setdefault("loss", []).append(float(loss.detach()))
            for k, v in parts.items():
                acc.setdefault(k, []).append(v)
            acc.setdefault("cldice_weight", []).append(cw)
            do_log = config.log_every and step % config.log_every == 0
            do_val = has_val and bool(config.val_every) and step % config.val_every == 0
            if not is_main:
                acc = {}  # the other ranks log nothing (an audit: their list grew all run long)
            if is_main and (do_log or do_val):
                row = _row(step, elapsed0 + time.perf_counter() - t_loop, lr, acc, pool)
                acc = {}
                rows.append(row)  # before best.pt is written: its meta names this step's loss
                if do_val:
                    last_val_metrics = validate(_unwrap(net), val_cases, config, device, val_tubes)
                    row.update({f"val_{k}": v for k, v in last_val_metrics.items()})
                    if last_val_metrics["score"] > best:
                        best, best_step = last_val_metrics["score"], step
                        save_model(out / "best.pt", _unwrap(net), meta(last_val_metrics))
                # the logs between checkpoints too (an audit: a run watched through log.csv
                # showed nothing before step 100, and one killed between checkpoints left no
                # log at all): every logged step at first, then at most every LOG_WRITE_S
                # seconds (a review: rewriting them at every step of a long run costs hours)
                now = time.perf_counter()
                if len(rows) <= 20 or now - last_log_write >= LOG_WRITE_S:
                    _write_log(out, rows, config, {"best_score": best, "step": step})
                    last_log_write = now
            if config.checkpoint_every and step % config.checkpoint_every == 0:
                save_checkpoint()
            if is_main and config.snapshot_every and step % config.snapshot_every == 0:
                save_model(out / f"step_{step:06d}.pt", _unwrap(net), meta(last_val_metrics))
            if do_val:
                ddp.barrier(dist)
            if report and (step == 1 or step % max(1, config.log_every) == 0):
                report(step, config.steps, _progress_message(
                    step, config, elapsed0 + time.perf_counter() - t_loop, rows, start_step))
        # final validation + files
        if is_main:
            if has_val and (not rows or rows[-1].get("val_dice") is None
                              or rows[-1]["step"] != step):
                if rows and rows[-1]["step"] == step:
                    # the last step was logged but not validated: its row gets the validation
                    # (an audit: two rows for one step, the second without a loss)
                    row = rows.pop()
                else:
                    row = _row(step, elapsed0 + time.perf_counter() - t_loop,
                               lr_at(config, 1.0, step), acc, pool)
                rows.append(row)
                if report:  # the CLI's Ctrl-C says what it stops from here on (an outside judge)
                    report(1, 1, FINAL_VALIDATION_MESSAGE)
                last_val_metrics = validate(_unwrap(net), val_cases, config, device, val_tubes)
                row.update({f"val_{k}": v for k, v in last_val_metrics.items()})
                if last_val_metrics["score"] > best:
                    best, best_step = last_val_metrics["score"], step
                    save_model(out / "best.pt", _unwrap(net), meta(last_val_metrics))
            elif acc.get("loss"):
                # steps after the last logged one get a final row (an audit: a 25-step run
                # logging every 10 ended at step 20, a 3-step run had an empty log and plot)
                rows.append(_row(step, elapsed0 + time.perf_counter() - t_loop,
                                 lr_at(config, 1.0, step), acc, pool))
            # T_p / T_r tuned on the validation volumes (the network's outputs once, the
            # refinement over the grid), stored where segment reads them (an outside review:
            # a model of train always fell back to 0.9 / 0.5)
            final_metrics = dict(last_val_metrics)
            # an outside judge: an error there (out of memory on a large validation volume)
            # ended the run after its last step without model.pt, last.pt or the logs; the
            # tuning is skipped with a warning instead, and the files are written
            failed: dict[str, str] = {}
            tuned = (_tune_or_warn(failed, "model.pt", _tune_on_validation, _unwrap(net),
                                   val_cases, config, device,
                                   meta_base.get("radius_calibration"), inherited, report, step,
                                   cancel)
                     if has_val and val_cases and config.tune_thresholds else None)
            if tuned:
                final_metrics["refine"] = tuned
                from .tuning import no_useful_pair

                # as tune says it (an outside judge: thresholds whose labels are empty on the
                # validation volumes were stored without a word)
                useless = no_useful_pair(tuned, out / "model.pt")
                if useless:
                    warnings.warn(useless, UserWarning, stacklevel=2)
            save_model(out / "model.pt", _unwrap(net), meta(final_metrics))
            tuned_best = None
            if tuned and (out / "best.pt").is_file():
                if best_step == step:  # best.pt holds these weights
                    save_model(out / "best.pt", _unwrap(net), meta(final_metrics))
                    tuned_best = tuned
                else:
                    tuned_best = _tune_or_warn(failed, "best.pt", _tune_saved_model,
                                               out / "best.pt", val_cases, config, device,
                                               inherited, report, step, cancel)
            log_extra["refine"] = _threshold_record(
                config, has_val, tuned, tuned_best, inherited,
                best_cancelled=bool(tuned) and (out / "best.pt").is_file() and not tuned_best,
                failed=failed,
                best_kept=(_kept_refinement(out / "best.pt")
                           if not tuned and best_step is None else None))
            save_checkpoint()
            if report:
                # an audit: "done: 10 steps" of a 300-step run did not say why it ended
                budget = (f" (stopped by the time budget (--minutes {config.max_minutes:g}) at "
                          f"step {step} of {config.steps}; --resume with a larger --minutes "
                          "continues)" if budget_stop else "")
                report(step, step, f"done: {step} steps{budget}"
                       + _final_validation_note(rows, step, start_step, best)
                       + "; " + log_extra["refine"]["note"] + _tune_later_hint(
                           out, log_extra["refine"], config, has_val))
        ddp.barrier(dist)
    except BaseException:
        if is_main and step == 0 and ck is None:
            # failed or cancelled before its first step (an audit: patch 8 failed in the
            # network and the config.json left behind made the folder "in use" for the next try)
            (out / "config.json").unlink(missing_ok=True)
        raise
    finally:
        pool.close()
    best_path = out / "best.pt"
    return best_path if best_path.is_file() else out / "model.pt"


def _tune_on_validation(net, val_cases, config: TrainConfig, device, calibration,
                        inherited: dict, report, step: int, cancel, what: str = "model.pt"):
    """``metrics.refine`` for ``net``: the T_p / T_r of :data:`~.tuning.TP_GRID` x
    :data:`~.tuning.TR_GRID`, the fallback pair and a fine-tuned model's initial pair with the
    best mean score on the validation volumes (:func:`~.tuning.tune_model`, which
    ``napari-tubular tune`` runs too; the network runs once per volume), or None when
    cancelled."""
    from .tuning import tune_model

    if report:
        report(1, 1, f"tuning the refinement thresholds T_p / T_r of {what} and its "
                     f"confidence filter's level on {len(val_cases)} validation volume(s)")
    # at the volumes' own grids, through inference.predict: where segment refines (the model's
    # grid chose thresholds that segment's native-grid refinement scored among the worst)
    meta = {"K": config.K, "spacing": list(config.target_spacing),
            "normalization": resolve_normalization(config),
            "patch_size": list(config.patch_size), "radius_calibration": calibration}
    n_volumes = len(val_cases)

    def volumes():
        # an outside judge: one line for the whole tuning, which took minutes on a few large
        # volumes without a sign of life; now one per volume (the CLI prints "i/n")
        for i, volume in enumerate(_native_val_volumes(config)):
            if report and n_volumes > 1:
                report(i + 1, n_volumes, f"tuning the refinement thresholds of {what}: "
                                         "validation volume")
            yield volume

    return tune_model((net, meta), volumes(), device=device, amp=config.amp, cancel=cancel,
                      initial=inherited.get("refine"), weights_step=step)


def _tune_or_warn(failed: dict, what: str, tune: Callable, *args):
    """``tune(*args)``; on an error (out of memory on a large validation volume, a volume the
    network refuses) a warning, the error in ``failed[what]`` and None: the model file keeps
    its thresholds and the run still writes its files."""
    from napari_tubular.geometry.spheres import Cancelled as RefineCancelled
    from napari_tubular.inference import Cancelled as InferenceCancelled

    try:
        return tune(*args)
    except (Cancelled, InferenceCancelled, RefineCancelled):
        raise
    except (MemoryError, RuntimeError, ValueError, OSError) as exc:
        failed[what] = f"{type(exc).__name__}: {exc}"
        warnings.warn(f"the threshold tuning of {what} failed ({failed[what]}): {what} keeps "
                      "its thresholds; the run's files are written as usual (--no-tune skips "
                      "the tuning)", UserWarning, stacklevel=2)
        return None


def _tune_saved_model(path: Path, val_cases, config: TrainConfig, device, inherited: dict,
                      report, step: int, cancel):
    """Tune the T_p / T_r of the model file ``path`` (best.pt from another step than the
    final weights) and write them into it; the tuning record, or None."""
    from napari_tubular.models import load_model, save_model

    net, meta = load_model(path, str(device))
    weights_step = (meta.get("training") or {}).get("steps", step)
    tuned = _tune_on_validation(net, val_cases, config, device, meta.get("radius_calibration"),
                                inherited, report, weights_step, cancel, what=path.name)
    if tuned:
        meta.pop("path", None)
        meta["metrics"] = {**(meta.get("metrics") or {}), "refine": tuned}
        save_model(path, net, meta)
    return tuned


def _kept_refinement(path: Path) -> dict | None:
    """The tuned thresholds (``metrics.refine``) of a model file that this session did not
    write (best.pt of an earlier session of a resumed run), or None."""
    from napari_tubular.models import ModelFormatError, read_model_meta

    if not path.is_file():
        return None
    try:
        meta = read_model_meta(path)
    except (ModelFormatError, OSError):
        return None
    refine = meta["metrics"].get("refine")
    if not isinstance(refine, dict) or refine.get("tp") is None or "inherited_from" in refine:
        return None  # the fallback, or the initial model's (as model.pt's)
    return {**refine, "weights_step": refine.get("weights_step",
                                                 (meta.get("training") or {}).get("steps"))}


def _tune_later_hint(out: Path, record: dict, config: TrainConfig, has_val: bool) -> str:
    """The command that tunes the run's model.pt later, for a run that ended untuned by
    cancel, failure or lack of validation data (not when the tuning was switched off)."""
    if record.get("tuned") or (has_val and not config.tune_thresholds):
        return ""
    return (f" (tune it later: napari-tubular tune {out / 'model.pt'} --val-data "
            f"DIR|synthetic -o {out / 'tuned.pt'})")


def _threshold_record(config: TrainConfig, has_val: bool, tuned, tuned_best,
                      inherited: dict, best_cancelled: bool = False,
                      best_kept: dict | None = None, failed: dict | None = None) -> dict:
    """What log.json records of the refinement thresholds, with the note the run ends with
    (``best_cancelled``: the tuning of best.pt, another step's weights, was cancelled;
    ``best_kept``: the thresholds of a best.pt that an earlier session wrote and tuned, which
    this untuned session leaves as they are; ``failed``: ``{file: error}`` of the tunings that
    failed)."""
    from napari_tubular.inference import FALLBACK_TP, FALLBACK_TR

    failed = failed or {}

    if tuned:
        note = (f"refinement thresholds tuned on {tuned['volumes']} validation volume(s): "
                f"T_p {tuned['tp']:g}, T_r {tuned['tr']:g} (score {tuned['score']:.3f}; the "
                f"fallback {FALLBACK_TP:g} / {FALLBACK_TR:g}: {tuned['fallback']['score']:.3f}), "
                f"confidence filter {_level_text(tuned)}")
        if tuned_best is not None and tuned_best is not tuned:
            note += (f"; best.pt (step {tuned_best['weights_step']}): T_p {tuned_best['tp']:g}, "
                     f"T_r {tuned_best['tr']:g} (score {tuned_best['score']:.3f}), "
                     f"confidence filter {_level_text(tuned_best)}")
        if best_cancelled and "best.pt" in failed:
            note += (", stored in model.pt for segment; best.pt: not tuned (failed: "
                     f"{failed['best.pt']})")
            return {"tuned": True, "model.pt": tuned, "best.pt": None, "note": note,
                    "failed": failed}
        if best_cancelled:
            # an audit: Ctrl-C while best.pt was tuned ended in "stored in the model file(s)",
            # and best.pt, the file the run names, kept the fallback thresholds
            note += ", stored in model.pt for segment; best.pt: not tuned (cancelled)"
        else:
            note += ", stored in the model file(s) for segment"
        return {"tuned": True, "model.pt": tuned, "best.pt": tuned_best, "note": note}
    initial = inherited.get("refine") or {}
    uses = (f"the initial model's T_p {initial['tp']:g} / T_r {initial['tr']:g}"
            if initial.get("tp") is not None else
            f"the fallback T_p {FALLBACK_TP:g} / T_r {FALLBACK_TR:g}")
    why = ("no validation data" if not has_val else
           "tune_thresholds is off" if not config.tune_thresholds else
           f"failed: {failed['model.pt']}" if "model.pt" in failed else "cancelled")
    note = f"refinement thresholds not tuned ({why}): segment uses {uses}"
    if best_kept:
        # an outside judge: a resumed run with --no-tune said "segment uses the fallback" and
        # named best.pt, an earlier session's weights whose tuned T_p / T_r segment uses
        step = best_kept.get("weights_step")
        note = (f"refinement thresholds not tuned ({why}): model.pt uses {uses}; best.pt "
                f"(the weights of step {step}, from an earlier session) keeps the T_p "
                f"{best_kept['tp']:g} / T_r {best_kept['tr']:g} tuned for it")
    out = {"tuned": False, "reason": why, "note": note}
    if failed:
        out["failed"] = failed
    return out


def _level_text(tuned: dict) -> str:
    level = tuned.get("min_confidence")
    return "off" if level is None else f"{level:g}"


def _row(step: int, time_s: float, lr: float, acc: dict, pool) -> dict:
    def mean(k):
        v = [x for x in acc.get(k, []) if x is not None and np.isfinite(x)]
        return float(np.mean(v)) if v else None

    return {
        "step": step, "time_s": round(time_s, 2), "lr": lr, "loss": mean("loss"),
        "loss_main": mean("loss_main"), "loss_cls": mean("loss_cls"),
        "loss_dis": mean("loss_dis"), "loss_cldice": mean("loss_cldice"),
        "loss_region": mean("loss_region"), "loss_boundary": mean("loss_boundary"),
        "boundary_alpha": mean("boundary_alpha"), "loss_ds": mean("loss_ds"),
        "cldice_weight": mean("cldice_weight"),
        "cases_seen": _cases_seen(pool),
    }


def _cases_seen(pool) -> int:
    """Cases drawn so far: generated synthetic cases, or the folder pairs loaded (an audit:
    the log said 0 for folder data where the model's meta said 3)."""
    # a resumed run's pool counts from 0; seeds_drawn_before holds the sessions' before it (an
    # audit: cases_seen fell from 4 to 2 in log.csv at a resume)
    generated = getattr(pool, "generated", 0) + getattr(pool, "seeds_drawn_before", 0)
    return int(max(generated, len(getattr(pool, "cases", []))))


def _progress_message(step: int, config: TrainConfig, elapsed: float, rows: list[dict],
                      since: int = 0) -> str:
    """The progress line of ``step``: loss, the last validation, speed, ETA. ``since``: the
    step this session started from (a resumed run's checkpoint step): rows up to it are an
    earlier session's and are not shown (an outside review: after ``--resume`` the line went
    on showing a validation from before the resume)."""
    rate = step / max(elapsed, 1e-9)
    remaining = (config.steps - step) / max(rate, 1e-9)
    if config.max_minutes:
        remaining = min(remaining, max(0.0, 60 * config.max_minutes - elapsed))
    rows = [r for r in rows if r.get("step") is None or r["step"] > since]
    loss = next((r["loss"] for r in reversed(rows) if r.get("loss") is not None), None)
    val = next((r for r in reversed(rows) if r.get("val_dice") is not None), None)
    msg = f"step {step}/{config.steps}"
    if loss is not None:
        msg += f" loss {loss:.4f}"
    if val is not None:
        msg += f" val Dice {val['val_dice']:.3f} clDice {val['val_cldice']:.3f}"
        if val.get("step") is not None and val["step"] != step:  # not measured at this step
            msg += f" (at step {val['step']})"
    return msg + f" | {rate:.2f} it/s, ETA {_fmt_time(remaining)}"


def _final_validation_note(rows: list[dict], step: int, since: int, best: float) -> str:
    """The end of the "done" line: the validation of the final weights when this session
    measured it, and the best score (best.pt)."""
    last = rows[-1] if rows else {}
    note = ""
    if last.get("step") == step > since and last.get("val_dice") is not None:
        note = f", validation Dice {last['val_dice']:.3f} clDice {last['val_cldice']:.3f}"
    if math.isfinite(best):
        return note + f", best validation score {best:.4f}"
    return note + ", no validation (model.pt holds the final weights)"


def _fmt_time(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


_RESUME_FIXED = ("loss", "K", "model", "target_spacing", "patch_size", "normalization", "data")


def _saved_best_score(path: Path) -> float:
    """The validation score stored in a run's ``best.pt`` (-inf when there is none)."""
    if not path.is_file():
        return -math.inf
    from napari_tubular.models import read_model_meta

    try:
        score = (read_model_meta(path).get("metrics") or {}).get("score")
    except (ValueError, OSError):
        return -math.inf
    return float(score) if score is not None else -math.inf


def _record_arch(config: TrainConfig, arch: dict) -> None:
    """A fine-tuning run records the network it trains, the initial model's, in its model
    options (config.json and the model's training config), not the options it was given."""
    config.model = {**config.model, **{k: arch[k] for k in config.model if k in arch}}


def _init_from_model(config: TrainConfig):
    """Architecture, normalisation, weights of ``config.init_model`` (fine-tuning), and what the
    new model inherits from it (tuned T_p / T_r, radius calibration) when K is unchanged."""
    from napari_tubular.models import load_model

    net, meta = load_model(config.init_model, "cpu")
    state = net.state_dict()
    arch = dict(meta["arch"])
    # only the options the run was given (an outside review: the defaults it never gave,
    # base_channels 16 and depth 4, were said to be ignored)
    differ = {k: v for k, v in config.given_model_options.items()
              if k in arch and arch[k] != v}
    if differ:
        # an audit: --base-channels 8 with a 4-channel initial model was ignored in silence
        # and recorded as the run's architecture
        warnings.warn("init_model: the network is the initial model's ("
                      + ", ".join(f"{k} {arch[k]}" for k in differ) + "); the run's model "
                      "options (" + ", ".join(f"{k} {v}" for k, v in differ.items())
                      + ") are ignored", stacklevel=2)
    if config.normalization is not None and (resolve_normalization(config)
                                             != dict(meta["normalization"])):
        warnings.warn(f"init_model: the intensity normalisation is the initial model's "
                      f"({meta['normalization']}); the run's normalization "
                      f"({config.normalization}) is ignored", stacklevel=2)
    _record_arch(config, arch)
    if int(meta["K"]) != int(config.K):
        # a new number of scale classes: everything but the scale head's last layer is reused,
        # the head starts afresh (build_model's initialisation) with K + 1 outputs
        arch["num_scales"] = int(config.K) + 1
        dropped = [k for k in state if k.startswith(SCALE_HEAD_PREFIX)]
        if not dropped:
            raise ValueError(f"init_model: the model has K={meta['K']}, the run K={config.K}, "
                             f"and no '{SCALE_HEAD_PREFIX}' layer to re-initialise; "
                             f"pass -K {meta['K']}")
        for k in dropped:
            del state[k]
        warnings.warn(f"init_model has K={meta['K']}, the run K={config.K}: the scale head "
                      f"({', '.join(dropped)}) is re-initialised, the rest of the network "
                      "starts from the model's weights", stacklevel=2)
    if not np.allclose(meta["spacing"], config.target_spacing, rtol=1e-4):
        raise ValueError(f"init_model: the model was trained at spacing {meta['spacing']} mm, "
                         f"the run uses {list(config.target_spacing)}; pass --spacing "
                         + " ".join(str(v) for v in meta["spacing"]))
    inherited = {}
    if int(meta["K"]) == int(config.K):  # same scale head: its calibration and thresholds hold
        refine = (meta.get("metrics") or {}).get("refine")
        if refine:
            inherited["refine"] = {**refine, "inherited_from": str(config.init_model)}
        if meta.get("radius_calibration"):
            inherited["radius_calibration"] = {**meta["radius_calibration"],
                                               "inherited_from": str(config.init_model)}
    return arch, dict(meta["normalization"]), state, inherited


def _read_checkpoint(path: Path) -> dict:
    """A run's checkpoint (``last.pt``), or a ValueError naming the file (an audit: a damaged
    or wrong file ended in a traceback, ``KeyError: 'config'`` or an unpickling error, and a
    truncated one in "Invalid argument" without a name).

    Read with ``weights_only=True``, as model files are: a checkpoint holds tensors and plain
    values only, and a file that asks to build other objects (code run while unpickling: a
    ``last.pt`` put into a run folder by somebody else) is refused without running it."""
    import pickle

    import torch

    from napari_tubular.models.serialization import refused_objects

    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reading failure is a damaged file here
        if isinstance(exc, pickle.UnpicklingError) and refused_objects(exc):
            # torch's own first line advises re-running torch.load with weights_only=False,
            # what would run the code (an audit): not quoted
            raise ValueError(f"{path} is not a checkpoint napari-tubular wrote: it asks to "
                             "build Python objects other than tensors and plain values, "
                             "which would run code from the file; it was not "
                             "loaded. Start the run again with --overwrite, or use a "
                             "checkpoint of your own") from None
        raise ValueError(f"{path} cannot be read as a training checkpoint (corrupted or "
                         f"truncated? {type(exc).__name__}: {exc}); start the run again with "
                         "--overwrite, or restore the file") from None
    need = ("config", "model_state", "optimizer", "step", "rows", "best_score", "elapsed_s")
    if not isinstance(ck, dict) or any(k not in ck for k in need):
        have = sorted(ck) if isinstance(ck, dict) else type(ck).__name__
        raise ValueError(f"{path} is not a training checkpoint (a model file or another file "
                         f"copied over it?): it holds {have}, a checkpoint holds "
                         f"{', '.join(need)}")
    return ck


def checkpoint_config(path: str | Path) -> dict:
    """The options (``TrainConfig.to_dict()``) a run's checkpoint (``last.pt``) was saved
    with; a ValueError names a damaged or wrong file."""
    return dict(_read_checkpoint(Path(path))["config"])


def checkpoint_workdir(path: str | Path) -> str | None:
    """The working directory of the session that wrote the checkpoint ``path`` (None for a
    checkpoint of an older version, or one that cannot be read: :func:`train` names that)."""
    try:
        workdir = _read_checkpoint(Path(path)).get("workdir")
    except (OSError, ValueError):
        return None
    return workdir if isinstance(workdir, str) and workdir else None


def _data_folders(data, workdir: str | None = None) -> list[str]:
    """The data folders as absolute paths, sorted (``synthetic`` as it is): what a resumed
    run's data must be, however its folders are spelled (relative ones taken from ``workdir``,
    default the working directory)."""
    from .config import _folder_key

    def absolute(d: str) -> str:
        path = Path(d).expanduser()
        if workdir is None or path.is_absolute() or d.lower() == "synthetic":
            return d
        return str(Path(workdir) / path)

    return sorted({_folder_key(absolute(str(d))) for d in data})


def _check_resume(ck: dict, config: TrainConfig) -> None:
    saved = dict(ck["config"])
    new = config.to_dict()
    # the same folders however spelled (an audit: resuming with --data /abs/path/data or
    # ./data/ for 'data' was refused, "option(s) data differ"); a checkpoint that records its
    # folders also catches a resume from another working directory, where the saved relative
    # 'data' named another folder or none ("data folder not found")
    workdir = ck.get("workdir") if isinstance(ck.get("workdir"), str) else None
    saved_folders = ck.get("data_folders") or _data_folders(saved.get("data") or [], workdir)
    data_differ = saved_folders != _data_folders(config.data)
    diff = [k for k in _RESUME_FIXED if k != "data" and saved.get(k) != new.get(k)
            # a fine-tuning run's network is its initial model's (the checkpoint's arch), and
            # its saved config records that network, not the options given
            and not (k == "model" and config.init_model)]
    gone = [f for f in saved_folders if f != "synthetic" and not Path(f).exists()]
    if data_differ and gone and len(gone) == len(saved_folders) and not config.is_synthetic:
        # the checkpoint's folders are all gone (an audit: a project folder moved or renamed
        # could not be resumed at all, --data naming the folders where they are now refused)
        warnings.warn(
            f"resume: the checkpoint's run's data ({', '.join(saved_folders)}) is no longer "
            f"there; going on with {', '.join(_data_folders(config.data))}, taken to be the "
            "same pairs moved", UserWarning, stacklevel=3)
        data_differ = False
    if data_differ:
        raise ValueError(
            f"resume: data {', '.join(config.data)} ({', '.join(_data_folders(config.data))}) "
            f"is not the checkpoint's run's data ({', '.join(saved_folders)}); give those "
            "folders with --data (relative paths are taken from the working directory, "
            f"{Path.cwd()})")
    if diff:
        raise ValueError(
            "resume: option(s) " + ", ".join(diff) + " differ from the checkpoint's run "
            f"({', '.join(f'{k}={saved.get(k)!r}' for k in diff)})"
        )
    saved_init = _model_key(saved.get("init_model"), workdir)
    moved = saved_init not in (None, "default") and not Path(saved_init).exists()
    if config.init_model and _model_key(config.init_model) != saved_init and not moved:
        # an audit: --resume --init-model other.pt went on from last.pt's weights without a
        # word, and config.json then said the run had started from other.pt (a model file
        # that is no longer where the run found it is taken to have moved)
        raise ValueError(
            f"resume: init_model {config.init_model} is not the checkpoint's run's "
            f"({saved.get('init_model')}): a resumed run goes on from the weights in last.pt; "
            "to fine-tune from that model start a new run (another --out, or --overwrite)")
    _check_resume_has_work(ck, config)
    changed = [k for k in _RESUME_WARNED if k in saved and saved.get(k) != new.get(k)
               # the same validation folders spelled otherwise are not a change
               and not (k == "val_data" and isinstance(saved.get(k), list)
                        and _data_folders(saved[k], workdir) == _data_folders(new[k]))]
    if changed:
        # an audit: --lr, --batch-size, --steps and --seed changed on resume without a word
        # (the learning rate jumped tenfold, a finished schedule climbed back)
        warnings.warn(
            "resume: " + ", ".join(f"{k} {saved.get(k)!r} -> {new.get(k)!r}" for k in changed)
            + ": the new values apply from the checkpoint's step on (the learning-rate "
            "schedule follows the new steps / lr; the rows logged before used the old ones)",
            UserWarning, stacklevel=3)


def _model_key(model, workdir: str | None = None) -> str | None:
    """A model path made absolute (relative ones taken from ``workdir``, default the working
    directory), ``default`` and None as they are: the same model however spelled."""
    if model is None or str(model) == "default":
        return model
    path = Path(model).expanduser()
    if not path.is_absolute() and workdir is not None:
        path = Path(workdir) / path
    return str(path.resolve())


def _check_resume_has_work(ck: dict, config: TrainConfig) -> None:
    """A resume that would train no step is refused before anything is written (an audit: a
    spent time budget or ``--steps`` at or below the checkpoint's step ran 0 steps, said
    "done", rewrote model.pt, and config.json recorded the smaller step count)."""
    step, elapsed = int(ck["step"]), float(ck["elapsed_s"])
    where = f"the checkpoint (last.pt) is at step {step}"
    if config.steps < step:
        raise ValueError(f"resume: --steps {config.steps} is below the run's step: {where}; a "
                         f"run cannot be shortened; give --steps above {step} to train on")
    if config.steps == step:
        raise ValueError(f"resume: nothing to do: {where} of {config.steps}; give a larger "
                         "--steps to train on")
    if config.max_minutes and elapsed >= 60 * config.max_minutes:
        raise ValueError(
            f"resume: nothing to do: the time budget is spent ({where} of {config.steps} after "
            f"{elapsed / 60:.2f} min of training, --minutes {config.max_minutes:g}; the budget "
            "counts the training time of the run's earlier sessions too); give a larger "
            "--minutes to train on")


#: options a resumed run may change, with a warning (the schedule and the sampling)
_RESUME_WARNED = ("lr", "steps", "max_minutes", "batch_size", "seed", "val_data", "val_every",
                  "val_cases", "fg_fraction", "augment", "rotate_deg", "scale_range",
                  "cldice_weight", "cldice_warmup_steps", "cldice_warmup_fraction",
                  "cldice_ramp_fraction", "val_tubes", "weight_decay", "synthetic", "ds_weight")


def _continues_random_state(ck: dict, config: TrainConfig, dist: ddp.DistInfo) -> bool:
    """Whether a resume takes up the checkpoint's random streams and synthetic pool: one
    process then and now, with the same seed."""
    state = ck.get("random_state")
    return (isinstance(state, dict) and not dist.enabled and state.get("world_size", 1) == 1
            and state.get("seed") == config.seed)


def _restore_random_state(ck: dict, config: TrainConfig, dist: ddp.DistInfo, rng, gen) -> None:
    """A resume continues the patch sampling and the augmentation where the checkpoint left
    them: the same steps as a run that was never stopped (an audit: a run stopped at step 4
    and resumed drew other patches from step 5 on than the same run without the stop; for
    folder data its weights now match it). The checkpoint holds rank 0's streams: under DDP,
    or with another seed, each rank's streams are seeded from the step instead, as before."""
    import torch

    state = ck.get("random_state")
    if not _continues_random_state(ck, config, dist):
        return
    try:
        rng.bit_generator.state = state["numpy"]
        gen.set_state(state["torch"])
        torch.set_rng_state(state["torch_global"])
    except (KeyError, TypeError, ValueError, RuntimeError):  # another numpy / torch: reseeded
        rng.bit_generator.state = np.random.default_rng([config.seed, dist.rank,
                                                         int(ck["step"])]).bit_generator.state
        gen.manual_seed(config.seed * 1000 + dist.rank + 7 * int(ck["step"]))


def _last_train_loss(rows: list[dict]) -> dict:
    """``train_loss`` (the mean loss of the steps the last logged row covers) and
    ``train_loss_step`` (that row's step), or {} before any row with a loss."""
    for row in reversed(rows):
        if row.get("loss") is not None:
            return {"train_loss": float(row["loss"]), "train_loss_step": int(row["step"])}
    return {}


def _last_val_metrics(rows: list[dict]) -> dict:
    """The metrics of the last validated row (``val_*`` columns) of a checkpoint's log."""
    for row in reversed(rows):
        if row.get("val_dice") is not None:
            return {k[4:]: v for k, v in row.items() if k.startswith("val_")}
    return {}


def _check_patch_for_depth(patch_size, depth: int) -> None:
    """The network halves a patch ``depth - 1`` times and its instance norms need more than one
    voxel at the bottom (an audit: patch 8 with depth 4 failed with torch's "Expected more
    than 1 spatial element when training")."""
    need = 2 ** depth
    if min(patch_size) < need:
        raise ValueError(
            f"patch_size {tuple(patch_size)}: a network of depth {depth} halves the patch "
            f"{depth - 1} times and needs at least {need} voxels along each side; give a larger "
            "patch or a smaller depth")
