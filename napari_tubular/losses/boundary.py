"""Boundary loss (Kervadec et al., MIDL 2019; METHODS.md section 4).

``L_B = mean_v(phi_G(v) * s_theta(v))`` where ``phi_G`` is the signed distance of the ground
truth (negative inside, positive outside, 0 on the inner boundary layer, in mm) computed by the
data pipeline on the **whole volume** with the real spacing
(:func:`napari_tubular.geometry.distance.signed_distance`) and cropped together with the image,
never computed on a patch. ``s_theta`` is the foreground probability. Because ``phi_G`` is in mm,
``L_B`` is in mm: scaling the spacing by ``c`` scales the loss by ``c``.

Alone ``L_B`` has a trivial minimiser (it only rewards probability inside); the paper uses
``alpha * L_GDL + (1 - alpha) * L_B`` with ``alpha`` going from 1 down to a floor
(:class:`BoundaryAlphaScheduler`, :class:`GDLBoundaryLoss`).
"""

from __future__ import annotations

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

__all__ = ["BoundaryAlphaScheduler", "BoundaryLoss", "GDLBoundaryLoss", "GeneralizedDiceLoss"]


class BoundaryLoss(nn.Module):
    """``mean(phi * s)`` per sample and channel (mm).

    Args:
        activation: ``"sigmoid"`` (logits, default), ``"softmax"`` or ``None`` (probabilities).
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` (``(B, C)``).

    Forward args:
        input: ``(B, C, Z, Y, X)`` logits/probabilities.
        phi: ``(B, C, Z, Y, X)`` float signed distance in mm, finite (per channel; put zeros in
            channels that must not contribute, e.g. the background of a softmax output).
    """

    def __init__(self, activation: str | None = "sigmoid", reduction: str = "mean") -> None:
        super().__init__()
        self.activation = check_activation(activation)
        self.reduction = check_reduction(reduction)

    def forward(self, input: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        check_5d(input, "input", finite=True)
        check_5d(phi, "phi")
        check_same_shape(input, phi, "input", "phi")
        # an outside judge: a NaN (or inf) in phi, a data fault, gave a NaN loss that training
        # reported as divergence ("lower --lr")
        if not bool(torch.isfinite(phi.detach()).all()):
            raise ValueError("phi (signed distance, mm) must be finite, got NaN or inf values")
        with no_autocast(input):
            s = to_probabilities(input, self.activation)
            d = upcast(phi).to(s.dtype)
            return reduce((d * s).mean(dim=(2, 3, 4)), self.reduction)


class GeneralizedDiceLoss(nn.Module):
    """Generalised Dice loss (Sudre et al. 2017): :class:`monai.losses.GeneralizedDiceLoss` reused.

    This wrapper adds the package conventions: logits or probabilities, float32 under autocast,
    and ``binary_as_two_class``: a single-channel sigmoid output is expanded to the two classes
    ``[1 - p, p]`` (with target ``[1 - t, t]``) as in the paper, because a one-class generalised
    Dice is plain Dice (its class weight cancels).

    Args:
        activation: ``"sigmoid"`` (default), ``"softmax"`` or ``None`` (probabilities).
        binary_as_two_class: expand 1-channel input/target to background + foreground.
        w_type: class weights, ``"square"`` (1/n^2, paper), ``"simple"`` (1/n) or ``"uniform"``.
        smooth_nr, smooth_dr: MONAI's smoothing terms.
        batch: one generalised Dice over the whole batch.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` (``(B,)``, or ``(1,)`` with ``batch=True``).
    """

    def __init__(
        self,
        activation: str | None = "sigmoid",
        binary_as_two_class: bool = True,
        w_type: str = "square",
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        batch: bool = False,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        from monai.losses import GeneralizedDiceLoss as _MonaiGDL

        if w_type not in ("square", "simple", "uniform"):
            raise ValueError(f"w_type must be 'square', 'simple' or 'uniform', got {w_type!r}")
        self.activation = check_activation(activation)
        self.binary_as_two_class = check_flag("binary_as_two_class", binary_as_two_class)
        self.reduction = check_reduction(reduction)
        self._gdl = _MonaiGDL(
            include_background=True,
            w_type=w_type,
            smooth_nr=smooth_nr,
            smooth_dr=smooth_dr,
            batch=check_flag("batch", batch),
            reduction="none",
        )

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_5d(input, "input", finite=True)
        check_5d(target, "target")
        check_same_shape(input, target, "input", "target")
        check_unit_range(target, "target")
        with no_autocast(input):
            p = to_probabilities(input, self.activation)
            t = upcast(target).to(p.dtype)
            if self.binary_as_two_class and p.shape[1] == 1:
                p = torch.cat([1.0 - p, p], dim=1)
                t = torch.cat([1.0 - t, t], dim=1)
            f = self._gdl(p, t).reshape(-1)
            return reduce(f, self.reduction)


class BoundaryAlphaScheduler:
    """Weight ``alpha`` of the region loss in ``alpha * L_GDL + (1 - alpha) * L_B``.

    Linear schedule of the paper: ``alpha = max(floor, start - decrement * epoch)`` (start 1,
    decrement 0.01 per epoch, floor 0.01). Call :meth:`step` once per epoch (or per any unit you
    choose); ``state_dict`` / ``load_state_dict`` for checkpoints.

    Args:
        start: alpha at epoch 0, in [0, 1].
        decrement: decrease per :meth:`step` (>= 0).
        floor: smallest alpha, in [0, start].
    """

    def __init__(self, start: float = 1.0, decrement: float = 0.01, floor: float = 0.01) -> None:
        if not 0.0 <= start <= 1.0:
            raise ValueError(f"start must be in [0, 1], got {start!r}")
        if not decrement >= 0.0:
            raise ValueError(f"decrement must be >= 0, got {decrement!r}")
        if not 0.0 <= floor <= start:
            raise ValueError(f"floor must be in [0, start={start}], got {floor!r}")
        self.start = float(start)
        self.decrement = float(decrement)
        self.floor = float(floor)
        self.epoch = 0

    @property
    def alpha(self) -> float:
        return max(self.floor, self.start - self.decrement * self.epoch)

    def step(self) -> float:
        """Advance one epoch; returns the new alpha."""
        self.epoch += 1
        return self.alpha

    def state_dict(self) -> dict:
        return {"start": self.start, "decrement": self.decrement, "floor": self.floor,
                "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        for key in ("start", "decrement", "floor", "epoch"):
            if key not in state:
                raise ValueError(f"BoundaryAlphaScheduler state is missing {key!r}")
        self.__init__(state["start"], state["decrement"], state["floor"])
        self.epoch = int(state["epoch"])


class GDLBoundaryLoss(nn.Module):
    """``alpha * L_GDL + (1 - alpha) * L_B`` with ``alpha`` from a :class:`BoundaryAlphaScheduler`.

    Forward: ``(input, target, phi)``, all ``(B, C, Z, Y, X)``; returns a scalar. ``last_parts``
    holds detached ``gdl``, ``boundary`` and the ``alpha`` used. Call ``loss.scheduler.step()``
    once per epoch.
    """

    def __init__(
        self,
        scheduler: BoundaryAlphaScheduler | None = None,
        activation: str | None = "sigmoid",
        gdl: GeneralizedDiceLoss | None = None,
    ) -> None:
        super().__init__()
        self.scheduler = scheduler if scheduler is not None else BoundaryAlphaScheduler()
        self.gdl = gdl if gdl is not None else GeneralizedDiceLoss(activation=activation)
        self.boundary = BoundaryLoss(activation=activation)
        self.last_parts: dict[str, torch.Tensor | float] = {}

    def forward(self, input, target, phi) -> torch.Tensor:
        a = self.scheduler.alpha
        l_gdl = self.gdl(input, target)
        l_b = self.boundary(input, phi)
        self.last_parts = {"gdl": l_gdl.detach(), "boundary": l_b.detach(), "alpha": a}
        return a * l_gdl + (1.0 - a) * l_b
