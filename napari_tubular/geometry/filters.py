"""Small image filters shared by the post-processing steps."""

from __future__ import annotations

import numpy as np


def masked_gaussian_mean(values: np.ndarray, mask: np.ndarray, sigma, floor: float = 1e-6,
                         return_weight: bool = False):
    """Gaussian-weighted mean of ``values`` over the voxels of ``mask`` only, at every voxel
    (normalised convolution): ``G * (values . mask) / max(G * mask, floor)``.

    Args:
        values: float array (any dimensionality).
        mask: bool array of the same shape: the voxels that count.
        sigma: Gaussian standard deviation in voxels (a number or one per axis).
        floor: the smallest weight divided by (where no masked voxel is near, the mean is
            about 0 rather than undefined).
        return_weight: also return ``G * mask`` (the share of masked voxels around each voxel).

    Returns:
        float32 mean (and the weight, if asked for).
    """
    from scipy import ndimage

    m = np.asarray(mask, dtype=bool)
    v = np.asarray(values, dtype=np.float32)
    if v.shape != m.shape:
        raise ValueError(f"values shape {v.shape} != mask shape {m.shape}")
    weight = ndimage.gaussian_filter(m.astype(np.float32), sigma)
    mean = ndimage.gaussian_filter(np.where(m, v, np.float32(0)), sigma)
    mean /= np.maximum(weight, np.float32(floor))
    if return_weight:
        return mean, weight
    return mean


def robust_sigma(values: np.ndarray) -> float:
    """The standard deviation of Gaussian noise estimated robustly: 1.4826 x the median
    absolute deviation (edges and outliers among ``values`` barely move it); 0 when empty."""
    v = np.asarray(values)
    if not v.size:
        return 0.0
    return 1.4826 * float(np.median(np.abs(v - np.median(v))))


def dilate_cube(mask: np.ndarray, radius: int) -> np.ndarray:
    """``mask`` dilated by the cube of ``2 radius + 1`` voxels a side (bool): the same as
    ``scipy.ndimage.binary_dilation(mask, np.ones((3, 3, 3)), iterations=radius)`` (outside the
    array is background). A cube is the product of three segments, so each axis in turn is
    OR-ed with its shifts by up to ``radius`` voxels (a 256³ box, radius 1: about 10 times
    faster than scipy's 0.25 s)."""
    m = np.asarray(mask, dtype=bool)
    out = m.copy()
    if radius <= 0 or not m.any():
        return out
    for axis in range(m.ndim):
        src = out.copy()
        for shift in range(1, min(int(radius), m.shape[axis] - 1) + 1):
            lo = [slice(None)] * m.ndim
            hi = [slice(None)] * m.ndim
            lo[axis], hi[axis] = slice(None, -shift), slice(shift, None)
            out[tuple(hi)] |= src[tuple(lo)]
            out[tuple(lo)] |= src[tuple(hi)]
    return out
