"""compute_metrics' speed-ups give the values of the straightforward composition, bit for bit.

The speed-ups: the four thinnings of a pair as independent tasks in two threads
(``in_two_threads``), the measuring skeleton taken from the clDice one when it thins the same
array (isotropic grid, no face touched), ``voxel_coords`` for ``np.argwhere``, the factor-1 axes
skipped in ``_upsampled_positive``. ``reference_metrics`` below is compute_metrics as it was
composed before them (each mask's skeleton, its measured length by
``mask_centerline_length_mm`` with the measuring skeleton always thinned, Betti numbers, surface
distances), and the values must be equal, not close.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_tubular.geometry import skeleton as S
from napari_tubular.geometry.components import voxel_coords
from napari_tubular.synthetic import make_vessel_tree
from napari_tubular.topology import metrics as M
from napari_tubular.topology.betti import betti_numbers, bounding_box
from napari_tubular.topology.metrics import (
    binarize,
    cldice_scores,
    compute_metrics,
    hard_skeleton,
    mask_centerline_length_mm,
    surface_distances,
)


def reference_metrics(pred, ref, spacing) -> dict:
    """compute_metrics composed the straightforward way, one part after the other."""
    p, r = binarize(pred, "pred"), binarize(ref, "ref")
    bbox = bounding_box(p | r, margin=1) or (slice(0, 1),) * 3
    pc, rc = p[bbox], r[bbox]
    sk_p, sk_r = hard_skeleton(pc, spacing), hard_skeleton(rc, spacing)
    n_p, n_r = int(pc.sum()), int(rc.sum())
    b_p, b_r = betti_numbers(pc), betti_numbers(rc)
    cl, tprec, tsens = cldice_scores(pc, rc, sk_p, sk_r)
    if n_p == 0 and n_r == 0:
        hd95 = assd = 0.0
    elif n_p == 0 or n_r == 0:
        hd95 = assd = None
    else:
        d_pr, d_rp = surface_distances(pc, rc, spacing)
        hd95 = max(float(np.percentile(d_pr, 95)), float(np.percentile(d_rp, 95)))
        assd = float((d_pr.sum() + d_rp.sum()) / (d_pr.size + d_rp.size))
    ml = spacing[0] * spacing[1] * spacing[2] / 1000.0
    return {
        "dice": 1.0 if n_p + n_r == 0 else 2.0 * int((pc & rc).sum()) / (n_p + n_r),
        "cldice": cl, "tprec": tprec, "tsens": tsens,
        "betti_pred": list(b_p), "betti_ref": list(b_r),
        "b0_error": abs(b_p[0] - b_r[0]), "b1_error": abs(b_p[1] - b_r[1]),
        "b2_error": abs(b_p[2] - b_r[2]), "hd95_mm": hd95, "assd_mm": assd,
        "volume_pred_ml": n_p * ml, "volume_ref_ml": n_r * ml,
        "length_pred_mm": mask_centerline_length_mm(p, spacing, sk_p),
        "length_ref_mm": mask_centerline_length_mm(r, spacing, sk_r),
    }


def _perturbed(ref, seed):
    """A plausible prediction: thicker in one half, two cuts, a few spurious cubes."""
    rng = np.random.default_rng(seed)
    pred = ref.copy()
    half = ref.shape[0] // 2
    pred[:half] = ndi.binary_dilation(ref[:half])
    pts = np.argwhere(ref)
    for z, y, x in pts[rng.choice(len(pts), 2, replace=False)]:
        pred[max(z - 1, 0):z + 2, max(y - 3, 0):y + 4, max(x - 3, 0):x + 4] = False
    for _ in range(3):
        c = rng.integers(2, np.array(ref.shape) - 2)
        pred[c[0] - 1:c[0] + 2, c[1] - 1:c[1] + 2, c[2] - 1:c[2] + 2] = True
    return pred


def _pairs():
    """(name, pred, ref, spacing): vessel trees crossing the faces and inside the volume, on
    isotropic and thick-slice grids, random blobs and specks, empty and full masks."""
    out = []
    for k, (shape, spacing) in enumerate([((36, 40, 40), (1.0, 1.0, 1.0)),
                                          ((20, 48, 40), (2.0, 0.7, 0.7)),
                                          ((40, 36, 24), (0.6, 0.6, 1.5))]):
        ref = make_vessel_tree(shape, spacing=spacing, seed=k, distractors=False, bias=False,
                               blur=False).mask.astype(bool)
        pred = _perturbed(ref, k)
        out.append((f"tree{k}", pred, ref, spacing))
        # inside the volume: no face touched (isotropic: the shared measuring skeleton)
        out.append((f"inner tree{k}", np.pad(pred, 2), np.pad(ref, 2), spacing))
        out.append((f"one inside tree{k}", np.pad(pred, 2), np.pad(ref[1:-1, 1:-1, 1:-1], 3),
                    spacing))
    rng = np.random.default_rng(3)
    for k in range(3):
        shape = tuple(int(v) for v in rng.integers(10, 26, 3))
        spacing = tuple(float(v) for v in rng.choice([0.5, 1.0, 2.0], 3))
        f = ndi.gaussian_filter(rng.standard_normal(shape), 1.2)
        g = ndi.gaussian_filter(rng.standard_normal(shape), 1.5)
        out.append((f"blobs{k}", f > np.quantile(f, 0.9), np.pad(g > 1.2 * g.std(), 0), spacing))
        out.append((f"specks{k}", rng.random(shape) < 0.03, rng.random(shape) < 0.08, spacing))
        out.append((f"1.0 blobs{k}", f > np.quantile(f, 0.9), g > 1.2 * g.std(), (1.0,) * 3))
    z = np.zeros((14, 16, 12), bool)
    cube = z.copy()
    cube[4:9, 5:11, 3:8] = True
    for spacing in ((1.0, 1.0, 1.0), (2.5, 0.8, 0.8)):
        out += [("empty", z, z, spacing), ("empty pred", z, cube, spacing),
                ("empty ref", cube, z, spacing), ("full", ~z, cube, spacing),
                ("labels", cube.astype(np.uint16) * 3, np.roll(cube, 2, axis=1) * 2, spacing)]
    return out


PAIRS = _pairs()


@pytest.mark.parametrize("parallel", [False, True])
def test_compute_metrics_equals_the_straightforward_composition(parallel, monkeypatch):
    """Serial and in two threads, every pair gives exactly the reference's values."""
    monkeypatch.setattr(M.os, "cpu_count", lambda: 2)  # threads even on a one-core machine
    monkeypatch.setattr(M, "PARALLEL_MIN_VOXELS", 0 if parallel else 10**12)
    for name, pred, ref, spacing in PAIRS:
        got = compute_metrics(pred, ref, spacing)
        want = reference_metrics(pred, ref, spacing)
        assert got == want, name
        fast = compute_metrics(pred, ref, spacing, measured_lengths=False)
        assert {k: v for k, v in fast.items() if not k.startswith("length")} == \
            {k: v for k, v in want.items() if not k.startswith("length")}, name
        scores = compute_metrics(pred, ref, spacing, scores_only=True)
        assert scores == {k: want[k] for k in ("dice", "cldice", "tprec", "tsens",
                                               "b0_error")}, name


