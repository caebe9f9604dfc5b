"""Hard skeleton guard, pseudo-skeleton and centreline graph (lengths in mm, topology)."""

import numpy as np
import pytest
from skimage.morphology import skeletonize

from napari_tubular.geometry import centerline_graph, pseudo_skeleton, skeletonize_mask
from napari_tubular.topology import betti_numbers

from ._shapes import trunk_and_branch


def test_guard_even_width_bar():
    m = np.zeros((30, 12, 12), bool)
    m[3:27, 4:8, 4:8] = True  # 4x4 bar centred between voxels
    assert not skeletonize(m).any(), "precondition: scikit-image drops this skeleton"
    sk = skeletonize_mask(m)
    assert sk.dtype == np.uint8
    assert sk.any()
    assert not (sk.astype(bool) & ~m).any()
    # the guard's skeleton is a thin line: one branch of the bar's length in the graph
    graph = centerline_graph(sk, None, (1.0, 1.0, 1.0))
    assert graph.n_branches == 1
    assert 15 <= graph.total_length_mm <= 24
    assert np.ptp(np.argwhere(sk)[:, 1:], axis=0).max() <= 1  # within one voxel of the axis


def test_guard_ball_centred_between_voxels_is_a_point_or_tiny_blob():
    zz, yy, xx = np.indices((16, 16, 16))
    m = (zz - 7.5) ** 2 + (yy - 7.5) ** 2 + (xx - 7.5) ** 2 <= 16
    sk = skeletonize_mask(m).astype(bool)
    assert 1 <= sk.sum() <= 8
    assert not (sk & ~m).any()
    assert np.abs(np.argwhere(sk) - 7.5).max() <= 1.5


@pytest.mark.parametrize("shape", [(1, 6, 6), (1, 10, 10), (6, 1, 8)])
def test_guard_one_voxel_thick_plate_is_not_kept_whole(shape):
    """A plate one voxel thick gets a few skeleton voxels, like a slightly smaller plate does:
    trimming its thin axis would delete it and leave the fallback the whole plate (a false
    positive plate would then cost clDice as much as a false vessel)."""
    m = np.zeros((14, 14, 14), bool)
    m[2 : 2 + shape[0], 3 : 3 + shape[1], 2 : 2 + shape[2]] = True
    sk = skeletonize_mask(m).astype(bool)
    assert 1 <= sk.sum() <= 0.15 * m.sum()
    assert not (sk & ~m).any()


def _tube(shape, spacing, radius_mm, axis, centre_mm, half_length_mm):
    """A straight tube (bool) along ``axis`` with the given physical centre."""
    grid = np.indices(shape).astype(float) * np.asarray(spacing, float).reshape(3, 1, 1, 1)
    across = [a for a in range(3) if a != axis]
    r2 = sum((grid[a] - centre_mm[a]) ** 2 for a in across)
    return (r2 <= radius_mm**2) & (np.abs(grid[axis] - centre_mm[axis]) <= half_length_mm)


