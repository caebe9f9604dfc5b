"""Topology-aware metrics and error maps for tubular masks (no Qt, no napari).

- :func:`betti_numbers`, :func:`euler_number`: 26-connected foreground, 6-connected background.
- :func:`compute_metrics`: Dice, clDice (Tprec/Tsens), Betti errors, HD95/ASSD (mm), volumes
  (mL), centerline lengths (mm).
- :func:`error_map` (with a reference) and :func:`self_check` (without one): label volumes with
  the classes of :data:`ERROR_CLASSES` and ranked :class:`ErrorSite` lists.
"""

from .betti import betti_numbers, bounding_box, euler_number
from .errors import ERROR_CLASSES, ComponentInfo, ErrorReport, ErrorSite, error_map, self_check
from .metrics import (
    METRIC_KEYS,
    binarize,
    centerline_length_mm,
    compute_metrics,
    dice_score,
    hard_skeleton,
    hard_skeletons,
    mask_centerline_length_mm,
    surface_distances,
    surface_voxels,
)

__all__ = [
    "ERROR_CLASSES",
    "METRIC_KEYS",
    "ComponentInfo",
    "ErrorReport",
    "ErrorSite",
    "betti_numbers",
    "binarize",
    "bounding_box",
    "centerline_length_mm",
    "compute_metrics",
    "dice_score",
    "error_map",
    "euler_number",
    "hard_skeleton",
    "hard_skeletons",
    "mask_centerline_length_mm",
    "self_check",
    "surface_distances",
    "surface_voxels",
]