def test_given_skeletons_are_used_not_shared(monkeypatch):
    """A skeleton given by the caller is the clDice skeleton, never taken for the measuring
    one (on an isotropic grid inside the volume the two are shared only when compute_metrics
    thinned it itself): a one-voxel skeleton changes tprec, not the length."""
    _, pred, ref, spacing = PAIRS[1]  # inner tree0, isotropic
    assert spacing == (1.0, 1.0, 1.0)
    plain = compute_metrics(pred, ref, spacing)
    dot = np.zeros(pred.shape, bool)
    dot[tuple(np.argwhere(pred & ref)[0])] = True
    given = compute_metrics(pred, ref, spacing, skeleton_pred=dot)
    assert given["length_pred_mm"] == plain["length_pred_mm"] > 10
    assert given["tprec"] == 1.0


def test_inner_isotropic_masks_are_thinned_twice_not_four_times(monkeypatch):
    """On an isotropic grid, with no face touched, the measuring skeleton is the clDice one:
    two thinnings of the full mask for the pair instead of four, and the same values."""
    _, pred, ref, spacing = PAIRS[1]
    calls = []
    real = S.skeletonize_mask

    def counting(mask, **kwargs):
        calls.append(int(np.count_nonzero(mask)))
        return real(mask, **kwargs)

    monkeypatch.setattr(S, "skeletonize_mask", counting)
    monkeypatch.setattr(M, "skeletonize_mask", counting)
    got = compute_metrics(pred, ref, spacing)
    assert sorted(calls) == sorted([int(pred.sum()), int(ref.sum())])
    calls.clear()
    assert reference_metrics(pred, ref, spacing) == got
    assert len(calls) == 4
    # a face touched: the measuring skeleton extends it, so it is thinned on its own
    calls.clear()
    compute_metrics(PAIRS[0][1], PAIRS[0][2], PAIRS[0][3])
    assert len(calls) == 4


