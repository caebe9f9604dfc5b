import json
import math

import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy.spatial.distance import cdist

from napari_tubular.topology import (
    METRIC_KEYS,
    binarize,
    centerline_length_mm,
    compute_metrics,
    hard_skeleton,
    surface_distances,
)

from .shapes import ball, segment, torus, tree


def brute_surface_distances(a, b, spacing):
    """All-pairs distances between surface voxels (surface = mask minus 6-cross erosion)."""
    sa = np.argwhere(a & ~ndi.binary_erosion(a)) * spacing
    sb = np.argwhere(b & ~ndi.binary_erosion(b)) * spacing
    d = cdist(sa, sb)
    return d.min(axis=1), d.min(axis=0)


def blobs(rng, shape=(18, 20, 16)):
    m = ndi.gaussian_filter(rng.random(shape), 1.5)
    return m > np.quantile(m, 0.7)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 0.7, 0.6)])
def test_surface_distances_match_brute_force(spacing, rng):
    for _ in range(3):
        a, b = blobs(rng), blobs(rng)
        d_ab, d_ba = surface_distances(a, b, spacing)
        e_ab, e_ba = brute_surface_distances(a, b, np.array(spacing))
        np.testing.assert_allclose(np.sort(d_ab), np.sort(e_ab), rtol=1e-12)
        np.testing.assert_allclose(np.sort(d_ba), np.sort(e_ba), rtol=1e-12)
        m = compute_metrics(a, b, spacing)
        hd95 = max(np.percentile(e_ab, 95), np.percentile(e_ba, 95))
        assd = np.concatenate([e_ab, e_ba]).mean()
        assert m["hd95_mm"] == pytest.approx(hd95, rel=1e-9)
        assert m["assd_mm"] == pytest.approx(assd, rel=1e-9)


@pytest.mark.slow  # imports torch
def test_hd95_assd_match_monai(rng):
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    spacing = (2.5, 0.7, 0.6)
    for _ in range(3):
        a, b = blobs(rng), blobs(rng)
        m = compute_metrics(a, b, spacing)
        # MONAI (distance-transform based), input (B, C, Z, Y, X)
        t = lambda x: x[None, None].astype(np.float32)  # noqa: E731
        mh = compute_hausdorff_distance(t(a), t(b), percentile=95, spacing=list(spacing))
        ma = compute_average_surface_distance(t(a), t(b), symmetric=True, spacing=list(spacing))
        assert m["hd95_mm"] == pytest.approx(float(mh), rel=1e-4)
        assert m["assd_mm"] == pytest.approx(float(ma), rel=1e-4)


def test_shifted_ball_distances_and_spacing_scaling():
    shape = (30, 30, 30)
    a = ball(shape, (15, 15, 15), 8)
    b = ball(shape, (15, 15, 18), 8)  # shifted by 3 voxels along x
    m1 = compute_metrics(a, b, (1.0, 1.0, 1.0))
    m2 = compute_metrics(a, b, (2.0, 2.0, 2.0))
    assert 0 < m1["hd95_mm"] <= 3.0 + 1e-9
    for k in ("hd95_mm", "assd_mm", "length_pred_mm", "length_ref_mm"):
        assert m2[k] == pytest.approx(2 * m1[k])
    assert m2["volume_pred_ml"] == pytest.approx(8 * m1["volume_pred_ml"])
    assert m1["volume_pred_ml"] == pytest.approx(a.sum() / 1000.0)
    for k in ("dice", "cldice", "betti_pred", "b1_error"):
        assert m2[k] == m1[k]


def test_identical_masks():
    m = tree()
    out = compute_metrics(m, m, (0.8, 0.5, 0.5))
    assert set(out) == set(METRIC_KEYS)
    assert out["dice"] == out["cldice"] == out["tprec"] == out["tsens"] == 1.0
    assert out["hd95_mm"] == out["assd_mm"] == 0.0
    assert out["betti_pred"] == out["betti_ref"] == [1, 0, 0]
    assert out["b0_error"] == out["b1_error"] == out["b2_error"] == 0
    assert out["length_pred_mm"] == out["length_ref_mm"] > 0