@pytest.mark.parametrize(
    ("axis", "centre"), [(2, (21.765, 14.332, 15.105)), (1, (21.158, 14.779, 14.709))]
)
def test_guard_flat_tube_on_an_anisotropic_grid(axis, centre):
    """A 3 mm tube lying in-plane on a 2 x 0.5 x 0.5 mm grid is three slices thick: scikit-image
    left it no skeleton (then a 2-voxel ribbon measured 108 mm for a 24 mm tube) or two voxels
    at one end (clDice of half the tube 0, a 2-voxel break unseen). The guard thins it on a
    near-isotropic grid: one line about the tube's length less its radii."""
    from napari_tubular.topology import centerline_length_mm, compute_metrics, error_map

    sp = (2.0, 0.5, 0.5)
    m = _tube((24, 60, 60), sp, 3.0, axis, centre, 12.0)
    plain = skeletonize(m).astype(bool)
    assert plain.sum() <= 2, "precondition: scikit-image's skeleton is empty or collapsed"
    sk = skeletonize_mask(m, spacing=sp).astype(bool)
    assert not (sk & ~m).any()
    length = centerline_length_mm(sk, sp)
    assert 15.0 <= length <= 24.0
    graph = centerline_graph(sk, None, sp)
    assert graph.n_branches == 1
    extent = np.ptp(np.argwhere(m), axis=0)
    half = m.copy()
    cut = np.argwhere(m)[:, axis].min() + extent[axis] // 2
    index = [slice(None)] * 3
    index[axis] = slice(cut, None)
    half[tuple(index)] = False
    assert compute_metrics(half, m, sp)["tsens"] == pytest.approx(0.5, abs=0.1)
    if axis == 1:
        gap = m.copy()
        start = np.argwhere(m)[:, axis].min() + 8
        gap[:, start : start + 2] = False
        assert compute_metrics(gap, m, sp)["cldice"] < 1.0
        assert len(error_map(gap, m, sp).sites) >= 1


def test_ridge_fallback_is_a_line_not_a_ribbon():
    """When even the trimmed tube has no skeleton the medial ridge is used: two voxels wide
    for an even-width tube, and every neighbour pair of it was counted as length (x3-4). It is
    trimmed to a line."""
    from napari_tubular.geometry.skeleton import _trimmed
    from napari_tubular.topology import centerline_length_mm

    sp = (0.7, 0.7, 0.7)
    m = _tube((32, 48, 32), sp, 1.5, 1, (11.021, 17.135, 10.451), 12.0)
    assert not skeletonize(m).any(), "precondition"
    assert not skeletonize(_trimmed(np.pad(m, 1))).any(), "precondition: the ridge is used"
    sk = skeletonize_mask(m, spacing=sp).astype(bool)
    assert not (sk & ~m).any()
    assert 20.0 <= centerline_length_mm(sk, sp) <= 26.0
    assert centerline_graph(sk, None, sp).n_branches == 1


def test_every_component_gets_a_skeleton(rng):
    m = np.zeros((40, 40, 40), bool)
    zz, yy, xx = np.indices(m.shape)
    centres = [(10.5, 10.5, 10.5), (28.5, 28.5, 12.5), (12, 30, 30)]
    for c in centres:
        m |= (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= 16
    m[30:36, 5:7, 20:34] = True  # even-width bar
    sk = skeletonize_mask(m).astype(bool)
    import cc3d

    lab, n = cc3d.connected_components(m, connectivity=26, return_N=True)
    assert n == 4
    assert set(np.unique(lab[sk])) == set(range(1, n + 1))
    assert not (sk & ~m).any()
    assert not skeletonize_mask(np.zeros((5, 5, 5))).any()


def test_pseudo_skeleton(rng):
    p = rng.random((8, 9, 10)).astype(np.float32)
    s = pseudo_skeleton(p, 0.9)
    assert s.dtype == np.uint8
    np.testing.assert_array_equal(s, p > 0.9)
    with pytest.raises(ValueError, match="tp"):
        pseudo_skeleton(p, 1.5)
    with pytest.raises(ValueError, match="3-D"):
        pseudo_skeleton(p[0], 0.5)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.0, 0.5, 0.7)])
def test_graph_straight_and_diagonal_lines(spacing):
    sk = np.zeros((20, 20, 20), bool)
    sk[5, 5, 2:17] = True  # 15 voxels along x
    rad = np.full(sk.shape, 1.5, np.float32)
    g = centerline_graph(sk, rad, spacing)
    assert g.n_branches == 1
    assert g.branches["length_mm"][0] == pytest.approx(14 * spacing[2])
    assert g.branches["mean_radius_mm"][0] == pytest.approx(1.5)
    assert len(g.end_points_vox) == 2
    assert len(g.branch_points_vox) == 0
    assert {tuple(g.branches["start_voxel"][0]), tuple(g.branches["end_voxel"][0])} == {
        (5, 5, 2), (5, 5, 16)}
    np.testing.assert_allclose(g.branches["centroid_mm"][0], np.array([5, 5, 9]) * spacing)
    # diagonal line: steps of sqrt(sz^2 + sy^2 + sx^2)
    sk = np.zeros((20, 20, 20), bool)
    i = np.arange(3, 15)
    sk[i, i, i] = True
    g = centerline_graph(sk, None, spacing)
    assert g.n_branches == 1
    assert g.branches["length_mm"][0] == pytest.approx(11 * np.sqrt(np.sum(np.square(spacing))))