def test_in_two_threads_order_and_errors(monkeypatch):
    """Results in call order, both threads used, the first error in call order raised."""
    import threading

    monkeypatch.setattr(M.os, "cpu_count", lambda: 2)
    seen = {}

    def call(i):
        def f():
            seen[i] = threading.get_ident()
            return i
        return f

    assert M.in_two_threads(call(0), call(1), [call(i) for i in range(2, 9)]) == list(range(9))
    assert seen[0] == threading.get_ident() != seen[1]  # the first two: one in each thread
    assert M.in_two_threads(call(0), call(1), parallel=False) == [0, 1]

    def boom(msg):
        def f():
            raise ValueError(msg)
        return f

    with pytest.raises(ValueError, match="second"):
        M.in_two_threads(call(0), boom("second"), [boom("third")])
    with pytest.raises(ValueError, match="first"):
        M.in_two_threads(boom("first"), boom("second"))


def test_voxel_coords_is_argwhere(rng):
    for shape in [(1, 1, 1), (5, 1, 7), (13, 17, 11)]:
        for fill in (0.0, 0.1, 1.0):
            a = rng.random(shape) < fill
            for arr in (a, a[::2, :, 1:], a.astype(np.uint8) * 3, np.asfortranarray(a)):
                got = voxel_coords(arr)
                np.testing.assert_array_equal(got, np.argwhere(arr))
                assert got.shape == (int(np.count_nonzero(arr)), 3)
                assert got.dtype == np.intp


def _upsampled_reference(values, factors):
    """The dense trilinear resampling of every axis (what _upsampled_positive did)."""
    maps = []
    for n, k in zip(values.shape, factors):
        t = np.clip((np.arange(n * k) + 0.5) / k - 0.5, 0.0, n - 1.0)
        i0 = np.floor(t).astype(np.int64)
        maps.append((i0, np.minimum(i0 + 1, n - 1), (t - i0).astype(np.float32)))
    (z0, z1, wz), (y0, y1, wy), (x0, x1, wx) = maps
    a = values[z0] * (1 - wz)[:, None, None] + values[z1] * wz[:, None, None]
    a = a[:, y0] * (1 - wy)[None, :, None] + a[:, y1] * wy[None, :, None]
    a = a[:, :, x0] * (1 - wx)[None, None, :] + a[:, :, x1] * wx[None, None, :]
    return a > 0


