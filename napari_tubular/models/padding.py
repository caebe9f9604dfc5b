"""Padding outside a scanner's field of view: recognise it and hide it from the network.

CT is reconstructed inside a circle (or a cropped body region) and stored in a box: the voxels
outside hold one constant value (-1024, -2048, -3024 HU, 0 in an export, 0 around a
skull-stripped MR). The network has never seen such a cliff next to soft tissue, and labelled
a band 0-15 mm inside the rim as vessel (an outside audit: 21.9 mL of "vessels" in a
vessel-free volume cut by a circular field of view; a 6,686-voxel false tube along the rim of a
300 x 400 x 400 CT). :func:`padding_mask` finds the padding, :func:`fill_padding` replaces it
with intensities drawn from the band just inside it (the network sees tissue continuing
there), and inference sets the probability to 0 on it.

What counts as padding: one exact value held by a solid region that touches the volume's
border, between :data:`MIN_FRACTION` and :data:`MAX_FRACTION` of the voxels, and darker than
nearly all of the rest. Noise never repeats one value over a solid region, so noisy air around
a body is not padding (the model was trained with such air), and neither is the background of
a noise-free phantom (most of its voxels: above :data:`MAX_FRACTION`).
"""

from __future__ import annotations

import numpy as np

__all__ = ["padding_mask", "fill_padding", "MIN_FRACTION", "MAX_FRACTION"]

#: share of the voxels a padding region must hold
MIN_FRACTION = 0.005
MAX_FRACTION = 0.6
#: share of a padding region's voxels whose 6 neighbours are all padding (a solid region, not
#: scattered voxels that an integer image's noise happens to put on one value)
MIN_SOLID = 0.8
#: the padding value must lie below this percentile of the other voxels
DARK_PERCENTILE = 2.0
#: candidate values: the minimum and the most frequent value of a subsample of this size
_SAMPLE = 2_000_000
#: the band just inside the padding whose intensities fill it (voxels)
BAND_VOXELS = 3


def _candidates(image: np.ndarray) -> list[float]:
    flat = image.ravel()
    sample = flat[:: max(1, flat.size // _SAMPLE)]
    values, counts = np.unique(sample, return_counts=True)
    out = [float(values[0])]
    mode = float(values[int(np.argmax(counts))])
    if mode != out[0] and counts.max() >= MIN_FRACTION * sample.size:
        out.append(mode)
    return out


def padding_mask(image: np.ndarray) -> tuple[np.ndarray, float] | None:
    """``(mask, value)`` of the padding outside the field of view, or None if there is none.

    The mask holds the voxels of ``value`` 6-connected to the volume's border (the solid region
    at the edge; the same value inside, e.g. air clipped to -1024 in the lungs, is kept).
    """
    from scipy import ndimage

    arr = np.asarray(image)
    if arr.ndim != 3 or arr.size == 0:
        return None
    for value in _candidates(arr):
        plateau = arr == value
        n = int(np.count_nonzero(plateau))
        if not MIN_FRACTION * arr.size <= n <= MAX_FRACTION * arr.size:
            continue
        labels, count = ndimage.label(plateau)
        if count == 0:
            continue
        border = np.zeros(count + 1, bool)
        for axis in range(3):
            for index in (0, -1):
                border[np.unique(np.take(labels, index, axis=axis))] = True
        border[0] = False
        mask = border[labels]
        del labels
        n = int(np.count_nonzero(mask))
        if not MIN_FRACTION * arr.size <= n <= MAX_FRACTION * arr.size:
            continue
        solid = ndimage.binary_erosion(mask, border_value=1)
        if np.count_nonzero(solid) < MIN_SOLID * n:
            continue
        rest = arr[~plateau]
        if rest.size == 0 or float(np.ptp(rest)) == 0.0:
            continue
        rest = rest[:: max(1, rest.size // _SAMPLE)]
        if value >= float(np.percentile(rest, DARK_PERCENTILE)):
            continue
        return mask, value
    return None


def fill_padding(image: np.ndarray, mask: np.ndarray, seed: int = 0) -> np.ndarray:
    """A float32 copy of ``image`` with the ``mask`` voxels drawn (uniformly, independently)
    from the intensities of the band of :data:`BAND_VOXELS` voxels just inside the padding,
    clipped to that band's 5th-95th percentiles (a bright vessel cut by the rim does not spread
    into the fill)."""
    from scipy import ndimage

    out = np.array(image, dtype=np.float32, copy=True)
    band = ndimage.binary_dilation(mask, iterations=BAND_VOXELS) & ~mask
    values = out[band]
    if values.size == 0:
        values = out[~mask]
    lo, hi = np.percentile(values, [5.0, 95.0])
    values = np.clip(values, lo, hi)
    rng = np.random.default_rng(seed)
    out[mask] = rng.choice(values, size=int(np.count_nonzero(mask)))
    return out