def test_graph_y_shape():
    sp = (1.0, 1.0, 1.0)
    sk = np.zeros((30, 30, 30), bool)
    sk[2:15, 15, 15] = True  # trunk (13 voxels), junction at (14, 15, 15)
    for k in range(1, 10):
        sk[14 + k, 15 + k, 15] = True  # diagonal arm
        sk[14 + k, 15 - k, 15] = True  # other arm
    rad = np.zeros(sk.shape, np.float32)
    rad[:15] = 3.0
    rad[15:] = 1.0
    g = centerline_graph(sk, rad, sp)
    assert g.n_branches == 3
    assert len(g.end_points_vox) == 3
    assert (g.node_kind == "branch").sum() == 1
    assert (g.node_kind == "end").sum() == 3
    lengths = np.sort(g.branches["length_mm"])
    np.testing.assert_allclose(lengths, np.sort([12.0, 9 * np.sqrt(2), 9 * np.sqrt(2)]))
    assert g.total_length_mm == pytest.approx(12 + 18 * np.sqrt(2))
    # every branch joins the junction node and one end node
    junction = int(np.flatnonzero(g.node_kind == "branch")[0])
    for row in g.table():
        assert junction in (row["src_node"], row["dst_node"])
        assert row["src_node"] != row["dst_node"]
    trunk = int(np.argmax(g.branches["n_voxels"]))
    assert g.branches["mean_radius_mm"][trunk] == pytest.approx(3.0)
    lv = g.label_volume(sk.shape)
    assert (lv > 0).sum() == sk.sum() - 1  # all voxels but the junction


def test_graph_empty_and_errors():
    g = centerline_graph(np.zeros((5, 5, 5), bool), np.zeros((5, 5, 5)), (1, 1, 1))
    assert g.n_branches == 0
    assert g.total_length_mm == 0
    assert g.table() == []
    with pytest.raises(ValueError, match="shape"):
        centerline_graph(np.zeros((5, 5, 5), bool), np.zeros((5, 5, 6)), (1, 1, 1))
    with pytest.raises(ValueError, match="3-D"):
        centerline_graph(np.zeros((5, 5), bool), None, (1, 1, 1))


def test_branch_anchor_lies_on_a_curved_branch():
    """An audit: 'go to branch' used the centroid, which for a curved branch (a half ring)
    lies off it, on background; the anchor is the branch voxel nearest the centroid."""
    from napari_tubular.geometry import centerline_graph

    z, y, x = np.indices((9, 40, 40))
    r = np.hypot(y - 19.5, x - 19.5)
    half_ring = (np.abs(r - 14) < 1.5) & (np.abs(z - 4) < 1.5) & (x > 19.5)
    sk = skeletonize_mask(half_ring)
    g = centerline_graph(sk, None, (1.0, 1.0, 1.0))
    assert g.n_branches == 1
    anchor = g.branches["anchor_voxel"][0]
    centroid_vox = np.asarray(g.branches["centroid_mm"][0])
    assert not half_ring[tuple(np.rint(centroid_vox).astype(int))]  # off the branch
    assert sk[tuple(anchor)]
    assert g.table()[0]["anchor_voxel"] == tuple(int(v) for v in anchor)


