"""Connected-component clean-up of binary segmentations (26-connectivity, physical sizes)."""

from __future__ import annotations

import numpy as np

from ._validate import check_mask, check_spacing


def bounding_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, slice, slice] | None:
    """Slices of the smallest box holding every non-zero voxel, grown by ``margin`` (clipped).

    Args:
        mask: array, shape (Z, Y, X).
        margin: voxels added on each side (clipped to the array).

    Returns:
        A tuple of 3 slices, or None when the mask is empty.
    """
    mask = np.asarray(mask)
    slices = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        nz = np.flatnonzero(np.any(mask, axis=other))
        if nz.size == 0:
            return None
        slices.append(
            slice(max(int(nz[0]) - margin, 0), min(int(nz[-1]) + 1 + margin, mask.shape[axis]))
        )
    return tuple(slices)


def remove_small_components(mask, spacing, min_size_mm3: float) -> tuple[np.ndarray, int]:
    """Drop 26-connected foreground components smaller than ``min_size_mm3``.

    Most Betti-0 errors of a network's output are specks of a few voxels (noise, the tip of a
    distractor); a physical size threshold removes them independently of the voxel size.

    Args:
        mask: bool-like, shape (Z, Y, X).
        spacing: voxel size (dz, dy, dx) in mm.
        min_size_mm3: smallest component volume kept, in mm^3 (0 keeps everything).

    Returns:
        ``(cleaned, n_removed)``: uint8 (Z, Y, X) mask and the number of removed components.
    """
    import cc3d

    m = check_mask(mask)
    sp = check_spacing(spacing)
    if not np.isfinite(min_size_mm3) or min_size_mm3 < 0:
        raise ValueError(f"min_size_mm3 must be a finite number >= 0, got {min_size_mm3}")
    if min_size_mm3 == 0 or not m.any():
        return m.astype(np.uint8), 0
    labels, n = cc3d.connected_components(m.view(np.uint8), connectivity=26, return_N=True)
    # count and index the foreground voxels only (a few % of the volume): a whole-volume
    # bincount and lookup took 5x the labelling on 256^3, in every slider move of the viewer
    fg = np.flatnonzero(m)
    fg_labels = labels.ravel()[fg]
    volume_mm3 = np.bincount(fg_labels, minlength=n + 1) * float(np.prod(sp))
    keep = volume_mm3 >= float(min_size_mm3)
    keep[0] = False
    out = m.astype(np.uint8)
    out.ravel()[fg[~keep[fg_labels]]] = 0
    return out, int(n - keep[1:].sum())