def test_cldice_known_by_construction():
    shape = (20, 20, 60)
    bar = segment(shape, (6, 6, 5), (6, 6, 25), 2.0)
    twin = np.roll(bar, 30, axis=2)  # the same bar translated: the same skeleton size
    ref = bar | twin
    out = compute_metrics(bar, ref, (1.0, 1.0, 1.0))
    assert out["tprec"] == 1.0  # every predicted skeleton voxel is in the reference
    assert out["tsens"] == pytest.approx(0.5)  # half of the reference skeleton is covered
    assert out["cldice"] == pytest.approx(2 * 0.5 / 1.5)
    assert out["dice"] == pytest.approx(2 / 3)
    assert out["betti_pred"] == [1, 0, 0]
    assert out["betti_ref"] == [2, 0, 0]
    assert out["b0_error"] == 1


def test_thick_vs_thin_tube_is_topologically_perfect():
    shape = (24, 24, 40)
    thin = segment(shape, (12, 12, 5), (12, 12, 34), 2.0)
    thick = segment(shape, (12, 12, 5), (12, 12, 34), 5.0)
    out = compute_metrics(thick, thin, (1.0, 1.0, 1.0))
    assert out["dice"] < 0.5
    assert out["tprec"] == out["tsens"] == out["cldice"] == 1.0


def test_broken_torus_b1_error():
    t = torus()
    cut = t.copy()
    cut[:, :, 14:18] = False  # cuts the ring in two places: two arcs
    out = compute_metrics(cut, t, (1.0, 1.0, 1.0))
    assert out["betti_pred"] == [2, 0, 0]
    assert out["betti_ref"] == [1, 1, 0]
    assert (out["b0_error"], out["b1_error"], out["b2_error"]) == (1, 1, 0)
    assert out["tprec"] == 1.0
    assert out["tsens"] < 1.0


def test_scores_only_gives_the_full_values_of_its_keys(rng):
    """``scores_only`` (a threshold search's path) keeps the full call's Dice, clDice, tprec,
    tsens and Betti-0 error, and skips the rest."""
    t = torus()
    cut = t.copy()
    cut[:, :, 14:18] = False
    cases = [(cut, t), (blobs(rng), blobs(rng)), (np.zeros_like(t), t), (t, np.zeros_like(t)),
             (np.zeros_like(t), np.zeros_like(t))]
    keys = ("dice", "cldice", "tprec", "tsens", "b0_error")
    for pred, ref in cases:
        full = compute_metrics(pred, ref, (1.0, 0.7, 0.7))
        light = compute_metrics(pred, ref, (1.0, 0.7, 0.7), scores_only=True)
        assert light == {k: full[k] for k in keys}
    assert compute_metrics(cut, t, (1, 1, 1), scores_only=True)["b0_error"] == 1