@pytest.mark.parametrize("x_mm", [20.0, 32.5, 55.0])
def test_a_branch_the_thinning_loses_gets_a_skeleton(x_mm):
    """An outside audit: scikit-image thinned a side branch of even width to nothing while the
    trunk kept its skeleton (clDice 1.0 and no error site for a 36 mm false branch); the
    component's other skeleton (less its last + layer) covers it."""
    trunk, branch, sp = trunk_and_branch(x_mm)
    m = trunk | branch
    assert not (skeletonize(m) & branch & ~trunk).any(), "precondition: the branch is lost"
    sk = skeletonize_mask(m, spacing=sp).astype(bool)
    assert not (sk & ~m).any()
    along = np.unique(np.argwhere(sk & branch & ~trunk)[:, 0])
    assert along.size >= 14  # the branch spans slices 6-23; its skeleton most of them
    graph = centerline_graph(sk, None, sp)
    assert graph.n_branches >= 3  # trunk on both sides of the junction and the branch
    # where scikit-image keeps the branch, its skeleton is returned unchanged
    trunk, branch, sp = trunk_and_branch(45.0)
    assert np.array_equal(skeletonize_mask(trunk | branch, spacing=sp).astype(bool),
                          skeletonize(trunk | branch).astype(bool))


def test_graph_of_small_skeletons_and_staircases():
    """An outside audit: a skeleton where no two non-junction voxels touch crashed (bincount of
    nothing is int64); a 6-connected staircase read as 17 junction voxels and 3 mm, and each arm
    of a plus sign lost a voxel to its junction cluster (the redundant corner steps counted)."""
    t = np.zeros((5, 6, 6), bool)
    for z, y, x in ((1, 2, 4), (2, 3, 4), (2, 4, 3), (3, 2, 3)):
        t[z, y, x] = True
    graph = centerline_graph(t, None, (1.0, 1.0, 1.0))
    assert np.isfinite(graph.total_length_mm)
    stair = np.zeros((3, 12, 12), bool)
    for i in range(8):
        stair[1, 2 + i, 2 + i] = stair[1, 2 + i, 3 + i] = True  # right, down, right, ...
    g = centerline_graph(stair, None, (1.0, 1.0, 1.0))
    assert g.n_branches == 1
    assert len(g.branch_points_vox) == 0
    assert 10.0 <= g.total_length_mm <= 11.5  # the diagonal it samples: 10.6 mm
    plus = np.zeros((3, 13, 13), bool)
    plus[1, 6, 1:12] = plus[1, 1:12, 6] = True  # 4 arms of 5 mm around the centre voxel
    g = centerline_graph(plus, None, (1.0, 1.0, 1.0))
    assert g.n_branches == 4
    np.testing.assert_allclose(g.branches["length_mm"], 5.0, atol=1e-6)


@pytest.mark.parametrize("spacing", [(2.0, 0.7, 0.7), (0.7, 0.7, 2.0)])
def test_measured_graph_reads_branches_along_thick_slices(spacing):
    """An outside audit: the branch table's graph (the voxel grid's skeleton) read a 30 mm
    capsule of radius 4 mm lying along 2 mm slices as 16-18 mm and a tube crossing the field
    of view 14-21 % short. measured_centerline_graph builds it on the skeleton the centerline
    length is measured on: within 10 % of the truth, as on an isotropic grid, with the branch
    voxels and positions on the mask's own grid."""
    from napari_tubular.geometry import local_radius_mm, measured_centerline_graph

    sp = np.asarray(spacing)
    axis = int(np.argmax(sp))
    shape = tuple(int(50 / s) for s in spacing)
    grid = np.stack(np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, sp)],
                                indexing="ij"), -1)
    a = np.array([24.3, 24.6, 24.1])
    b = a.copy()
    a[axis] -= 15.0
    b[axis] += 15.0
    t = np.clip(((grid - a) @ (b - a)) / ((b - a) @ (b - a)), 0, 1)
    capsule = np.linalg.norm(grid - (a + t[..., None] * (b - a)), axis=-1) <= 4.0
    old = centerline_graph(skeletonize_mask(capsule, spacing=spacing), None, spacing)
    assert old.total_length_mm < 24.0  # precondition: the voxel grid's skeleton falls short
    g = measured_centerline_graph(capsule, local_radius_mm(capsule, spacing), spacing)
    assert g.n_branches == 1
    assert 27.0 <= g.total_length_mm <= 33.0
    assert g.branches["mean_radius_mm"][0] == pytest.approx(4.0, abs=0.8)
    assert capsule[tuple(g.skeleton_vox.T)].all()  # on the mask's grid, inside it
    along = g.branches["centroid_mm"][0]
    np.testing.assert_allclose(along, (a + b) / 2, atol=2.0 * sp.max())
    assert g.label_volume(capsule.shape).max() == 1
    # a tube crossing the whole field of view along the coarse axis
    tube = np.linalg.norm(np.delete(grid - a, axis, axis=-1), axis=-1) <= 3.0
    through = measured_centerline_graph(tube, None, spacing).total_length_mm
    assert through >= 0.95 * (shape[axis] - 1) * sp[axis]


