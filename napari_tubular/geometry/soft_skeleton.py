"""Differentiable soft skeleton (clDice, METHODS.md section 2), in torch.

Morphology by ``amin``/``amax`` over a stack of shifted views of the tensor (edge-replicated),
not ``max_pool3d``, with identical values (``tests/geometry/test_soft_skeleton.py`` checks it
against the ``max_pool3d`` formulation). Replicating the edge voxel is the same as the pools'
implicit -inf/+inf padding, because the centre voxel is part of every window. Measured on CPU
(1 thread, (1, 1, 48^3), ``iters=4``, forward + backward, one run): max_pool3d 0.26 s, this
module 0.13 s (forward alone 0.17 s vs 0.02 s); pairwise ``torch.minimum``/``maximum`` was slower
than max_pool3d (its backward is slow), hence the stacks.
``amin``/``amax`` share the gradient evenly between tied voxels (max_pool3d routes it to one).

Tensors are (B, C, Z, Y, X), values in [0, 1] (probabilities or binary masks).
"""

from __future__ import annotations

import sys
import types

import numpy as np
import torch

__all__ = ["soft_dilate", "soft_erode", "soft_open", "soft_skeleton", "soft_skeleton_volume"]


def _check5d(x, name: str = "x") -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (B, C, Z, Y, X), got {type(x).__name__}")
    if x.dim() != 5:
        raise ValueError(f"{name} must have shape (B, C, Z, Y, X), got {x.dim()}-D shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating point tensor, got {x.dtype}")
    return x


def _pad1(x: torch.Tensor, dims) -> torch.Tensor:
    """Edge-replicate one voxel on both sides of each of ``dims`` (spatial dims 2, 3, 4)."""
    for dim in dims:
        n = x.shape[dim]
        x = torch.cat([x.narrow(dim, 0, 1), x, x.narrow(dim, n - 1, 1)], dim=dim)
    return x


def _max3(x: torch.Tensor, dim: int) -> torch.Tensor:
    """3-voxel max-filter along ``dim``: ``amax`` over a stack of the three shifted views."""
    n = x.shape[dim]
    xp = _pad1(x, (dim,))
    return torch.stack([xp.narrow(dim, 0, n), xp.narrow(dim, 1, n), xp.narrow(dim, 2, n)]).amax(0)


def soft_erode(x: torch.Tensor) -> torch.Tensor:
    """Soft erosion: min over the 6-neighbourhood cross and the voxel itself.

    Equal to the min of the three 1-D 3-voxel min-pools along z, y and x (METHODS.md section 2),
    computed as one ``amin`` over a stack of 7 shifted views (fast forward and backward on CPU).

    Args:
        x: float tensor (B, C, Z, Y, X).

    Returns:
        tensor of the same shape.
    """
    _check5d(x)
    Z, Y, X = x.shape[2:]
    xp = _pad1(x, (2, 3, 4))
    c = xp[:, :, 1 : Z + 1, 1 : Y + 1, 1 : X + 1]
    views = [
        c,
        xp[:, :, 0:Z, 1 : Y + 1, 1 : X + 1],
        xp[:, :, 2 : Z + 2, 1 : Y + 1, 1 : X + 1],
        xp[:, :, 1 : Z + 1, 0:Y, 1 : X + 1],
        xp[:, :, 1 : Z + 1, 2 : Y + 2, 1 : X + 1],
        xp[:, :, 1 : Z + 1, 1 : Y + 1, 0:X],
        xp[:, :, 1 : Z + 1, 1 : Y + 1, 2 : X + 2],
    ]
    return torch.stack(views).amin(0)


def soft_dilate(x: torch.Tensor) -> torch.Tensor:
    """Soft dilation: 3x3x3 max-filter (separable), same shape as ``x`` (B, C, Z, Y, X)."""
    _check5d(x)
    return _max3(_max3(_max3(x, 2), 3), 4)


def soft_open(x: torch.Tensor) -> torch.Tensor:
    """Soft opening ``dilate(erode(x))``."""
    return soft_dilate(soft_erode(x))


def soft_skeleton(x: torch.Tensor, iters: int = 10) -> torch.Tensor:
    """Soft skeleton of ``x`` (Shit et al., clDice).

    ``skel = relu(x - open(x))``; then ``iters`` times: ``x = erode(x)``,
    ``delta = relu(x - open(x))``, ``skel += relu(delta - skel * delta)``.
    ``iters`` must be at least the largest radius in voxels or thick tubes keep no skeleton.

    Args:
        x: float tensor (B, C, Z, Y, X), values in [0, 1].
        iters: number of erosion steps (>= 0).

    Returns:
        tensor of the same shape, values in [0, 1]; differentiable w.r.t. ``x``.
    """
    _check5d(x)
    if isinstance(iters, bool) or not isinstance(iters, int | np.integer) or iters < 0:
        raise ValueError(f"iters must be a non-negative integer, got {iters!r}")
    skel = torch.relu(x - soft_open(x))
    for _ in range(int(iters)):
        x = soft_erode(x)
        delta = torch.relu(x - soft_open(x))
        skel = skel + torch.relu(delta - skel * delta)
    return skel


def soft_skeleton_volume(volume, iters: int | None = None, *, device: str = "cpu") -> np.ndarray:
    """Soft skeleton of a (Z, Y, X) probability map or mask, as a float32 viewer layer.

    Args:
        volume: float or bool array (Z, Y, X), values in [0, 1].
        iters: erosion steps; default: the largest EDT of ``volume > 0.5`` in voxels, rounded up
            (+1), so that every tube keeps a skeleton.
        device: torch device ("cpu", "cuda").

    Returns:
        float32 (Z, Y, X), values in [0, 1].
    """
    v = np.asarray(volume)
    if v.ndim != 3:
        raise ValueError(f"volume must be a 3-D array (z, y, x), got shape {v.shape}")
    v = v.astype(np.float32)
    if iters is None:
        from .distance import edt_mm

        iters = int(np.ceil(float(edt_mm(v > 0.5, (1.0, 1.0, 1.0)).max()))) + 1
    with torch.no_grad():
        t = torch.from_numpy(np.ascontiguousarray(v))[None, None].to(device)
        s = soft_skeleton(t, iters)
    return s[0, 0].cpu().numpy().astype(np.float32)


class _CallableModule(types.ModuleType):
    """``napari_tubular.geometry.soft_skeleton`` is both this module and its main function.

    Importing the submodule makes the package attribute ``soft_skeleton`` refer to the module, so
    ``from napari_tubular.geometry import soft_skeleton`` may give the module; making the module
    callable (delegating to :func:`soft_skeleton`) keeps ``soft_skeleton(x, iters)`` working
    either way.
    """

    def __call__(self, x: torch.Tensor, iters: int = 10) -> torch.Tensor:
        return soft_skeleton(x, iters)


sys.modules[__name__].__class__ = _CallableModule