def test_the_two_masks_in_two_threads_give_the_serial_values(rng, monkeypatch):
    """compute_metrics thins, labels and measures the two masks in two threads: the same
    values as one after the other, for every output mode, and an error of either mask's part
    (a wrong skeleton) is raised, not lost in the thread."""
    import threading

    from napari_tubular.topology import metrics as M

    t = torus()
    cut = t.copy()
    cut[:, :, 14:18] = False
    pairs = [(cut, t), (blobs(rng), blobs(rng)), (tree(), ndi.binary_dilation(tree()))]
    threads = set()
    real = M.skeleton_crop

    def spy(*args, **kwargs):
        threads.add(threading.get_ident())
        return real(*args, **kwargs)

    monkeypatch.setattr(M, "skeleton_crop", spy)
    monkeypatch.setattr(M.os, "cpu_count", lambda: 2)  # threads even on a one-core machine
    for pred, ref in pairs:
        for kwargs in ({}, {"measured_lengths": False}, {"scores_only": True}):
            monkeypatch.setattr(M, "PARALLEL_MIN_VOXELS", 10**12)
            serial = compute_metrics(pred, ref, (1.0, 0.7, 0.7), **kwargs)
            monkeypatch.setattr(M, "PARALLEL_MIN_VOXELS", 0)
            threads.clear()
            assert compute_metrics(pred, ref, (1.0, 0.7, 0.7), **kwargs) == serial
            assert len(threads) == 2
    # segment's report: the mask's two skeletons for its length, in two threads too
    from napari_tubular.topology import mask_centerline_length_mm

    for mask in (t, tree()):
        monkeypatch.setattr(M, "PARALLEL_MIN_VOXELS", 10**12)
        serial = mask_centerline_length_mm(mask, (2.0, 0.7, 0.7))
        monkeypatch.setattr(M, "PARALLEL_MIN_VOXELS", 0)
        assert mask_centerline_length_mm(mask, (2.0, 0.7, 0.7)) == serial > 0
    with pytest.raises(ValueError, match="skeleton_ref has shape"):
        compute_metrics(cut, t, (1, 1, 1), skeleton_ref=np.zeros((3, 3, 3), bool))
    with pytest.raises(ValueError, match="skeleton_pred has shape"):
        compute_metrics(cut, t, (1, 1, 1), skeleton_pred=np.zeros((3, 3, 3), bool))


def test_centerline_length():
    sk = np.zeros((5, 5, 30), bool)
    sk[2, 2, 3:23] = True  # 20 voxels in a line: 19 steps
    assert centerline_length_mm(sk, (1.0, 1.0, 0.5)) == pytest.approx(19 * 0.5)
    diag = np.zeros((12, 12, 12), bool)
    idx = np.arange(10)
    diag[idx, idx, 0] = True  # z-y diagonal
    assert centerline_length_mm(diag, (2.0, 1.0, 1.0)) == pytest.approx(9 * math.sqrt(5.0))
    assert centerline_length_mm(np.zeros((3, 3, 3), bool), (1, 1, 1)) == 0.0


def _tilted_ring(spacing, major_mm=15.0, minor_mm=2.0):
    """A torus tube in an oblique plane and its exact centerline length (2 pi R)."""
    from napari_tubular.synthetic import render_capsules

    n = np.array([1.0, 0.5, 0.3]) / np.linalg.norm([1.0, 0.5, 0.3])
    u = np.cross(n, [1.0, 0.0, 0.0])
    u /= np.linalg.norm(u)
    v = np.cross(n, u)
    ext = 2 * major_mm + 4 * minor_mm + 10
    shape = tuple(int(ext / s) for s in spacing)
    centre = np.array(shape) * np.array(spacing) / 2
    th = np.linspace(0, 2 * np.pi, 240, endpoint=False)
    pts = centre + major_mm * (np.cos(th)[:, None] * u + np.sin(th)[:, None] * v)
    edges = np.stack([np.arange(240), (np.arange(240) + 1) % 240], axis=1)
    mask, _ = render_capsules(pts, np.full(240, minor_mm), edges, shape, spacing, occupancy=False)
    return mask, 2 * np.pi * major_mm


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.0, 0.8, 0.8), (2.5, 0.7, 0.7)])
def test_centerline_length_of_an_oblique_curve(spacing):
    # the raw 26-neighbour staircase read this ring 6-22 % long (more on the 2-2.5 mm z grids);
    # the path-smoothed length is within 5 % of 2 pi R on all three grids
    from napari_tubular.geometry import centerline_graph

    mask, true_mm = _tilted_ring(spacing)
    sk = hard_skeleton(mask, spacing)
    assert centerline_length_mm(sk, spacing) == pytest.approx(true_mm, rel=0.05)
    assert compute_metrics(mask, mask, spacing)["length_ref_mm"] == pytest.approx(true_mm,
                                                                               rel=0.05)
    fast = compute_metrics(mask, mask, spacing, measured_lengths=False)
    assert fast["length_ref_mm"] == pytest.approx(centerline_length_mm(sk, spacing))
    # the branches table measures the same way (one closed loop: one branch, or a few around a
    # spur's junction)
    graph = centerline_graph(sk, None, spacing)
    assert graph.total_length_mm == pytest.approx(true_mm, rel=0.05)