# cross-sections (dz, dy) of a vessel of one voxel's radius as the network labelled it (0.8 mm
# grid, x = 20..58): L shapes, diagonal pairs and 2 x 2 stretches
_THIN_SECTIONS = [
    ((0, 1), (1, 0), (1, 1), (1, 2)), ((0, 1), (0, 2), (1, 1)), ((0, 0), (0, 1), (1, 1)),
    ((0, 1), (1, 0), (1, 1), (1, 2)), ((0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (2, 1)),
    *[((0, 1), (0, 2), (1, 1), (1, 2))] * 6, ((0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (2, 1)),
    ((1, 0), (1, 1), (1, 2)), ((1, 1), (1, 2)), ((1, 1), (1, 2)),
    ((0, 1), (1, 0), (1, 1), (1, 2), (2, 1)), ((1, 1), (1, 2)),
    ((1, 1), (1, 2), (2, 1), (2, 2)), ((1, 1), (1, 2), (2, 2)),
    *[((1, 1), (1, 2), (2, 1), (2, 2))] * 3, ((1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)),
    ((1, 1), (1, 2), (1, 3), (2, 2), (2, 3)), *[((1, 2), (1, 3), (2, 2), (2, 3))] * 9,
    *[((1, 2), (1, 3), (2, 2), (2, 3), (3, 2))] * 2, ((1, 2), (1, 3), (2, 2), (2, 3)),
    ((1, 2), (1, 3), (1, 4), (2, 2), (2, 3)), ((1, 2), (1, 3), (2, 2), (2, 3)),
    ((1, 1), (1, 2), (1, 3), (2, 2), (2, 3)),
]


def test_a_thin_irregular_vessel_keeps_one_whole_skeleton():
    """A vessel of one voxel's radius, labelled 2 x 2 for 15 voxels (which scikit-image thins
    to nothing) and irregular beyond: its skeleton is one piece from end to end, and its length
    the tube's (an own phantom of session 28: the trim of the lost stretch cut the skeleton into
    6 pieces, and segment's report read 30 mm for 43)."""
    from napari_tubular.topology import mask_centerline_length_mm

    m = np.zeros((8, 10, 64), bool)
    m[3, 3:5, 5] = True
    for x in range(6, 20):
        m[3:5, 3:5, x] = True
    for x, section in enumerate(_THIN_SECTIONS, start=20):
        for dz, dy in section:
            m[3 + dz, 3 + dy, x] = True
    sk = skeletonize_mask(m, spacing=(0.8, 0.8, 0.8)) > 0
    assert not (sk & ~m).any()
    import cc3d

    assert cc3d.connected_components(sk, connectivity=26, return_N=True)[1] == 1
    xs = np.flatnonzero(sk.any(axis=(0, 1)))
    assert xs[0] <= 6
    assert xs[-1] >= 57
    length = (58 - 5) * 0.8  # voxel centres of the ends
    assert mask_centerline_length_mm(m, (0.8, 0.8, 0.8)) == pytest.approx(length, rel=0.05)


def test_guard_mask_filling_the_volume_is_thinned_as_if_padded():
    # an outside judge: a mask touching the array border everywhere had an infinite inscribed
    # radius in the lost-branch check (the border was not background there), so a volume
    # filled on a 2 x 0.5 x 0.5 mm grid (24 x 7 x 8 mm) kept a 2.5 mm stub across its short
    # axis instead of the line along its 24 mm axis that the same box padded by zeros gets
    spacing = (2.0, 0.5, 0.5)
    full = np.ones((12, 14, 16), bool)
    sk = skeletonize_mask(full, spacing=spacing).astype(bool)
    padded = skeletonize_mask(np.pad(full, 1), spacing=spacing).astype(bool)[1:-1, 1:-1, 1:-1]
    np.testing.assert_array_equal(sk, padded)
    extent = np.ptp(np.argwhere(sk), axis=0) * np.asarray(spacing)
    assert extent[0] >= 12.0  # along z, the slab's long axis (24 mm less its half-widths)
    assert extent[1] <= 0.5
    assert extent[2] <= 0.5


def test_nan_radius_and_nan_probability_are_said():
    """An outside judge: a NaN radius at skeleton voxels gave NaN mean radii in the branch table
    without a word, and pseudo_skeleton dropped NaN voxels silently (refine warns)."""
    sk = np.zeros((5, 5, 12), bool)
    sk[2, 2, 2:10] = True
    rad = np.ones(sk.shape, np.float32)
    rad[0, 0, 0] = np.nan  # off the skeleton: fine
    g = centerline_graph(sk, rad, (2.0, 0.6, 0.6))
    assert np.isfinite(g.branches["mean_radius_mm"]).all()
    rad[2, 2, 5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        centerline_graph(sk, rad, (2.0, 0.6, 0.6))
    prob = np.where(sk, 0.95, 0.1)
    prob[2, 2, 3] = np.nan
    with pytest.warns(UserWarning, match="NaN"):
        s = pseudo_skeleton(prob, 0.9)
    assert s.sum() == 7


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 0.7, 0.7), (0.6, 1.0, 0.8)])
def test_distance_to_the_skeleton_by_kd_tree_is_the_distance_transforms(spacing, monkeypatch):
    """The lost-branch test measures each mask voxel's distance to the skeleton with a k-d tree
    on sparse masks and with a distance transform on dense ones: the same distances (up to the
    bound asked for), and the same guarded skeletons either way."""
    from scipy.spatial.distance import cdist

    from napari_tubular.geometry import skeleton as S
    from napari_tubular.geometry.distance import edt_mm

    rng = np.random.default_rng(7)
    mask = rng.random((14, 15, 16)) < 0.05
    target = rng.random(mask.shape) < 0.01
    target[3, 4, 5] = True
    bound = 6.0
    exact = edt_mm(~target, spacing)[mask]
    brute = cdist(np.argwhere(mask) * spacing, np.argwhere(target) * spacing).min(axis=1)
    np.testing.assert_allclose(exact, brute, rtol=1e-6)  # the transform is exact
    monkeypatch.setattr(S, "KDTREE_MAX_FILL", 1.0)  # a k-d tree for any mask
    kd = S._distance_to(target, mask, spacing, bound)
    near = brute <= bound
    np.testing.assert_allclose(kd[near], brute[near], rtol=1e-6)
    assert np.all(kd[~near] > bound)
    monkeypatch.setattr(S, "KDTREE_MAX_FILL", 0.0)  # a distance transform for any mask
    np.testing.assert_array_equal(S._distance_to(target, mask, spacing, bound), exact)

    # the audit's lost side branch (scikit-image thins it to nothing) is recovered the same way
    # with either distance
    trunk, branch, sp = trunk_and_branch(32.5)
    m = trunk | branch
    assert not (skeletonize(m) & branch & ~trunk).any(), "precondition: the branch is lost"
    skeletons = []
    for fill in (1.0, 0.0):
        monkeypatch.setattr(S, "KDTREE_MAX_FILL", fill)
        skeletons.append(S.skeletonize_mask(m, spacing=sp).astype(bool))
    assert (skeletons[0] & branch & ~trunk).any()
    np.testing.assert_array_equal(skeletons[0], skeletons[1])


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 0.7, 0.7), (0.6, 1.0, 0.8)])
def test_far_voxels_by_blocks_are_those_of_the_voxel_by_voxel_distances(spacing):
    """The lost-branch test asks the k-d tree at block centres first (a block whose centre is
    near enough has no far voxel) and voxel by voxel only in the other blocks: the same far
    voxels as every voxel's distance, with limits tight enough that many are far."""
    import cc3d

    from napari_tubular.geometry import skeleton as S

    rng = np.random.default_rng(11)
    mask = np.zeros((40, 44, 48), bool)
    mask[5:35, 20:24, 10:14] = True  # a bar, a slab and specks: three kinds of component
    mask[10:12, 5:40, 25:45] = True
    mask |= rng.random(mask.shape) < 0.004
    labels, n = cc3d.connected_components(mask, connectivity=26, return_N=True)
    target = mask & (rng.random(mask.shape) < 0.08)
    target[20, 22, 12] = True
    for scale in (0.2, 1.0, 3.0, 8.0):
        limit = (scale * (1.0 + rng.random(n + 1))).astype(np.float32)
        dist = S._distance_to(target, mask, spacing, float(limit.max()))
        want = dist > limit[labels[mask]]
        got = S._beyond_sparse(target, mask, labels, limit, spacing)
        assert 0 < want.sum() < want.size or scale in (0.2, 8.0)
        np.testing.assert_array_equal(got, want)


