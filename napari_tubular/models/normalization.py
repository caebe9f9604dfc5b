"""Intensity normalisation shared by training and inference (numpy only, no torch).

A model file stores its normalisation as a small dict; training and inference both call
:func:`normalize_intensity` with it, so the network always sees the same intensity scale.

Kinds:

* ``{"kind": "window", "low": -100, "high": 600}``: clip to ``[low, high]`` and map to ``[0, 1]``
  (CT, Hounsfield units).
* ``{"kind": "percentile", "lower": 0.5, "upper": 99.5}``: per volume, clip to those percentiles
  and map to ``[0, 1]`` (MR, microscopy). Percentiles of volumes over 4M voxels are taken on a
  regular subsample of about 4M voxels (deterministic).
* ``{"kind": "zscore"}`` (per-volume mean/std) or ``{"kind": "zscore", "mean": m, "std": s}``.
* ``{"kind": "none"}``: cast to float32 only.
"""

from __future__ import annotations

import numpy as np

__all__ = ["normalize_intensity", "validate_normalization", "NORMALIZATION_KINDS"]

NORMALIZATION_KINDS = ("window", "percentile", "zscore", "none")
_SAMPLE = 4_000_000


def validate_normalization(normalization: dict) -> dict:
    """Check a normalisation dict and return a copy with defaults filled in.

    Raises:
        ValueError: unknown kind, missing or inconsistent values.
    """
    if not isinstance(normalization, dict) or "kind" not in normalization:
        raise ValueError(
            f"normalization must be a dict with a 'kind' in {NORMALIZATION_KINDS}, got {normalization!r}"
        )
    n = dict(normalization)
    kind = n["kind"]
    if kind == "window":
        try:
            low, high = float(n["low"]), float(n["high"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f"window normalization needs numeric 'low' and 'high', got {normalization!r}"
            ) from exc
        if not high > low:
            raise ValueError(f"window normalization needs high > low, got low={low}, high={high}")
        n.update(low=low, high=high)
    elif kind == "percentile":
        lower, upper = float(n.get("lower", 0.5)), float(n.get("upper", 99.5))
        if not 0.0 <= lower < upper <= 100.0:
            raise ValueError(
                f"percentile normalization needs 0 <= lower < upper <= 100, got {lower}, {upper}"
            )
        n.update(lower=lower, upper=upper)
    elif kind == "zscore":
        if ("mean" in n) != ("std" in n):
            raise ValueError("zscore normalization needs both 'mean' and 'std' or neither")
        if "std" in n and not float(n["std"]) > 0:
            raise ValueError(f"zscore normalization needs std > 0, got {n['std']}")
    elif kind != "none":
        raise ValueError(
            f"unknown normalization kind {kind!r}; expected one of {NORMALIZATION_KINDS}"
        )
    return n


def normalize_intensity(image: np.ndarray, normalization: dict) -> np.ndarray:
    """Map raw intensities to the scale the network was trained on.

    Args:
        image: array of any real dtype and shape (usually (Z, Y, X)); NaN is not allowed
            (``napari_tubular.io.read_volume`` fills it).
        normalization: dict, see the module docstring.

    Returns:
        float32 array of the same shape (a new array; the input is not modified).
    """
    n = validate_normalization(normalization)
    x = np.asarray(image)
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise ValueError(f"image must be a real numeric array, got dtype {x.dtype}")
    out = x.astype(np.float32, copy=True)
    kind = n["kind"]
    if kind == "window":
        low, high = n["low"], n["high"]
        np.clip(out, low, high, out=out)
        out -= np.float32(low)
        out *= np.float32(1.0 / (high - low))
    elif kind == "percentile":
        if out.size == 0:
            return out
        flat = out.ravel()
        sample = flat[:: max(1, flat.size // _SAMPLE)]
        low, high = np.percentile(sample, [n["lower"], n["upper"]])
        if high <= low:
            out[...] = 0.0
            return out
        np.clip(out, low, high, out=out)
        out -= np.float32(low)
        out *= np.float32(1.0 / (high - low))
    elif kind == "zscore":
        if "mean" in n:
            mean, std = float(n["mean"]), float(n["std"])
        else:
            mean, std = float(out.mean(dtype=np.float64)), float(out.std(dtype=np.float64))
            std = std if std > 0 else 1.0
        out -= np.float32(mean)
        out *= np.float32(1.0 / std)
    return out
