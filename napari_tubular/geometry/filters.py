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