def test_lost_branch_check_of_a_dense_mask_gathers_its_voxels_in_slabs(monkeypatch):
    """A scale audit: the check for branches the thinning lost gathered the labels, radii and
    distances of all the mask's voxels at once (12 bytes a voxel in each of compute_metrics'
    two threads: 4.5 GB peak for a mask filling a 512³ volume); a slab at a time now, with the
    same skeleton."""
    import tracemalloc

    from napari_tubular.geometry import skeleton as sk_mod

    m = np.zeros((96, 96, 96), dtype=bool)
    m[2:-2, 2:-2, 2:-2] = True
    m[30:60, 40:45, 10:80] = False  # not a plain box
    whole = skeletonize_mask(m, spacing=(1.0, 1.0, 1.0))
    monkeypatch.setattr(sk_mod, "_SLAB_VOXELS", 1 << 15, raising=False)
    orig, peak = sk_mod._recover_lost_branches, []

    def measured(*args, **kwargs):
        tracemalloc.start()
        try:
            return orig(*args, **kwargs)
        finally:
            peak.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()

    monkeypatch.setattr(sk_mod, "_recover_lost_branches", measured)
    slabs = skeletonize_mask(m, spacing=(1.0, 1.0, 1.0))
    np.testing.assert_array_equal(slabs, whole)
    assert peak
    assert peak[0] / m.size < 10, peak[0] / m.size  # gathered whole: 11.4; now 7.5


