"""Large vessels from a second network pass on a grid twice as coarse.

The default model sees windows of 64 voxels at 0.8 mm and its scale head ends near 13 mm of
radius. An aorta of 15-18 mm radius along the slice axis came out as a hollow shell or was
missed (Dice 0.67 and 0.03; an outside audit's 15 mm vessel 0.51): inside such a tube a window
sees uniform brightness and no edge. On a grid twice as coarse the same vessel has half the
radius in voxels, the size the network was trained on, and it is found whole.

``predict`` runs that pass (see ``large_vessels`` there) and merges it here, under three rules
that keep everything else as the first pass made it:

* only components of the coarse pass's ``P > 0.5`` with a voxel of radius >= ``min_radius_mm``
  (:data:`LARGE_VESSEL_MIN_RADIUS_MM`) count, and only their thick parts (an opening with a ball
  of :data:`LARGE_VESSEL_OPENING_MM`), so thin branches keep the first pass's answer;
* such a component must look like a tube, not an organ: measured on its part at least half its
  largest radius thick, the middle principal extent at most ``2.5 r`` (a round cross-section of
  diameter ``2 r``), the longest at least ``3.5 r``, and ends neither tapering like an ellipsoid
  nor swelling (:func:`~napari_tubular.geometry.components.end_fullness` in [0.35, 1.5]): a
  kidney, spleen or liver piece the coarse pass labels whole fails these (organ phantoms: no
  component merged on 28 volumes);
* only voxels where the first pass said background (``P < 0.5``) take the coarse pass's
  probability (at least :data:`FILL_PROBABILITY`: its mask's pinholes are closed first) and
  radius, and that radius is capped by the distance to the edge of the merged ``P > 0.5``
  (plus half a voxel: the geometry-aware refinement's balls then stay inside the tube;
  without the cap an 18 mm tube came out 20 % too large).
"""

from __future__ import annotations

import numpy as np

from .components import bounding_box, end_fullness, principal_extents_mm
from .distance import edt_mm

LARGE_VESSEL_MIN_RADIUS_MM = 11.0
"""Coarse-pass components with a voxel of at least this radius are candidates (the first pass
is reliable to about 13 mm; along the slice axis it failed from 15 mm)."""
LARGE_VESSEL_OPENING_MM = 4.0
"""Only the parts of a candidate where a ball of this radius fits are merged."""
FILL_PROBABILITY = 0.75
"""Probability given to the merged voxels where the coarse pass's own is lower."""
_THICK_FRACTION = 0.5
_MAX_CROSS = 2.5
_MIN_LENGTH = 3.5
_ENDS = (0.35, 1.5)


def _opening(mask: np.ndarray, radius_mm: float, spacing) -> np.ndarray:
    """Morphological opening with a ball of ``radius_mm`` (erosion and dilation by distance)."""
    core = edt_mm(mask, spacing) > radius_mm
    if not core.any():
        return core
    return (edt_mm(~core, spacing) <= radius_mm) & mask


def _closing(mask: np.ndarray, radius_mm: float, spacing) -> np.ndarray:
    """Morphological closing with a ball of ``radius_mm`` (the volume's faces do not erode)."""
    grown = edt_mm(~mask, spacing) <= radius_mm
    return edt_mm(grown, spacing) > radius_mm


def _tube_like(thick: np.ndarray, r_max: float, spacing) -> tuple[bool, dict]:
    ext = principal_extents_mm(thick, spacing)
    ends = end_fullness(thick, spacing)
    ok = (ext[1] <= _MAX_CROSS * r_max and ext[2] >= _MIN_LENGTH * r_max
          and _ENDS[0] <= ends <= _ENDS[1])
    return bool(ok), {"extents_mm": [round(float(e), 1) for e in ext], "ends": round(ends, 2)}