@pytest.mark.parametrize(("spacing", "radius"), [((3.0, 0.6, 0.6), 4.0), ((3.0, 0.6, 0.6), 8.0),
                                             ((2.5, 0.7, 0.7), 4.0), ((1.0, 1.0, 1.0), 8.0)])
def test_length_of_a_vessel_crossing_thick_slices(spacing, radius):
    """An audit: a vessel crossing the volume along the 3 mm axis read 30 mm of 63 (r 4 mm) and
    15 mm (r 8 mm): thinning ends a radius *in voxels* before each face, three radii in mm on
    3 mm slices. Measured on a near-isotropic grid with the faces extended: the whole length
    (voxel centres of the first and last slice, plus less than a slice)."""
    from napari_tubular.inference import shape_report
    from napari_tubular.synthetic import render_capsules
    from napari_tubular.topology import mask_centerline_length_mm

    shape = tuple(int(round(60 / s)) for s in spacing)
    axis = np.array([[-30.0, 30.0, 30.0], [100.0, 30.0, 30.0]])
    mask, _ = render_capsules(axis, np.full(2, radius), np.array([[0, 1]]), shape, spacing,
                              occupancy=False)
    true_mm = (shape[0] - 1) * spacing[0]
    length = mask_centerline_length_mm(mask, spacing)
    assert true_mm <= length <= true_mm + spacing[0]
    assert compute_metrics(mask, mask, spacing)["length_ref_mm"] == pytest.approx(length)
    assert shape_report(mask, mask, spacing)["centerline_length_mm"] == pytest.approx(length)
    # the voxel-grid skeleton (clDice's) is what read short
    if spacing[0] > 2:
        assert centerline_length_mm(hard_skeleton(mask, spacing), spacing) < 0.8 * true_mm


def test_measured_length_of_a_free_oblique_tube_and_a_ring():
    """Free ends stay where thinning puts them (about the cap centres) on thick slices too, and
    a closed loop is measured whole."""
    from napari_tubular.synthetic import render_capsules
    from napari_tubular.topology import mask_centerline_length_mm

    sp = (2.5, 0.7, 0.7)
    shape = (24, 86, 86)
    d = np.array([0.5, 0.6, -0.62]) / np.linalg.norm([0.5, 0.6, -0.62])
    c = np.array([30.0, 30.0, 30.0])
    mask, _ = render_capsules(np.array([c - 18 * d, c + 18 * d]), np.full(2, 2.0),
                              np.array([[0, 1]]), shape, sp, occupancy=False)
    assert mask_centerline_length_mm(mask, sp) == pytest.approx(36.0, rel=0.1)
    ring, true_mm = _tilted_ring(sp)
    assert mask_centerline_length_mm(ring, sp) == pytest.approx(true_mm, rel=0.05)
    assert mask_centerline_length_mm(np.zeros((4, 4, 4), bool), sp) == 0.0


def test_measured_length_where_one_grid_collapses():
    """A review: a 30 mm capsule along z on a 0.5 mm grid (r 5 mm, even width) thinned to a
    stub (0.5 mm); a 2 mm tube leaving through an edge of the volume read 0 mm on the fine grid
    (29-40 mm on the voxel grid). The guarded skeleton retries a stub trimmed by one layer, and
    the measured length is the longer of the two grids'."""
    from napari_tubular.synthetic import render_capsules
    from napari_tubular.topology import mask_centerline_length_mm

    sp = (0.5, 0.5, 0.5)
    c = np.array([34.85, 34.75, 34.75])
    tube, _ = render_capsules(np.array([c - [15, 0, 0], c + [15, 0, 0]]), np.full(2, 5.0),
                              np.array([[0, 1]]), (140, 140, 140), sp, occupancy=False)
    assert mask_centerline_length_mm(tube, sp) == pytest.approx(30.0, rel=0.1)
    assert centerline_length_mm(hard_skeleton(tube, sp), sp) == pytest.approx(30.0, rel=0.1)
    sp = (1.0, 1.0, 1.0)
    c = np.full(3, 29.5)
    d = np.array([np.sin(np.pi / 4), 0.0, -np.cos(np.pi / 4)])
    edge, _ = render_capsules(np.array([c, c + 200 * d]), np.full(2, 2.0), np.array([[0, 1]]),
                              (60, 60, 60), sp, occupancy=False)
    assert mask_centerline_length_mm(edge, sp) == pytest.approx(29.5 * np.sqrt(2), rel=0.1)


