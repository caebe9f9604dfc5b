"""Geometry core: distance maps, skeletons, sphere reconstruction, DDT refinement.

numpy/scipy only at import time; the torch soft skeleton (``soft_skeleton``, ``soft_erode``,
``soft_dilate``, ``soft_skeleton_volume``) is re-exported lazily, so importing this package does
not import torch. Arrays are (z, y, x); ``spacing`` is (dz, dy, dx) in mm.
"""

from .components import (
    BLOB_MAX_DIAMETERS,
    BLOB_RATIO,
    CONFIDENCE_MAX_MM3,
    fill_cavities,
    remove_blob_components,
    remove_small_components,
    remove_specks_and_blobs,
    remove_unconfident_components,
)
from .distance import (
    LOCAL_RADIUS_OFFSET_VOX,
    SKELETON_RADIUS_OFFSET_VOX,
    clip_radius_spikes,
    distance_maps,
    edt_mm,
    local_radius_mm,
    radius_from_scale,
    scale_classes,
    signed_distance,
    voxel_unit_mm,
)
from .refiner import Refiner
from .skeleton import (
    CenterlineGraph,
    centerline_graph,
    measured_centerline_graph,
    measuring_skeleton,
    pseudo_skeleton,
    skeletonize_mask,
)
from .spheres import (
    DEFAULT_TP,
    DEFAULT_TR,
    DEFAULT_TRUNCATE,
    EmptySkeletonWarning,
    RefineResult,
    refine,
    soft_reconstruction,
    spheres_as_points,
    union_of_balls,
)

_LAZY_TORCH = ("soft_skeleton", "soft_erode", "soft_dilate", "soft_open", "soft_skeleton_volume")

__all__ = [
    "DEFAULT_TP",
    "DEFAULT_TR",
    "DEFAULT_TRUNCATE",
    "LOCAL_RADIUS_OFFSET_VOX",
    "SKELETON_RADIUS_OFFSET_VOX",
    "CenterlineGraph",
    "EmptySkeletonWarning",
    "RefineResult",
    "Refiner",
    "centerline_graph",
    "clip_radius_spikes",
    "distance_maps",
    "edt_mm",
    "remove_small_components",
    "remove_blob_components",
    "fill_cavities",
    "remove_specks_and_blobs",
    "CONFIDENCE_MAX_MM3",
    "remove_unconfident_components",
    "BLOB_MAX_DIAMETERS",
    "BLOB_RATIO",
    "local_radius_mm",
    "pseudo_skeleton",
    "radius_from_scale",
    "refine",
    "scale_classes",
    "signed_distance",
    "skeletonize_mask",
    "measured_centerline_graph",
    "measuring_skeleton",
    "soft_reconstruction",
    "spheres_as_points",
    "union_of_balls",
    "voxel_unit_mm",
    *_LAZY_TORCH,
]


def __getattr__(name: str):
    if name in _LAZY_TORCH:
        import importlib

        mod = importlib.import_module(f"{__name__}.soft_skeleton")
        # ``soft_skeleton`` resolves to the (callable) submodule: see soft_skeleton._CallableModule
        return mod if name == "soft_skeleton" else getattr(mod, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
