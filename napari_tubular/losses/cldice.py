"""Soft Dice, soft-clDice and their combination (clDice, Shit et al., CVPR 2021; METHODS.md section 2).

Inputs are ``(B, C, Z, Y, X)``. Predictions are logits by default (``activation="sigmoid"``;
``"softmax"`` for multi-class logits; ``None`` for probabilities); targets are binary (or soft)
masks of the same shape. The loss is computed in float32 (float64 stays float64) with autocast
off. The soft skeleton is :func:`napari_tubular.geometry.soft_skeleton.soft_skeleton` (min/max
over shifted views); the target's skeleton is computed without autograd.

Soft-skeleton iterations: every iteration erodes one voxel layer (6-neighbourhood), so ``iters``
must be at least the largest tube radius in voxels (along the finest axis), or the centre of the
thickest tubes never enters the skeleton (MONAI's default ``iter_=3`` misses a quarter of the
skeleton of a 6-voxel-radius vessel). The radius is not always enough: an erosion removes one
layer in the city-block metric, and an oblique tube of radius ``r`` voxels is up to
``sqrt(3/2) r`` deep in it (along the body diagonal, a step along one axis moves
``sqrt(2/3)`` voxel away from the axis). :func:`skeleton_iterations` gives
``ceil(sqrt(3/2) r)``; with the DDT scale head, ``iters = K`` (the largest radius class) suits
tubes up to about ``K / 1.22`` voxels in every direction.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from torch import nn

from .._checks import check_flag
from ._common import (
    check_5d,
    check_activation,
    check_reduction,
    check_same_shape,
    check_unit_range,
    no_autocast,
    reduce,
    to_probabilities,
    upcast,
)

__all__ = ["DiceclDiceLoss", "SoftDiceLoss", "SoftclDiceLoss", "skeleton_iterations"]


def skeleton_iterations(max_radius_mm: float, spacing) -> int:
    """Soft-skeleton iterations for tubes up to ``max_radius_mm`` in any direction:
    ``ceil(sqrt(3/2) * max_radius_mm / min(spacing))``.

    Each iteration erodes one layer in the city-block metric. A tube of radius ``r`` voxels along
    a grid axis is ``r`` layers deep, one along the body diagonal up to ``sqrt(3/2) r`` (an outside
    audit, session 28: ``ceil(r)`` iterations, the rule before, left the middle of diagonal tubes
    of radius 6, 7, 8 and 10 voxels without a single skeleton voxel; ``ceil(sqrt(3/2) r)`` covers
    them as well as any larger count). On an anisotropic grid the tube is thinner in voxels along
    the coarse axes, so the finest axis bounds it.

    Args:
        max_radius_mm: largest tube radius to skeletonise, mm (> 0).
        spacing: voxel size in mm, (dz, dy, dx) (or one number for isotropic grids).

    Returns:
        int >= 1.
    """
    try:
        # one number: a Python or numpy scalar, or a 0-d array / tensor (an outside audit:
        # np.float32(0.8), a voxel size read from an image header, was refused)
        if isinstance(spacing, str | bytes):
            raise TypeError
        sp = [float(spacing)] * 3 if np.ndim(spacing) == 0 else [float(s) for s in spacing]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"spacing must be 3 positive numbers (dz, dy, dx), got {spacing!r}") from exc
    if len(sp) != 3 or not all(math.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"spacing must be 3 positive numbers (dz, dy, dx), got {spacing!r}")
    r = float(max_radius_mm)
    if not math.isfinite(r) or r <= 0:
        raise ValueError(f"max_radius_mm must be a positive length in mm, got {max_radius_mm!r}")
    return max(1, math.ceil(math.sqrt(1.5) * r / min(sp) - 1e-9))


def _check_iters(iters) -> int:
    if isinstance(iters, bool) or not isinstance(iters, numbers.Integral) or iters < 0:
        raise ValueError(
            f"iters must be a non-negative int (at least the largest radius in voxels), got {iters!r}"
        )
    return int(iters)  # numpy integers too, as soft_skeleton takes them (an audit)


def _prepare(input, target, activation, include_background):
    check_5d(input, "input", finite=True)
    check_5d(target, "target")
    check_same_shape(input, target, "input", "target")
    check_unit_range(target, "target")
    p = to_probabilities(input, activation)
    t = upcast(target).to(p.dtype)
    if not include_background:
        if p.shape[1] < 2:
            raise ValueError("include_background=False needs at least 2 channels")
        p, t = p[:, 1:], t[:, 1:]
    return p, t


def _soft_skeleton(x: torch.Tensor, iters: int) -> torch.Tensor:
    from napari_tubular.geometry.soft_skeleton import soft_skeleton

    return soft_skeleton(x, iters)


def soft_dice(p: torch.Tensor, t: torch.Tensor, smooth: float, batch: bool) -> torch.Tensor:
    """Soft Dice coefficient per (B, C) (or per C if ``batch``) of probabilities ``p``, target ``t``."""
    dims = (0, 2, 3, 4) if batch else (2, 3, 4)
    inter = (p * t).sum(dims)
    denom = p.sum(dims) + t.sum(dims)
    return (2.0 * inter + smooth) / (denom + smooth)


def soft_cldice(
    p: torch.Tensor, t: torch.Tensor, iters: int, smooth: float, eps: float, batch: bool
) -> torch.Tensor:
    """Soft clDice per (B, C) (or per C if ``batch``); no gradient through the target's skeleton."""
    dims = (0, 2, 3, 4) if batch else (2, 3, 4)
    with torch.no_grad():
        skel_t = _soft_skeleton(t, iters)
    skel_p = _soft_skeleton(p, iters)
    tprec = ((skel_p * t).sum(dims) + smooth) / (skel_p.sum(dims) + smooth)
    tsens = ((skel_t * p).sum(dims) + smooth) / (skel_t.sum(dims) + smooth)
    return 2.0 * tprec * tsens / (tprec + tsens + eps)