def test_guarded_skeleton_on_even_width_bar():
    bar = np.zeros((12, 12, 30), bool)
    bar[4:8, 4:8, 3:27] = True  # even width: scikit-image alone returns an empty skeleton here
    sk = hard_skeleton(bar)
    assert sk.any()
    assert not (sk & ~bar).any()
    out = compute_metrics(bar, bar, (1.0, 1.0, 1.0))
    assert out["cldice"] == 1.0
    assert out["length_ref_mm"] > 0


@pytest.mark.parametrize(("pred_empty", "ref_empty"), [(True, False), (False, True), (True, True)])
def test_empty_masks_are_defined(pred_empty, ref_empty):
    m = tree()
    empty = np.zeros_like(m)
    out = compute_metrics(empty if pred_empty else m, empty if ref_empty else m, (1.0, 1.0, 1.0))
    json.dumps(out, allow_nan=False)  # no NaN / inf
    if pred_empty and ref_empty:
        assert out["dice"] == out["cldice"] == out["tprec"] == out["tsens"] == 1.0
        assert out["hd95_mm"] == out["assd_mm"] == 0.0
    else:
        assert out["dice"] == out["cldice"] == out["tprec"] == out["tsens"] == 0.0
        assert out["hd95_mm"] is None
        assert out["assd_mm"] is None
        assert out["b0_error"] == 1
    assert out["volume_pred_ml"] == (0.0 if pred_empty else m.sum() / 1000.0)


def test_bad_input():
    m = tree()
    with pytest.raises(ValueError, match="shape"):
        compute_metrics(m, m[:, :, :-1], (1, 1, 1))
    prob = m * 0.8 + 0.1
    with pytest.raises(ValueError, match="threshold"):
        compute_metrics(prob, m, (1, 1, 1))
    with pytest.raises(ValueError, match="negative"):
        compute_metrics(m.astype(np.int8) - 1, m, (1, 1, 1))
    with pytest.raises(ValueError, match="NaN"):
        compute_metrics(np.where(m, np.nan, 0.0), m, (1, 1, 1))
    with pytest.raises(ValueError, match="spacing"):
        compute_metrics(m, m, (1, 0, 1))
    with pytest.raises(ValueError, match="3-D"):
        compute_metrics(m[0], m[0], (1, 1, 1))


def test_binarize_accepts_labels():
    lab = np.zeros((4, 4, 4), np.float32)
    lab[1, 1, 1], lab[2, 2, 2] = 1.0, 2.0  # a label volume stored as float
    np.testing.assert_array_equal(binarize(lab), lab > 0)
    assert binarize(lab.astype(np.uint8)).dtype == bool


def test_dice_score_counts_and_agrees_with_compute_metrics(rng):
    from napari_tubular.topology import dice_score

    a = np.zeros((10, 10, 10), bool)
    b = np.zeros_like(a)
    a[2:6, 2:6, 2:6] = True  # 64 voxels
    b[4:8, 2:6, 2:6] = True  # 64 voxels, 32 shared
    assert dice_score(a, b) == pytest.approx(2 * 32 / 128)
    assert dice_score(a, np.zeros_like(a)) == 0.0
    assert dice_score(np.zeros_like(a), np.zeros_like(a)) == 1.0
    p, r = rng.random((20, 20, 20)) > 0.6, rng.random((20, 20, 20)) > 0.5
    assert dice_score(p, r) == pytest.approx(compute_metrics(p, r, (1.0, 1.0, 1.0))["dice"])