def test_skeleton_boxes_by_label_are_find_objects():
    """The guards' per-component skeleton boxes come from the skeleton's voxels: the boxes
    ``find_objects`` gives for the labelled skeleton, None for a component without one."""
    import cc3d
    from scipy.ndimage import find_objects

    from napari_tubular.geometry import skeleton as S

    rng = np.random.default_rng(3)
    mask = rng.random((30, 31, 32)) < 0.08
    labels, n = cc3d.connected_components(mask, connectivity=26, return_N=True)
    sk = mask & (rng.random(mask.shape) < 0.3)
    got = S._boxes_by_label(sk, labels, n)
    assert got == find_objects(np.where(sk, labels, 0), max_label=n)
    assert None in got  # some components have no skeleton voxel


def test_guard_keeps_a_blob_the_trim_cuts_in_one_piece():
    """scikit-image thins this 14-voxel blob (two crosses, joined) to nothing; the trimmed
    component falls in two, and its skeleton was two voxels apart: one component counted as
    two pieces of skeleton (an outside judge, 12 of 2,530 components of random blobs)."""
    vox = [(0, 1, 1), (1, 0, 1), (1, 1, 0), (1, 1, 1), (1, 1, 2), (1, 2, 1), (1, 3, 1), (2, 1, 1),
           (2, 2, 1), (2, 3, 0), (2, 3, 1), (2, 3, 2), (2, 4, 1), (3, 3, 1)]
    m = np.zeros((6, 7, 5), bool)
    m[tuple((np.array(vox) + 1).T)] = True
    assert not skeletonize(m).any(), "precondition: scikit-image drops this skeleton"
    for spacing in [(1.0, 1.0, 1.0), (2.5, 0.7, 0.7)]:
        sk = skeletonize_mask(m, spacing=spacing).astype(bool)
        assert not (sk & ~m).any()
        assert betti_numbers(sk)[:2] == (1, 0)