class SoftDiceLoss(nn.Module):
    """``1 - (2 sum(p t) + smooth) / (sum p + sum t + smooth)`` per sample and channel.

    Args:
        activation: ``"sigmoid"`` (input = logits, default), ``"softmax"`` (multi-class logits over
            C) or ``None`` (input = probabilities).
        smooth: additive smoothing (1 in the clDice paper); > 0 keeps empty patches defined.
        batch: sum over the batch before the ratio (one Dice per channel).
        include_background: if False, channel 0 is dropped (needs C >= 2).
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` (``"none"`` returns ``(B, C)``, or ``(C,)``
            with ``batch=True``).

    Shapes: ``input`` and ``target`` ``(B, C, Z, Y, X)``; target in [0, 1] (any dtype).
    """

    def __init__(
        self,
        activation: str | None = "sigmoid",
        smooth: float = 1.0,
        batch: bool = False,
        include_background: bool = True,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.activation = check_activation(activation)
        if not smooth >= 0:
            raise ValueError(f"smooth must be >= 0, got {smooth!r}")
        self.smooth = float(smooth)
        self.batch = check_flag("batch", batch)
        self.include_background = check_flag("include_background", include_background)
        self.reduction = check_reduction(reduction)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with no_autocast(input):
            p, t = _prepare(input, target, self.activation, self.include_background)
            return reduce(1.0 - soft_dice(p, t, self.smooth, self.batch), self.reduction)


class SoftclDiceLoss(nn.Module):
    """``1 - softclDice``: harmonic mean of topology precision and sensitivity on soft skeletons.

    ``Tprec = (sum(S(p) t) + smooth) / (sum S(p) + smooth)``,
    ``Tsens = (sum(S(t) p) + smooth) / (sum S(t) + smooth)``,
    ``loss = 1 - 2 Tprec Tsens / (Tprec + Tsens + eps)``, per sample and channel, where ``S`` is
    the soft skeleton with ``iters`` iterations. With ``smooth=1, eps=1e-4`` and one channel this
    is exactly MONAI's ``SoftclDiceLoss`` (``benchmarks/bench_losses.py`` checks it).

    Blind spots of the recipe (two audits, kept as the paper defines it): the soft skeleton of a
    patch that is foreground everywhere is empty (the erosions reach the padding), so an
    all-foreground prediction scores Tprec = 1 whatever the target: against an empty target
    loss 0 with no gradient, against a tube a perfect prediction's value (0; 5e-5 with
    ``eps=1e-4``); an empty
    prediction against an all-foreground target scores 0 with no gradient too. Use it with a
    region term, as :class:`DiceclDiceLoss` does (that pair scores these cases about 0.7).

    Args:
        iters: soft-skeleton iterations; at least the largest tube radius in voxels (see
            :func:`skeleton_iterations`).
        activation: ``"sigmoid"`` (default, logits), ``"softmax"`` or ``None`` (probabilities).
        smooth: smoothing of Tprec / Tsens (1 in the paper); must be > 0.
        eps: added to the harmonic-mean denominator (0 by default: ``smooth > 0`` keeps it > 0).
        batch: sum over the batch before the ratios.
        include_background: if False, channel 0 is dropped (needs C >= 2).
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` (``(B, C)``, or ``(C,)`` with
            ``batch=True``).
    """

    def __init__(
        self,
        iters: int,
        activation: str | None = "sigmoid",
        smooth: float = 1.0,
        eps: float = 0.0,
        batch: bool = False,
        include_background: bool = True,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.iters = _check_iters(iters)
        self.activation = check_activation(activation)
        if not smooth > 0:
            raise ValueError(f"smooth must be > 0 (empty skeletons), got {smooth!r}")
        if not eps >= 0:
            raise ValueError(f"eps must be >= 0, got {eps!r}")
        self.smooth = float(smooth)
        self.eps = float(eps)
        self.batch = check_flag("batch", batch)
        self.include_background = check_flag("include_background", include_background)
        self.reduction = check_reduction(reduction)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with no_autocast(input):
            p, t = _prepare(input, target, self.activation, self.include_background)
            cl = soft_cldice(p, t, self.iters, self.smooth, self.eps, self.batch)
            return reduce(1.0 - cl, self.reduction)


class DiceclDiceLoss(nn.Module):
    """``(1 - alpha)(1 - softDice) + alpha(1 - softclDice)`` with an optional clDice warm-up.

    METHODS.md section 2: clDice from the first step can stall training; start with Dice only and
    bring clDice in after a warm-up. The weight used at the current step is

    * ``0`` for ``step < warmup_steps`` (the clDice term is then not computed at all: no skeleton
      cost during warm-up),
    * ramped linearly from 0 to ``alpha`` over the next ``ramp_steps`` steps,
    * ``alpha`` afterwards.

    Call :meth:`step` once per optimiser step (or :meth:`set_step`); ``warmup_steps=0,
    ramp_steps=0`` (default) gives the paper's fixed ``alpha``. After each forward,
    ``last_parts`` holds detached ``dice`` (1 - softDice), ``cldice`` (1 - softclDice, NaN while
    skipped) and the ``alpha`` used.

    Args:
        iters: soft-skeleton iterations (>= largest radius in voxels).
        alpha: final clDice weight in [0, 1] (paper: 0.1 to 0.5).
        warmup_steps: steps with Dice only.
        ramp_steps: steps of linear ramp after the warm-up.
        activation, smooth, batch, include_background: as in :class:`SoftDiceLoss`.
        eps: harmonic-mean epsilon of :class:`SoftclDiceLoss`.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` (``(B, C)``, or ``(C,)`` with
            ``batch=True``).
    """

    def __init__(
        self,
        iters: int,
        alpha: float = 0.3,
        warmup_steps: int = 0,
        ramp_steps: int = 0,
        activation: str | None = "sigmoid",
        smooth: float = 1.0,
        eps: float = 0.0,
        batch: bool = False,
        include_background: bool = True,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
        for name, v in (("warmup_steps", warmup_steps), ("ramp_steps", ramp_steps)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be a non-negative int, got {v!r}")
        self.alpha = float(alpha)
        self.warmup_steps = warmup_steps
        self.ramp_steps = ramp_steps
        self.current_step = 0
        self.dice = SoftDiceLoss(activation, smooth, batch, include_background, "none")
        self.cldice = SoftclDiceLoss(iters, activation, smooth, eps, batch, include_background, "none")
        self.reduction = check_reduction(reduction)
        self.last_parts: dict[str, torch.Tensor | float] = {}

    def alpha_at(self, step: int) -> float:
        """The clDice weight at optimiser step ``step`` (0-based)."""
        if step < self.warmup_steps:
            return 0.0
        if self.ramp_steps == 0:
            return self.alpha
        return self.alpha * min(1.0, (step - self.warmup_steps + 1) / self.ramp_steps)

    @property
    def current_alpha(self) -> float:
        return self.alpha_at(self.current_step)

    def step(self) -> None:
        """Advance the schedule by one optimiser step."""
        self.current_step += 1

    def set_step(self, step: int) -> None:
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be a non-negative int, got {step!r}")
        self.current_step = step

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        a = self.current_alpha
        with no_autocast(input):
            p, t = _prepare(input, target, self.dice.activation, self.dice.include_background)
            dice = 1.0 - soft_dice(p, t, self.dice.smooth, self.dice.batch)
            if a > 0.0:
                c = self.cldice
                cl = 1.0 - soft_cldice(p, t, c.iters, c.smooth, c.eps, c.batch)
                loss = (1.0 - a) * dice + a * cl
            else:
                cl = torch.full_like(dice, float("nan"))
                loss = dice
            self.last_parts = {"dice": dice.detach().mean(), "cldice": cl.detach().mean(), "alpha": a}
            return reduce(loss, self.reduction)