def test_dice_and_length_refuse_what_they_cannot_measure():
    """An audit: arrays of other shapes were broadcast (Dice 1.67), probabilities counted as
    masks, a (1, Z, Y, X) skeleton measured 12.8 mm for 16 mm, NaN voxels made components."""
    from napari_tubular.topology import betti_numbers, centerline_length_mm, dice_score

    a = np.zeros((8, 8, 20), bool)
    a[4, 4, 2:18] = True
    with pytest.raises(ValueError, match="shape"):
        dice_score(a[:1], a)
    with pytest.raises(ValueError):
        dice_score(a * 0.4, a)
    with pytest.raises(ValueError, match="3-D"):
        dice_score(a[None], a[None])
    assert centerline_length_mm(a, (1, 1, 1)) == pytest.approx(15.0)
    with pytest.raises(ValueError, match="3-D"):
        centerline_length_mm(a[None], (1, 1, 1))
    nan = a.astype(float)
    nan[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        betti_numbers(nan)
    from napari_tubular.geometry import edt_mm

    with pytest.raises(ValueError, match="NaN"):
        edt_mm(nan, (1, 1, 1))


def test_surface_voxels_of_a_label_array_is_the_union_surface():
    """An audit: integer labels went through bitwise AND (1 & 2 == 0), so the border between
    two touching labels was surface and the result not a bool mask."""
    from napari_tubular.topology.metrics import surface_voxels

    labels = np.zeros((10, 10, 12), np.uint8)
    labels[2:8, 2:8, 2:6] = 1
    labels[2:8, 2:8, 6:10] = 2  # touches label 1 along x
    labels[4, 4, 4] = 3
    got = surface_voxels(labels)
    want = surface_voxels(labels > 0)
    assert got.dtype == bool
    np.testing.assert_array_equal(got, want)
    # the union's surface: a box 6 x 6 x 8 less its 4 x 4 x 6 interior
    assert int(got.sum()) == 6 * 6 * 8 - 4 * 4 * 6
    assert not got[4, 4, 5]  # the label-label border is inside
    assert not got[4, 4, 6]


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 0.7, 0.6)])
def test_surface_distances_of_large_surfaces_take_no_kd_tree(spacing, monkeypatch):
    """A scale audit: a prediction filling most of the volume around a vessel tree spent
    10-18 s (256³) and about 10 minutes (512³) in the k-d tree queries of the surface
    distances, whose cost grows with the distances. Surfaces that are a large part of their
    box and far from each other go through a feature transform (linear in the box), with the
    same exact distances; large surfaces near each other (a noisy prediction's specks on a
    tree: the k-d tree 20 times faster there) keep the k-d tree."""
    from napari_tubular.topology import metrics

    transforms = []
    real = metrics._nearest_mm
    monkeypatch.setattr(metrics, "_nearest_mm",
                        lambda *a: transforms.append(1) or real(*a))
    a = np.zeros((30, 34, 32), dtype=bool)
    a[1:-1, 2:-1, 1:-2] = True
    a[10:14, 12:15, 9:13] = False  # a cavity: surface inside too
    b = np.zeros_like(a)
    b[15, 3:30, 20] = True
    b[5, 8, 4:28] = True
    near = ndi.binary_dilation(a) & ~ndi.binary_erosion(a, iterations=2)  # a's shell
    monkeypatch.setattr(metrics, "SURFACE_FAR_VOXELS", 2.0)
    for other, far in ((b, True), (near, False)):
        transforms.clear()
        d_ab, d_ba = surface_distances(a, other, spacing)
        assert bool(transforms) == far
        e_ab, e_ba = brute_surface_distances(a, other, np.array(spacing))
        np.testing.assert_allclose(np.sort(d_ab), np.sort(e_ab), rtol=1e-12)
        np.testing.assert_allclose(np.sort(d_ba), np.sort(e_ba), rtol=1e-12)
    assert surface_distances(a, b, spacing)[0].max() > 10 * max(spacing)  # far points