@pytest.mark.parametrize("factors", [(3, 1, 1), (1, 2, 1), (1, 1, 4), (2, 1, 3), (2, 3, 2),
                                     (1, 1, 1)])
def test_upsampled_positive_skips_factor_one_axes_exactly(factors, rng):
    """Signed distances (float32, with exact zeros and both signs of zero): the same mask as
    resampling every axis, in one chunk and in many."""
    for _ in range(3):
        v = np.round(rng.normal(size=(7, 9, 8)) * 3).astype(np.float32) / 2
        v[rng.random(v.shape) < 0.1] = -0.0
        want = _upsampled_reference(v, factors)
        np.testing.assert_array_equal(S._upsampled_positive(v, factors), want)
        np.testing.assert_array_equal(S._upsampled_positive(v, factors, chunk_voxels=50), want)


def test_measuring_skeleton_of_an_inner_mask_skips_the_radius_transform(monkeypatch):
    """No face to extend: no distance transform for the largest radius, and the skeleton
    thinned on the padded box (its lost-branch check, on a sparse mask, needs no transform of
    the box either: :func:`test_lost_branch_check_skips_the_box_transform_of_sparse_masks`)."""
    _, pred, _, spacing = PAIRS[1]
    from napari_tubular.geometry import distance as D

    shapes = []
    real = D.edt_mm

    def spy(mask, spacing, **kwargs):
        shapes.append(np.shape(mask))
        return real(mask, spacing, **kwargs)

    monkeypatch.setattr(D, "edt_mm", spy)
    sk, fine = S.measuring_skeleton(pred, spacing)
    box = bounding_box(pred)
    padded = tuple(b.stop - b.start + 2 for b in box)
    assert shapes.count(padded) <= 1  # the lost-branch check's own, when its bounds fall short
    assert fine == spacing
    np.testing.assert_array_equal(sk, S.skeletonize_mask(pred, spacing=spacing)[box])
    assert math.isfinite(M.centerline_length_mm(sk, fine))


def _sparse_masks():
    """(name, mask, spacing): sparse masks (under 4 % of their box, where the lost-branch check
    bounds the radii from the skeleton) of several kinds, crossing the faces or not, and the
    audit's lost side branch (the bounds fall short there: the exact radii are taken)."""
    from tests.geometry._shapes import trunk_and_branch

    out = []
    rng = np.random.default_rng(36)
    for k, spacing in enumerate([(1.0, 1.0, 1.0), (2.0, 0.7, 0.7), (0.6, 0.6, 1.5),
                                 (0.5, 0.5, 0.5), (1.0, 1.0, 1.0)]):
        tree = make_vessel_tree((40, 56, 48), spacing=spacing, seed=10 + k, distractors=k % 2 == 1,
                                bias=False, blur=False).mask.astype(bool)
        out.append((f"tree{k}", tree, spacing))
        out.append((f"dilated tree{k}", _perturbed(tree, k), spacing))
        out.append((f"inner tree{k}", np.pad(tree, 3), spacing))
    for k in range(3):
        m = rng.random((30, 34, 28)) < 0.01
        m[5:25, 10:14, 8:11] = True  # a bar among specks
        out.append((f"specks{k}", m, tuple(float(v) for v in rng.choice([0.5, 1.0, 2.5], 3))))
    trunk, branch, spacing = trunk_and_branch(32.5)
    out.append(("lost branch", trunk | branch, spacing))
    return out


SPARSE = _sparse_masks()


@pytest.fixture
def open_floors(monkeypatch):
    """The lost-branch check bounds the radii from the skeleton on every mask, dense or not
    (on the small masks here a k-d tree of the background next to the mask is not cheaper
    than the distance transform, so it is not used by default)."""
    monkeypatch.setattr(S, "KDTREE_MAX_FILL", 2.0)  # a full mask too
    monkeypatch.setattr(S, "FLOOR_MAX_FILL", 1)