def large_vessel_regions(probability: np.ndarray, radius_mm: np.ndarray, spacing,
                         min_radius_mm: float = LARGE_VESSEL_MIN_RADIUS_MM,
                         stats: dict | None = None) -> np.ndarray | None:
    """Where the coarse pass's large, tube-like vessels are (on the coarse pass's own grid).

    Args:
        probability, radius_mm: the coarse pass's maps (radius in true mm), same shape.
        spacing: that grid's voxel size in mm.
        min_radius_mm: a component counts only with a voxel of at least this radius.
        stats: filled with ``candidates`` (components with such a radius) and ``merged``
            (those that looked like tubes), each a list of dicts (radius, extents, ends).

    Returns:
        bool mask of the thick parts of the tube-like components, or None when there is none.
    """
    from scipy import ndimage

    if probability.shape != radius_mm.shape:
        raise ValueError(f"probability {probability.shape} and radius {radius_mm.shape} differ")
    stats = {} if stats is None else stats
    stats.setdefault("candidates", [])
    stats.setdefault("merged", [])
    found = probability > 0.5
    if not found.any() or float(radius_mm[found].max()) < min_radius_mm:
        return None
    # pinholes: the network's answer inside a thick tube can miss single voxels (a line of
    # P = 0 along an 18 mm tube), which would stay holes through the opening below
    found = _closing(found, 1.5 * float(max(spacing)), spacing)
    labels, n = ndimage.label(found, structure=np.ones((3, 3, 3), bool))
    r_max = ndimage.maximum(radius_mm, labels, index=np.arange(1, n + 1))
    region = None
    for i in np.flatnonzero(np.asarray(r_max) >= min_radius_mm) + 1:
        box = bounding_box(labels == i)
        comp = labels[box] == i
        r = float(r_max[i - 1])
        thick = _opening(comp, _THICK_FRACTION * r, spacing)
        if thick.any():
            ok, info = _tube_like(thick, r, spacing)
        else:
            ok, info = False, {"extents_mm": None, "ends": None}
        row = {"radius_mm": round(r, 1), **info}
        stats["candidates"].append(row)
        if not ok:
            continue
        stats["merged"].append(row)
        part = _opening(comp, LARGE_VESSEL_OPENING_MM, spacing)
        if region is None:
            region = np.zeros(found.shape, bool)
        region[box] |= part
    return region if region is not None and region.any() else None


def merge_large_vessels(probability: np.ndarray, radius_mm: np.ndarray,
                        coarse_probability: np.ndarray, coarse_radius_mm: np.ndarray,
                        region: np.ndarray, spacing) -> int:
    """Merge the coarse pass into the first pass's maps, in place, inside ``region``.

    All arrays on the same (native) grid. Voxels of ``region`` where ``probability < 0.5`` take
    the coarse pass's probability, at least :data:`FILL_PROBABILITY`, and the larger radius of
    the two passes, capped by the distance to the edge of the merged ``probability > 0.5`` plus
    half the finest voxel.

    Returns:
        the number of voxels that took the coarse pass's values.
    """
    shapes = {a.shape for a in (probability, radius_mm, coarse_probability, coarse_radius_mm,
                                region)}
    if len(shapes) != 1:
        raise ValueError(f"all maps must have one shape, got {sorted(shapes)}")
    take = region & (probability < 0.5)
    n = int(np.count_nonzero(take))
    if not n:
        return 0
    # at least FILL_PROBABILITY: the region is vessel by the coarse pass's word (its pinholes
    # closed), whatever its interpolated probability at a voxel
    probability[take] = np.maximum(coarse_probability[take], FILL_PROBABILITY)
    r_max = float(coarse_radius_mm[take].max())
    margin = int(np.ceil(r_max / float(min(spacing)))) + 2
    box = bounding_box(take, margin=margin)
    inside = edt_mm(probability[box] > 0.5, spacing) + 0.5 * float(min(spacing))
    t = take[box]
    r_box = radius_mm[box]
    r_box[t] = np.minimum(np.maximum(r_box[t], coarse_radius_mm[box][t]), inside[t])
    return n
