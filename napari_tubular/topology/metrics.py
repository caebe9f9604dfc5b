"""Overlap, topology and surface-distance metrics between a predicted and a reference mask.

Definitions (docs/METHODS.md, sections 2 and 3):

- ``dice = 2 |P & R| / (|P| + |R|)``.
- ``tprec = |S_P & R| / |S_P|``, ``tsens = |S_R & P| / |S_R|`` with hard skeletons ``S``
  (the guarded skeleton: a non-empty component always keeps at least one skeleton voxel);
  ``cldice = 2 tprec tsens / (tprec + tsens)``.
- Betti numbers ``(b0, b1, b2)`` with 26-connected foreground (``betti.py``) and their absolute
  differences ``b*_error``.
- Surface voxels: the mask minus its erosion by the 6-neighbour cross (voxels on the array
  border count as surface). ``hd95_mm = max(P95(d(P->R)), P95(d(R->P)))`` (linear
  interpolation between order statistics, as numpy/MONAI) and ``assd_mm`` = mean of the
  distances in both directions pooled, where ``d(A->B)`` are the Euclidean distances in mm
  (with the voxel spacing) from each surface voxel of A to the nearest surface voxel of B.
- ``volume_*_ml`` = voxel count x voxel volume / 1000; ``length_*_mm`` = centerline length: sum
  over 26-neighbour pairs of skeleton voxels of the physical step length.

Empty masks (every value stays a finite float or None, so the dict is JSON-serialisable):

=========================  =============  ===============================  ==================
case                       dice, cldice   tprec, tsens                     hd95_mm, assd_mm
=========================  =============  ===============================  ==================
both empty                 1.0            1.0                              0.0
empty prediction only      0.0            0.0 (no skeleton to be right)    None (JSON null)
empty reference only       0.0            0.0                              None (JSON null)
=========================  =============  ===============================  ==================

A distance to an empty set is infinite; JSON has no infinity, hence ``None``.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from ..geometry._validate import check_same_shape, check_spacing, refuse_non_real_mask
from ..geometry.components import voxel_coords
from ..geometry.skeleton import _isotropic_factors, measuring_skeleton, skeletonize_mask
from ._sparse import smoothed_path
from .betti import _as_bool, betti_numbers, bounding_box, component_count

__all__ = [
    "METRIC_KEYS",
    "binarize",
    "centerline_length_mm",
    "mask_centerline_length_mm",
    "cldice_scores",
    "compute_metrics",
    "dice_score",
    "hard_skeleton",
    "hard_skeletons",
    "surface_distances",
    "surface_voxels",
]

METRIC_KEYS: tuple[str, ...] = (
    "dice",
    "cldice",
    "tprec",
    "tsens",
    "betti_pred",
    "betti_ref",
    "b0_error",
    "b1_error",
    "b2_error",
    "hd95_mm",
    "assd_mm",
    "volume_pred_ml",
    "volume_ref_ml",
    "length_pred_mm",
    "length_ref_mm",
)


def binarize(arr: Any, name: str = "mask") -> np.ndarray:
    """Foreground of a binary mask or label volume, refusing probabilities.

    bool arrays are used as they are; integer arrays (and floats holding only whole numbers,
    as label volumes saved as float are) give ``arr != 0`` (every label is foreground);
    floats with fractional values (probabilities, soft masks) raise.

    Args:
        arr: array, shape (Z, Y, X).
        name: argument name used in error messages.

    Returns:
        bool, shape (Z, Y, X), C-contiguous.

    Raises:
        ValueError: not 3-D, empty, negative labels, NaN/inf, fractional values, non-numeric.
    """
    a = np.asarray(arr)
    if a.ndim != 3:
        raise ValueError(f"{name} must be a 3-D (z, y, x) array, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} is empty (shape {a.shape})")
    if a.dtype == bool:
        return np.ascontiguousarray(a)
    if a.dtype.kind in "iu":
        if a.dtype.kind == "i" and a.min() < 0:
            raise ValueError(
                f"{name} has negative values (min {a.min()}); expected a binary mask or labels >= 0"
            )
        return np.ascontiguousarray(a != 0)
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} contains NaN or infinite values")
        if a.min() < 0:
            raise ValueError(
                f"{name} has negative values (min {a.min():g}); expected a binary mask or labels >= 0"
            )
        fractional = a != np.floor(a)
        if fractional.any():
            example = float(a[fractional].flat[0])
            # evaluate's --threshold binarises the prediction only (an audit: a probability
            # map given as the reference was told to pass the --threshold it already had)
            hint = ("a reference must be a mask: threshold it before evaluating, e.g. "
                    "mask = prob > 0.5" if str(name).startswith("reference") else
                    "threshold it first, e.g. mask = prob > 0.5 (CLI: --threshold 0.5)")
            raise ValueError(
                f"{name} is not binary: it holds fractional values such as {example:g} "
                f"(a probability map?); {hint}"
            )
        return np.ascontiguousarray(a != 0)
    refuse_non_real_mask(a, name)
    raise ValueError(f"{name} must be a numeric or boolean array, got dtype {a.dtype}")


#: crops of at least this many voxels have their two masks' skeletons, Betti numbers and
#: lengths computed in two threads (below it, a thread costs more than it saves)
PARALLEL_MIN_VOXELS = 1_000_000


def both(first, second, *, parallel: bool = True):
    """``(first(), second())``, the two calls in two threads when ``parallel`` (numpy,
    scikit-image's thinning, cc3d and edt release the GIL: the two masks of a pair are thinned
    in about half the time on two cores). An exception of either call is raised."""
    if not parallel or (os.cpu_count() or 1) < 2:
        return first(), second()
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(second)
        a = first()
        return a, pending.result()


def in_two_threads(first, second, rest=(), *, parallel: bool = True) -> list:
    """The results of the calls ``[first, second, *rest]``, in that order. When ``parallel``
    (and the machine has two cores), ``first`` runs in this thread and ``second`` in another,
    and each then takes the next call of ``rest`` as it becomes free: a pair whose two masks
    cost unequal times keeps both cores busy to the end (:func:`both` ran each mask's whole
    part in its own thread, and the faster thread then idled). ``rest``: longest first. The
    first exception in call order is raised, once both threads have stopped."""
    calls = [first, second, *rest]
    if not parallel or (os.cpu_count() or 1) < 2:
        return [call() for call in calls]
    import threading

    results: list = [None] * len(calls)
    errors: dict = {}
    lock = threading.Lock()
    queue = iter(range(2, len(calls)))

    def work(i):
        while i is not None:
            try:
                results[i] = calls[i]()
            except BaseException as exc:  # noqa: BLE001 - raised again below, in this thread
                errors[i] = exc
            with lock:
                i = None if errors else next(queue, None)

    helper = threading.Thread(target=work, args=(1,), daemon=True)
    helper.start()
    work(0)
    helper.join()
    if errors:
        raise errors[min(errors)]
    return results


def hard_skeleton(mask: np.ndarray, spacing=None) -> np.ndarray:
    """Guarded hard skeleton as bool (:func:`napari_tubular.geometry.skeleton.skeletonize_mask`)."""
    return skeletonize_mask(mask, spacing=spacing).view(bool)


def hard_skeletons(pred: np.ndarray, ref: np.ndarray, spacing=None) -> tuple[np.ndarray, np.ndarray]:
    """The hard skeletons of a pair of masks (:func:`hard_skeleton`), in two threads on large
    volumes: what :func:`compute_metrics` and :func:`~napari_tubular.topology.error_map` share
    when both are wanted."""
    p, r = binarize(pred, "pred"), binarize(ref, "ref")
    return both(lambda: hard_skeleton(p, spacing), lambda: hard_skeleton(r, spacing),
                parallel=max(p.size, r.size) >= PARALLEL_MIN_VOXELS)


def skeleton_crop(skeleton, mask: np.ndarray, bbox, name: str, spacing) -> np.ndarray:
    """``skeleton[bbox]`` as bool after a shape check, or the hard skeleton of ``mask[bbox]``."""
    if skeleton is None:
        return hard_skeleton(mask[bbox], spacing)
    s = np.asarray(skeleton)
    if s.shape != mask.shape:
        raise ValueError(f"{name} has shape {s.shape} but the mask has shape {mask.shape}")
    return s[bbox] != 0


def centerline_length_mm(skeleton: np.ndarray, spacing) -> float:
    """Length of a skeleton in mm, measured along its smoothed voxel path.

    The skeleton's 26-neighbour steps (one per voxel pair of its minimum spanning forest) are
    summed between voxel positions smoothed along the path (:func:`_sparse.smoothed_path`):
    the raw staircase of steps reads 9-23 % long on oblique and curved vessels, more on
    anisotropic grids, and the smoothed path within a few per cent. A straight line of N voxels,
    axial or diagonal, has length ``(N-1) * step``.

    Args:
        skeleton: bool, shape (Z, Y, X).
        spacing: voxel size in mm, (dz, dy, dx).
    """
    spacing = check_spacing(spacing)
    # a 3-D mask (an audit: a tensor, a (1, Z, Y, X) array or a 2-D slice gave wrong lengths)
    skeleton = binarize(skeleton, "skeleton")
    coords = voxel_coords(skeleton)
    if len(coords) < 2:
        return 0.0
    a, b, xyz = smoothed_path(coords, skeleton.shape, spacing)
    return float(np.linalg.norm(xyz[a] - xyz[b], axis=1).sum())


def mask_centerline_length_mm(mask: np.ndarray, spacing, voxel_skeleton=None) -> float:
    """Centerline length of a mask in mm, along the smoothed path (:func:`centerline_length_mm`)
    of two skeletons, the longer: the hard skeleton on the voxel grid (clDice's), which ends a
    radius *in voxels* before each free end and face (three radii in mm on 3 mm slices: a vessel
    crossing 63 mm of 3 mm slices read 30 mm), and the skeleton thinned on a near-isotropic grid
    with the faces the mask crosses extended
    (:func:`napari_tubular.geometry.measuring_skeleton`: 62 mm there). Thinning on either grid
    can collapse a shape the other measures (a review: straight tubes centred between fine-grid
    voxels, and a tube leaving through an edge of the volume, read 0-1 mm on the fine grid and
    29-40 mm on the voxel grid), so the longer one is kept. What ``segment``'s report and
    :func:`compute_metrics` give. ``voxel_skeleton``: the mask's hard skeleton when the caller
    has it already (any crop that holds all of it: only its length is used)."""
    from ..geometry.skeleton import measuring_skeleton

    m = binarize(mask, "mask")
    sp = check_spacing(spacing)
    if voxel_skeleton is None:  # the two thinnings in two threads (segment's report)
        (skeleton, fine), voxel_skeleton = both(
            lambda: measuring_skeleton(m, sp), lambda: hard_skeleton(m, sp),
            parallel=m.size >= PARALLEL_MIN_VOXELS)
    else:
        skeleton, fine = measuring_skeleton(m, sp)
    return max(centerline_length_mm(skeleton, fine), centerline_length_mm(voxel_skeleton, sp))


def surface_voxels(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with at least one 6-neighbour outside it (or on the array border).

    Args:
        mask: shape (Z, Y, X); any nonzero voxel is inside (a label array is taken as the mask
            of its labels together: no surface between two labels).

    Returns:
        bool, shape (Z, Y, X).
    """
    # an audit: integer labels went through bitwise AND (1 & 2 == 0): label-label borders
    # were surface, and the result was not a bool mask; a 2-D mask failed with an IndexError
    mask = _as_bool(mask)
    p = np.pad(mask, 1)
    interior = p[1:-1, 1:-1, 1:-1].copy()
    for axis in range(3):
        for shift in (slice(None, -2), slice(2, None)):
            sl = [slice(1, -1)] * 3
            sl[axis] = shift
            interior &= p[tuple(sl)]
    return mask & ~interior


#: :func:`surface_distances` takes feature transforms instead of a k-d tree when the two
#: surfaces hold more than one voxel in this many of their box and lie far apart
#: (:data:`SURFACE_FAR_VOXELS`; a k-d tree is faster below it:
#: on a 256³ box, a dilated vessel tree, one voxel in 160, took 0.3 s; a mask filling the box,
#: one in 39, 10-18 s against the transforms' 4 s)
SURFACE_EDT_RATIO = 100


def _nearest_mm(query: np.ndarray, target: np.ndarray, sp: np.ndarray) -> np.ndarray:
    """For each voxel of ``query`` (bool), the distance in mm to the nearest voxel of ``target``
    (bool, non-empty, same shape), exactly, through scipy's feature transform (the nearest
    target voxel of every voxel; int32 indices, 12 bytes a voxel)."""
    from scipy import ndimage

    nearest = ndimage.distance_transform_edt(~target, sampling=sp, return_distances=False,
                                             return_indices=True)
    q = voxel_coords(query)
    to = nearest[:, q[:, 0], q[:, 1], q[:, 2]].T
    del nearest
    return np.sqrt((((q - to) * sp) ** 2).sum(axis=1))


def surface_distances(pred: np.ndarray, ref: np.ndarray, spacing) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances in mm between two non-empty masks.

    Nearest-neighbour queries on the surface voxels' physical coordinates (a k-d tree): exact
    Euclidean distances with the voxel spacing, and much faster than a distance transform of the
    volume for thin structures, whose surfaces are a small fraction of the volume. When the
    surfaces are large (more than one voxel in :data:`SURFACE_EDT_RATIO` of the box around the
    masks) and far apart (:func:`_far_apart`), the nearest voxel of the other surface comes
    from a feature transform of the box instead (the same exact distances): its time is linear
    in the box, where the k-d tree's queries slow down with their distances (a scale audit: a
    prediction filling a 256³ volume against a vessel tree took 10-18 s in the k-d tree, 4 s
    so; at 512³ about 10 minutes).

    Args:
        pred, ref: bool, shape (Z, Y, X), both non-empty.
        spacing: voxel size in mm, (dz, dy, dx).

    Returns:
        ``(d_pred_to_ref, d_ref_to_pred)``: float64, one distance per surface voxel of ``pred``
        (resp. ``ref``) to the nearest surface voxel of the other mask.
    """
    sp = np.asarray(check_spacing(spacing))
    # an audit: masks of other shapes failed with numpy's "operands could not be broadcast"
    pred, ref = _as_bool(pred, "pred"), _as_bool(ref, "ref")
    check_same_shape(pred, ref, "pred", "ref")
    bbox = bounding_box(pred | ref)
    if bbox is None or not pred.any() or not ref.any():
        raise ValueError("surface_distances needs two non-empty masks")
    surf_p, surf_r = surface_voxels(pred[bbox]), surface_voxels(ref[bbox])
    n_surf = int(np.count_nonzero(surf_p)) + int(np.count_nonzero(surf_r))
    pts_p = voxel_coords(surf_p) * sp
    pts_r = voxel_coords(surf_r) * sp
    tree_p, tree_r = cKDTree(pts_p), cKDTree(pts_r)
    if n_surf * SURFACE_EDT_RATIO > surf_p.size and _far_apart(pts_p, pts_r, tree_p, tree_r, sp):
        del pts_p, pts_r, tree_p, tree_r
        return _nearest_mm(surf_p, surf_r, sp), _nearest_mm(surf_r, surf_p, sp)
    del surf_p, surf_r
    d_pr, _ = tree_r.query(pts_p)
    d_rp, _ = tree_p.query(pts_r)
    return d_pr, d_rp


#: the feature transforms are taken only when a sample of the surface voxels lies this many
#: voxels (the largest spacing) from the other surface on average: the k-d tree's queries are
#: slow when they are far (a mask filling 256³ against a vessel tree: 10-18 s), fast when near,
#: whatever the surfaces' size (a perturbed 256³ tree pair, one surface voxel in 121 of the box,
#: mean 0.6 voxel: 0.18 s against the transforms' 3.9 s; a noisy prediction's many specks)
SURFACE_FAR_VOXELS = 8.0


def _far_apart(pts_p, pts_r, tree_p, tree_r, sp, n: int = 2000) -> bool:
    """True when up to ``n`` evenly strided surface voxels of each mask lie, on average, more
    than :data:`SURFACE_FAR_VOXELS` voxels from the other mask's surface."""
    sample_p = pts_p[:: max(1, len(pts_p) // n)]
    sample_r = pts_r[:: max(1, len(pts_r) // n)]
    d = np.concatenate([tree_r.query(sample_p)[0], tree_p.query(sample_r)[0]])
    return float(d.mean()) > SURFACE_FAR_VOXELS * float(np.max(sp))


def dice_score(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice of two 3-D masks of the same shape (binary masks or labels, non-zero = foreground,
    as :func:`binarize` takes them: probabilities are refused); both empty gives 1.0, as in
    :func:`compute_metrics`, which also computes it (on its crops, with the other metrics)."""
    # an audit: arrays of other shapes were broadcast (Dice 1.67), probabilities counted whole
    p, r = binarize(pred, "pred"), binarize(ref, "ref")
    check_same_shape(p, r, "pred", "ref")
    total = int(np.count_nonzero(p)) + int(np.count_nonzero(r))
    return 1.0 if total == 0 else 2.0 * int(np.count_nonzero(p & r)) / total


def cldice_scores(
    pred: np.ndarray, ref: np.ndarray, skeleton_pred: np.ndarray, skeleton_ref: np.ndarray
) -> tuple[float, float, float]:
    """``(cldice, tprec, tsens)`` from masks and their hard skeletons (empty cases: see module)."""
    n_sp = int(np.count_nonzero(skeleton_pred))
    n_sr = int(np.count_nonzero(skeleton_ref))
    if n_sp == 0 and n_sr == 0:
        return 1.0, 1.0, 1.0
    tprec = float(np.count_nonzero(skeleton_pred & ref)) / n_sp if n_sp else 0.0
    tsens = float(np.count_nonzero(skeleton_ref & pred)) / n_sr if n_sr else 0.0
    cl = 2.0 * tprec * tsens / (tprec + tsens) if tprec + tsens > 0 else 0.0
    return cl, tprec, tsens


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def compute_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing,
    *,
    skeleton_pred: np.ndarray | None = None,
    skeleton_ref: np.ndarray | None = None,
    measured_lengths: bool = True,
    scores_only: bool = False,
) -> dict:
    """All metrics between a predicted and a reference mask.

    Args:
        pred: binary mask or label volume (non-zero = foreground), shape (Z, Y, X).
        ref: same, same shape.
        spacing: voxel size in mm, (dz, dy, dx).
        skeleton_pred, skeleton_ref: optional precomputed hard skeletons (bool, same shape),
            e.g. to share them with :func:`~napari_tubular.topology.error_map`.
        measured_lengths: the lengths by :func:`mask_centerline_length_mm` (default); False
            measures the clDice skeletons on the voxel grid instead, which is faster (a second
            thinning on a finer grid costs seconds on a large anisotropic volume: the viewer's
            live metrics and training validation, which do not show lengths) and short by about
            a radius in voxels at each free end and face.
        scores_only: only ``dice``, ``cldice``, ``tprec``, ``tsens`` and ``b0_error`` (the
            same values), without the Betti-1/2 numbers, surface distances, volumes and
            lengths: what a threshold search scores many candidate masks by.

    Returns:
        dict with the keys of ``METRIC_KEYS``: ``dice``, ``cldice``, ``tprec``, ``tsens``
        (floats in [0, 1]); ``betti_pred``, ``betti_ref`` (lists ``[b0, b1, b2]`` of ints);
        ``b0_error``, ``b1_error``, ``b2_error`` (ints); ``hd95_mm``, ``assd_mm`` (float, or
        None when exactly one mask is empty); ``volume_pred_ml``, ``volume_ref_ml`` (mL);
        ``length_pred_mm``, ``length_ref_mm`` (centerline length, mm,
        :func:`mask_centerline_length_mm`). Plain Python types, no NaN.

    Raises:
        ValueError: shapes differ, bad spacing, non-binary input (e.g. probabilities).
    """
    from .._checks import check_flag

    measured_lengths = check_flag("measured_lengths", measured_lengths)
    scores_only = check_flag("scores_only", scores_only)  # "false" gave only five scores
    spacing = check_spacing(spacing)
    p = binarize(pred, "pred")
    r = binarize(ref, "ref")
    check_same_shape(p, r, "pred", "ref")
    bbox = bounding_box(p | r, margin=1)
    if bbox is None:  # both empty: a one-voxel crop keeps every step defined
        bbox = (slice(0, 1),) * 3
    pc, rc = p[bbox], r[bbox]

    for skeleton, name in ((skeleton_pred, "skeleton_pred"), (skeleton_ref, "skeleton_ref")):
        if skeleton is not None and np.shape(skeleton) != p.shape:  # before any thinning
            raise ValueError(f"{name} has shape {np.shape(skeleton)} but the mask has shape "
                             f"{p.shape}")

    def voxel_part(mask, skeleton, name):
        # one mask's clDice skeleton, and its length on the voxel grid when that is wanted
        sk = skeleton_crop(skeleton, mask, bbox, name, spacing)
        return sk, (0.0 if scores_only else centerline_length_mm(sk, spacing))

    def measured_part(mask):
        # the length of the measuring skeleton (mask_centerline_length_mm's other skeleton,
        # independent of the voxel one: the four thinnings of a pair share the two threads)
        skeleton, fine = measuring_skeleton(mask, spacing)
        return centerline_length_mm(skeleton, fine)

    n_p, n_r = int(np.count_nonzero(pc)), int(np.count_nonzero(rc))

    def inner_box(mask, skeleton):
        # the mask's box in the crop when its measuring skeleton is its clDice skeleton: an
        # isotropic grid (no resampling) and no face of the volume touched (no extension): the
        # measuring skeleton thins the same array, the mask's box padded by one voxel, so the
        # clDice skeleton on that box is it, and a third and fourth thinning are saved
        if skeleton is not None or _isotropic_factors(spacing) is not None:
            return None
        box = bounding_box(mask)
        if box is None or any(sl.start == 0 or sl.stop == n for sl, n in zip(box, mask.shape)):
            return None
        return tuple(slice(b.start - c.start, b.stop - c.start) for b, c in zip(box, bbox))

    shared = [None, None]
    rest = []
    if not scores_only:
        if measured_lengths:
            shared = [inner_box(p, skeleton_pred), inner_box(r, skeleton_ref)]
            rest += [(lambda m=m: measured_part(m)) for m, box in zip((p, r), shared)
                     if box is None]
        rest += [lambda: betti_numbers(pc), lambda: betti_numbers(rc)]
        if n_p and n_r:
            rest.append(lambda: surface_distances(pc, rc, spacing))
    else:
        rest += [lambda: (component_count(pc), 0, 0), lambda: (component_count(rc), 0, 0)]
    (sp_c, vox_p), (sr_c, vox_r), *parts = in_two_threads(
        lambda: voxel_part(p, skeleton_pred, "skeleton_pred"),
        lambda: voxel_part(r, skeleton_ref, "skeleton_ref"),
        rest, parallel=pc.size >= PARALLEL_MIN_VOXELS)
    if not scores_only and measured_lengths:
        # mask_centerline_length_mm: the longer of the two skeletons' lengths
        fine = [centerline_length_mm(sk[box], spacing) if box is not None else parts.pop(0)
                for sk, box in zip((sp_c, sr_c), shared)]
        b_p, b_r, *distances = parts
        len_p, len_r = max(fine[0], vox_p), max(fine[1], vox_r)
    else:
        (b_p, b_r, *distances), len_p, len_r = parts, vox_p, vox_r

    inter = int(np.count_nonzero(pc & rc))
    dice = 1.0 if n_p + n_r == 0 else 2.0 * inter / (n_p + n_r)
    cl, tprec, tsens = cldice_scores(pc, rc, sp_c, sr_c)
    if scores_only:
        return {"dice": float(dice), "cldice": float(cl), "tprec": float(tprec),
                "tsens": float(tsens), "b0_error": abs(b_p[0] - b_r[0])}

    if n_p == 0 and n_r == 0:
        hd95, assd = 0.0, 0.0
    elif n_p == 0 or n_r == 0:
        hd95, assd = math.inf, math.inf
    else:
        d_pr, d_rp = distances[0]
        hd95 = max(float(np.percentile(d_pr, 95)), float(np.percentile(d_rp, 95)))
        assd = float((d_pr.sum() + d_rp.sum()) / (d_pr.size + d_rp.size))

    voxel_ml = spacing[0] * spacing[1] * spacing[2] / 1000.0
    return {
        "dice": float(dice),
        "cldice": float(cl),
        "tprec": float(tprec),
        "tsens": float(tsens),
        "betti_pred": [int(b) for b in b_p],
        "betti_ref": [int(b) for b in b_r],
        "b0_error": abs(b_p[0] - b_r[0]),
        "b1_error": abs(b_p[1] - b_r[1]),
        "b2_error": abs(b_p[2] - b_r[2]),
        "hd95_mm": _finite_or_none(hd95),
        "assd_mm": _finite_or_none(assd),
        "volume_pred_ml": float(n_p * voxel_ml),
        "volume_ref_ml": float(n_r * voxel_ml),
        "length_pred_mm": float(len_p),
        "length_ref_mm": float(len_r),
    }