def test_radius_floors_are_below_the_largest_radii(open_floors):
    """The lost-branch check's lower bounds of each component's largest inscribed radius (from
    the skeleton's voxels) never exceed the radius the distance transform gives, and for the
    largest component of each mask they are within a voxel of it."""
    import cc3d

    from napari_tubular.geometry.distance import edt_mm

    for name, mask, spacing in SPARSE + [(n, p, s) for n, p, _, s in PAIRS if p.any()]:
        mb = mask[bounding_box(mask, margin=1)] != 0
        sk = S.skeletonize_mask(mb, spacing=spacing).view(bool)
        labels, n = cc3d.connected_components(mb, connectivity=26, return_N=True)
        floor = S._radius_floor(mb, sk, labels, n, spacing)
        r_max = np.zeros(n + 1, np.float32)
        np.maximum.at(r_max, labels[mb], edt_mm(mb, spacing, border_is_background=True)[mb])
        assert floor.dtype == np.float32
        assert floor.shape == (n + 1,)
        assert np.all(floor <= r_max), name
        big = np.argmax(np.bincount(labels[mb], minlength=n + 1))
        assert r_max[big] - floor[big] < max(spacing), (name, r_max[big], floor[big])


@pytest.mark.parametrize("floors", ["default", "open"])
def test_lost_branch_check_gives_the_skeletons_of_the_exact_radii(floors, request, monkeypatch):
    """The skeletons of sparse and dense masks (trees, specks, the audit's lost side branch
    whose bounds fall short, the pairs above) are those of the check with the exact radii from
    the distance transform of the box, which it always took before."""
    if floors == "open":
        request.getfixturevalue("open_floors")
    masks = SPARSE + [(f"{n} {k}", m, s) for n, p, r, s in PAIRS for k, m in
                      (("pred", p), ("ref", r)) if np.any(m)]
    got = [S.skeletonize_mask(mask, spacing=spacing) for _, mask, spacing in masks]
    monkeypatch.setattr(S, "_radius_floor", lambda *args: None)  # the check as it was
    for (name, mask, spacing), sk in zip(masks, got):
        np.testing.assert_array_equal(sk, S.skeletonize_mask(mask, spacing=spacing),
                                      err_msg=f"{name} {spacing}")


def test_lost_branch_check_skips_the_box_transform_of_sparse_masks(monkeypatch):
    """A sparse vessel tree (one voxel in 100 of its box) is thinned without a distance
    transform of the box: the bounds of its radii from the skeleton leave no voxel far from
    the skeleton, so none is far with the radii themselves; the audit's lost side branch
    still takes the transform (its voxels are far), with the same skeleton as before."""
    from napari_tubular.geometry import distance as D

    shapes = []
    real = D.edt_mm

    def spy(mask, spacing, **kwargs):
        if kwargs.get("border_is_background"):
            shapes.append(np.shape(mask))
        return real(mask, spacing, **kwargs)

    monkeypatch.setattr(D, "edt_mm", spy)
    tree = make_vessel_tree((96, 96, 96), spacing=(1.0, 1.0, 1.0), seed=0, distractors=False,
                            bias=False, blur=False).mask.astype(bool)
    assert np.count_nonzero(tree) < 0.02 * tree.size
    for mask in (tree, _perturbed(tree, 0)):
        S.skeletonize_mask(mask, spacing=(1.0, 1.0, 1.0))
        assert not shapes
    name, lost, spacing = SPARSE[-1]
    assert name == "lost branch"
    monkeypatch.setattr(S, "KDTREE_MAX_FILL", 2.0)  # a full mask too
    monkeypatch.setattr(S, "FLOOR_MAX_FILL", 1)
    sk = S.skeletonize_mask(lost, spacing=spacing)
    assert shapes
    monkeypatch.setattr(S, "_radius_floor", lambda *args: None)
    np.testing.assert_array_equal(sk, S.skeletonize_mask(lost, spacing=spacing))