def test_lost_branch_recovery_keeps_the_topology():
    """The lost-branch pass took a near-isotropic skeleton with loops the mask lacks (two
    capsules on 0.3 x 1 x 1 mm voxels: 5 loops), and replaced a sound skeleton of a blob with
    two loops by one in 6 pieces without them (an outside judge)."""
    spacing = (0.3, 1.0, 1.0)
    zyx = np.stack(np.indices((48, 24, 24)), axis=-1) * np.asarray(spacing)

    def capsule(a, b, r):
        a, b = np.asarray(a), np.asarray(b)
        t = np.clip((zyx - a) @ (b - a) / ((b - a) @ (b - a)), 0.0, 1.0)
        return np.sum((zyx - a - t[..., None] * (b - a)) ** 2, axis=-1) <= r * r

    tree = capsule((8.8, 9.7, 8.1), (8.1, 20.0, 19.6), 2.4)
    tree |= capsule((8.8, 9.7, 8.1), (12.8, 23.8, 7.7), 1.8)
    blob = np.zeros((10, 11, 10), bool)
    blob[tuple((np.array(_LOOPED_BLOB) + 1).T)] = True
    for m in (tree, blob):
        sk = skeletonize_mask(m, spacing=spacing).astype(bool)
        assert not (sk & ~m).any()
        assert betti_numbers(sk)[:2] == betti_numbers(m)[:2]


_LOOPED_BLOB = [
    (0, 6, 2), (1, 5, 2), (1, 6, 1), (1, 6, 2), (1, 6, 3), (1, 7, 2), (2, 5, 1), (2, 6, 0), (2, 6, 1),
    (2, 6, 2), (2, 7, 1), (3, 1, 3), (3, 3, 4), (3, 5, 3), (3, 6, 1), (3, 7, 2), (4, 0, 3), (4, 1, 2),
    (4, 1, 3), (4, 1, 4), (4, 2, 3), (4, 2, 4), (4, 3, 3), (4, 3, 4), (4, 3, 5), (4, 4, 3), (4, 4, 4),
    (4, 5, 2), (4, 5, 3), (4, 5, 4), (4, 6, 2), (4, 6, 3), (4, 7, 1), (4, 7, 2), (4, 7, 3), (4, 8, 2),
    (5, 0, 2), (5, 1, 1), (5, 1, 2), (5, 1, 3), (5, 2, 2), (5, 2, 6), (5, 3, 4), (5, 5, 3), (5, 7, 2),
    (6, 1, 2), (6, 1, 6), (6, 2, 5), (6, 2, 6), (6, 2, 7), (6, 3, 6), (7, 2, 6),
]
