"""Blob-like components (balls, thick plates) are dropped; tubes, pieces at a face and the
largest component are kept."""

import numpy as np
import pytest

from napari_tubular.geometry import (
    BLOB_RATIO,
    remove_blob_components,
    remove_small_components,
    remove_specks_and_blobs,
)


def _scene():
    m = np.zeros((48, 48, 48), bool)
    m[2:46, 4:12, 4:12] = True  # a thick tube, the largest component
    zz, yy, xx = np.mgrid[:48, :48, :48]
    ball = (zz - 24) ** 2 + (yy - 34) ** 2 + (xx - 34) ** 2 <= 25  # radius 5 voxels
    plate = np.zeros_like(m)
    plate[36:43, 18:28, 2:12] = True  # 7 x 10 x 10 voxels: thick enough to judge
    face = np.zeros_like(m)
    face[0:9, 36:44, 2:10] = True  # a thick tube piece cut by the z = 0 face
    small = (zz - 10) ** 2 + (yy - 30) ** 2 + (xx - 20) ** 2 <= 4  # radius 2: too coarse
    thin = np.zeros_like(m)
    thin[24, 18:24, 20] = True  # a short thin tube piece
    return m | ball | plate | face | small | thin, ball, plate, face, small, thin


def test_balls_and_plates_go_tubes_stay():
    m, ball, plate, face, small, thin = _scene()
    out, removed = remove_blob_components(m, (1.0, 1.0, 1.0))
    out = out.astype(bool)
    assert not (out & ball).any()
    assert not (out & plate).any()
    assert (out & face).sum() == face.sum()  # its length runs on to the face
    assert (out & small).sum() == small.sum()  # 2 voxels thick: not judged
    assert (out & thin).sum() == thin.sum()
    assert out[2:46, 4:12, 4:12].all()
    assert sorted(round(r["volume_mm3"]) for r in removed) == sorted([ball.sum(), plate.sum()])


def test_the_largest_component_and_ratio_zero_are_kept():
    zz, yy, xx = np.mgrid[:30, :30, :30]
    ball = (zz - 15) ** 2 + (yy - 15) ** 2 + (xx - 15) ** 2 <= 49
    out, removed = remove_blob_components(ball, (1.0, 1.0, 1.0))
    assert out.sum() == ball.sum()
    assert removed == []
    m, *_ = _scene()
    out, removed = remove_blob_components(m, (1.0, 1.0, 1.0), ratio=0)
    assert out.sum() == m.sum()
    with pytest.raises(ValueError, match="blob ratio"):
        remove_blob_components(m, (1.0, 1.0, 1.0), ratio=-1)


def test_sizes_are_physical():
    # the scene on a 2 mm grid: the same voxels, twice the size in mm; same verdicts
    m, ball, plate, *_ = _scene()
    out, removed = remove_blob_components(m, (2.0, 2.0, 2.0))
    assert not (out.astype(bool) & (ball | plate)).any()
    assert sorted(r["volume_mm3"] for r in removed) == pytest.approx(
        sorted([ball.sum() * 8, plate.sum() * 8]))
    assert BLOB_RATIO == 0.5


def test_a_blob_next_to_another_component_is_kept():
    """A review: a piece of a vessel between two breaks, as short as it is thick, read as a
    blob; one that lies within 5 mm of another component is kept."""
    m = np.zeros((48, 48, 48), bool)
    m[2:46, 4:12, 4:12] = True  # the vessel
    zz, yy, xx = np.mgrid[:48, :48, :48]
    near = (zz - 24) ** 2 + (yy - 8) ** 2 + (xx - 19) ** 2 <= 16  # 3 voxels beside it
    far = (zz - 24) ** 2 + (yy - 36) ** 2 + (xx - 36) ** 2 <= 16
    out, removed = remove_blob_components(m | near | far, (1.0, 1.0, 1.0))
    out = out.astype(bool)
    assert out[near].all()
    assert not out[far].any()
    assert len(removed) == 1


@pytest.mark.parametrize(("spacing", "radius", "depth"), [((2.5, 0.7, 0.7), 4.0, 2.8),
                                                          ((1.0, 1.0, 1.0), 8.0, 7.7)])
def test_a_vessel_lying_along_a_face_is_no_blob(spacing, radius, depth):
    """A review: a vessel whose wall touched a face while running along it was extended into a
    wall by the face extension, read 0-9 mm long and was removed as a 'blob' (70 mm here)."""
    from napari_tubular.topology import mask_centerline_length_mm

    shape = tuple(int(round(e / s)) for e, s in zip((100.0, 84.0, 112.0), spacing))
    z, y, x = (np.arange(n) * s for n, s in zip(shape, spacing))
    z, y, x = np.meshgrid(z, y, x, indexing="ij")
    big = (z - 60.0) ** 2 + (y - 14.0) ** 2 <= 25.0  # the largest component, along x
    vessel = ((z - depth) ** 2 + (y - 56.0) ** 2 <= radius ** 2) & (x >= 14.0) & (x < 84.0)
    assert vessel[0].any()  # its wall is on the face
    assert mask_centerline_length_mm(vessel, spacing) > 70.0 - 2 * radius - 1.0  # flat ends
    out, removed = remove_blob_components(big | vessel, spacing)
    assert removed == []
    assert out.astype(bool)[vessel].all()


def test_a_mask_without_background_is_measured():
    """A review: a mask filling its volume had no background, an infinite distance and NaN."""
    import warnings

    from napari_tubular.topology import mask_centerline_length_mm

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        length = mask_centerline_length_mm(np.ones((12, 20, 20), bool), (2.5, 1.0, 1.0))
    assert np.isfinite(length)
    assert length > 0


def _ellipsoid_scene(spacing, semi_mm, centre_mm, extent_mm=(90.0, 90.0, 90.0)):
    """A long thick tube along z (the largest component) and an ellipsoid, on a grid of the
    given spacing (mm); returns (mask, ellipsoid)."""
    shape = tuple(int(round(e / s)) for e, s in zip(extent_mm, spacing))
    z, y, x = (np.arange(n) * s for n, s in zip(shape, spacing))
    z, y, x = np.meshgrid(z, y, x, indexing="ij")
    tube = (y - 12.0) ** 2 + (x - 12.0) ** 2 <= 36.0
    blob = sum(((c - c0) / a) ** 2 for c, c0, a in zip((z, y, x), centre_mm, semi_mm)) <= 1.0
    return tube | blob, blob


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 0.7, 0.7)])
def test_an_isolated_ellipsoid_is_a_blob_though_its_centerline_is_long(spacing):
    """Session 18: the generator's bright blobs on large fields of view (ellipsoids 20-45 mm
    across) were kept: their medial line is long (an ellipsoid with semi-axes 18, 11, 9 mm
    has one of about 27 mm, over 0.5 x the cube root of its volume) though it is no tube. One
    alone, at most 2.5 of its diameters long, goes."""
    from napari_tubular.topology import mask_centerline_length_mm

    m, blob = _ellipsoid_scene(spacing, (18.0, 11.0, 9.0), (45.0, 60.0, 55.0))
    volume = blob.sum() * np.prod(spacing)
    assert mask_centerline_length_mm(np.pad(blob, 1), spacing) > BLOB_RATIO * volume ** (1 / 3)
    out, removed = remove_blob_components(m, spacing)
    assert not out.astype(bool)[blob].any()
    assert out.astype(bool)[m & ~blob].all()
    assert len(removed) == 1
    assert removed[0]["diameters"] == pytest.approx(2.0, abs=0.25)


def test_an_isolated_thick_piece_longer_than_the_limit_or_at_a_face_stays():
    """Not removed by the length-in-diameters rule: a thick piece 4 diameters long, a short
    one cut by a face (a vessel leaving the field of view), one within 5 mm of another."""
    sp = (1.0, 1.0, 1.0)
    long_piece, long_blob = _ellipsoid_scene(sp, (24.0, 6.0, 6.0), (45.0, 60.0, 60.0))
    cyl = np.zeros_like(long_blob)
    zz, yy, xx = np.mgrid[:90, :90, :90]
    cyl[21:69] = ((yy - 60) ** 2 + (xx - 60) ** 2 <= 36)[21:69]  # 48 mm long, 12 mm wide
    m = (long_piece & ~long_blob) | cyl
    out, removed = remove_blob_components(m, sp)
    assert removed == []
    assert out.astype(bool)[cyl].all()
    face, face_blob = _ellipsoid_scene(sp, (18.0, 11.0, 9.0), (10.0, 60.0, 55.0))
    assert face_blob[0].any()
    out, removed = remove_blob_components(face, sp)
    assert removed == []
    assert out.astype(bool)[face_blob].all()
    near, near_blob = _ellipsoid_scene(sp, (18.0, 11.0, 9.0), (45.0, 12.0, 30.0))
    out, removed = remove_blob_components(near, sp)
    assert removed == []
    assert out.astype(bool)[near_blob].all()


def test_a_notched_blob_goes_the_largest_component_and_full_ended_pieces_stay():
    """Session 18 and its audit. A labelled cavity with an unlabelled channel cut into it (a
    bladder) has a small inscribed ball; its principal extents measure it (about 1.2 diameters)
    and it goes. The largest component is kept even when blob-shaped (a fusiform aneurysm whose
    neck the network missed). A vessel piece cut off on both sides (full ends: a cylinder two
    diameters long) is kept: blobs taper at both ends."""
    from napari_tubular.geometry.components import end_fullness, principal_extents_mm

    sp = (1.0, 1.0, 1.0)
    m, blob = _ellipsoid_scene(sp, (14.0, 12.0, 12.0), (45.0, 58.0, 58.0))
    zz, yy, xx = np.mgrid[:90, :90, :90]
    channel = (np.abs(zz - 45) <= 3) & (np.abs(xx - 58) <= 3) & (yy >= 58)
    blob &= ~channel
    m = (m & ~channel) | blob
    tube = m & ~blob
    assert tube.sum() > blob.sum()
    ext = principal_extents_mm(blob, sp)
    assert ext[-1] / ext[0] == pytest.approx(28.0 / 24.0, abs=0.1)
    assert end_fullness(blob, sp) < 0.5
    out, removed = remove_blob_components(m, sp)
    assert not out.astype(bool)[blob].any()
    assert out.astype(bool)[tube].all()
    assert len(removed) == 1
    # the same blob larger than the tube: the largest component, kept
    big, big_blob = _ellipsoid_scene(sp, (30.0, 22.0, 22.0), (50.0, 60.0, 60.0))
    assert big_blob.sum() > (big & ~big_blob).sum()
    out, removed = remove_blob_components(big, sp)
    assert removed == []
    assert out.astype(bool)[big_blob].all()
    # a piece cut off a 12 mm vessel, 24 mm long, alone: full ends, kept
    piece = (np.abs(zz - 45) < 12) & ((yy - 60) ** 2 + (xx - 60) ** 2 <= 36)
    assert end_fullness(piece, sp) > 0.9
    ext = principal_extents_mm(piece, sp)
    assert ext[-1] / ext[0] <= 2.5
    out, removed = remove_blob_components((m & ~blob) | piece, sp)
    assert removed == []
    assert out.astype(bool)[piece].all()


def test_end_fullness_on_a_thick_slice_grid():
    """Slabs as thick as a voxel along the axis: an ellipsoid along 2.5 mm slices tapers, a
    cylinder along them does not (slabs of the finest spacing left every other one empty)."""
    from napari_tubular.geometry.components import end_fullness

    sp = (2.5, 0.7, 0.7)
    _, blob = _ellipsoid_scene(sp, (24.0, 9.0, 9.0), (45.0, 45.0, 45.0))
    assert end_fullness(blob, sp) < 0.5
    z, y, x = np.meshgrid(*(np.arange(n) * s for n, s in zip((36, 128, 128), sp)), indexing="ij")
    cyl = ((y - 45.0) ** 2 + (x - 45.0) ** 2 <= 36.0) & (z > 20.0) & (z < 70.0)
    assert 0.9 < end_fullness(cyl, sp) < 1.1


def test_components_the_network_is_unsure_of_go():
    """Session 18: specks of soft-tissue texture peak below 0.99, true vessel pieces reach it.
    A component without a voxel at min_confidence goes; none goes when no voxel reaches it."""
    from napari_tubular.geometry import remove_specks_and_blobs, remove_unconfident_components

    m = np.zeros((30, 30, 30), bool)
    p = np.zeros(m.shape, np.float32)
    m[2:28, 2:5, 2:5] = True
    p[2:28, 2:5, 2:5] = 0.9
    p[15, 3, 3] = 1.0  # sure of it at one voxel: kept whole
    m[5:9, 20:24, 20:24] = True
    p[5:9, 20:24, 20:24] = 0.995
    m[20:24, 20:24, 20:24] = True
    p[20:24, 20:24, 20:24] = 0.97  # a speck the network is unsure of
    out, n = remove_unconfident_components(m, p, 0.99)
    assert n == 1
    assert out.sum() == m.sum() - 64
    assert not out[20:24, 20:24, 20:24].any()
    # a model sure of nothing: the level says nothing about it, nothing removed
    out, n = remove_unconfident_components(m, np.minimum(p, 0.9), 0.99)
    assert n == 0
    assert out.sum() == m.sum()
    out, n_removed, _ = remove_specks_and_blobs(m, (1.0, 1.0, 1.0), 20.0, None, p, 0.99)
    assert n_removed == 1
    assert out.sum() == m.sum() - 64
    assert remove_specks_and_blobs(m, (1.0, 1.0, 1.0), 20.0, None, p, None)[0].sum() == m.sum()
    # an outside audit: a 68 mL aorta and IVC peaking at 0.96-0.97 were dropped whole; from
    # CONFIDENCE_MAX_MM3 on a component is kept whatever its probability
    from napari_tubular.geometry import CONFIDENCE_MAX_MM3

    big = np.zeros((40, 40, 40), bool)
    big[2:38, 2:10, 2:10] = True  # 2304 voxels
    big[30:34, 30:34, 30:34] = True  # 64 voxels
    pb = np.where(big, 0.96, 0.0).astype(np.float32)
    pb[20, 20, 20] = 1.0  # something reaches the level (else nothing is judged)
    stats: dict = {}
    assert CONFIDENCE_MAX_MM3 == 5000.0
    out, n = remove_unconfident_components(big | (pb == 1.0), pb, 0.99, (2.5, 1.0, 1.0),
                                           CONFIDENCE_MAX_MM3, stats)
    assert n == 1
    assert out[2:38, 2:10, 2:10].all()  # 5760 mm^3 kept
    assert not out[30:34, 30:34, 30:34].any()
    assert stats == {"removed": 1, "removed_mm3": 160.0}
    out, n = remove_unconfident_components(big | (pb == 1.0), pb, 0.99, (2.0, 1.0, 1.0),
                                           CONFIDENCE_MAX_MM3)
    assert n == 2  # at 4608 mm^3 the tube is small enough to be judged
    with pytest.raises(ValueError, match="spacing"):
        remove_unconfident_components(m, p, 0.99, None, CONFIDENCE_MAX_MM3)
    with pytest.raises(ValueError, match="min confidence"):
        remove_unconfident_components(m, p, 1.5)
    with pytest.raises(ValueError, match="shape"):
        remove_unconfident_components(m, p[:-1], 0.99)


def test_enclosed_cavities_are_filled_before_the_clean_up():
    """An audit: a 3-voxel cavity inside a 14 mm vessel made its skeleton a surface (the
    report's centerline 845 mm for 121) and a Betti-2 error; a lumen encloses nothing."""
    from napari_tubular.geometry import fill_cavities, remove_specks_and_blobs
    from napari_tubular.topology import betti_numbers, centerline_length_mm
    from napari_tubular.topology.metrics import hard_skeleton

    sp = (1.0, 1.0, 1.0)
    zz, yy, xx = np.indices((80, 40, 40)).astype(float)
    tube = ((yy - 19.5) ** 2 + (xx - 19.5) ** 2 <= 12.0**2) & (zz >= 5) & (zz <= 74)
    holed = tube.copy()
    holed[40, 19:21, 19] = False
    holed[41, 19, 19] = False
    assert betti_numbers(holed)[2] >= 1
    stats = {}
    filled = fill_cavities(holed, sp, stats)
    np.testing.assert_array_equal(filled > 0, tube)
    assert stats["cavities_filled"] >= 1
    assert stats["cavities_filled_mm3"] == pytest.approx(3.0)
    labels, _, _ = remove_specks_and_blobs(holed, sp, 20.0, None)
    assert betti_numbers(labels)[2] == 0
    assert centerline_length_mm(hard_skeleton(labels > 0, sp), sp) == pytest.approx(70, abs=25)
    # a ring's hole reaches the outside: not a cavity
    ring = ((np.hypot(yy - 19.5, xx - 19.5) - 12) ** 2 + (zz - 40) ** 2) <= 9
    np.testing.assert_array_equal(fill_cavities(ring, sp) > 0, ring)


def _random_scene(rng, shape, sp):
    """Balls (blob candidates, some hollow), tubes, specks and plates at random places, some
    against the faces, with a random probability map."""
    from napari_tubular.geometry import union_of_balls

    m = np.zeros(shape, bool)
    zz, yy, xx = np.indices(shape)
    for _ in range(rng.integers(2, 6)):  # balls, a few hollow
        c = rng.uniform(0, 1, 3) * (np.array(shape) - 1)
        r = rng.uniform(2.0, 7.0)
        d = np.sqrt(((zz - c[0]) * sp[0]) ** 2 + ((yy - c[1]) * sp[1]) ** 2
                    + ((xx - c[2]) * sp[2]) ** 2)
        m |= (d <= r) & ~((d <= r / 3) & (rng.random() < 0.3))
    for _ in range(rng.integers(1, 4)):  # tubes: a line of balls
        a, b = (rng.uniform(0, 1, 3) * (np.array(shape) - 1) for _ in range(2))
        pts = np.rint(a + np.linspace(0, 1, 40)[:, None] * (b - a)).astype(int)
        m |= union_of_balls(pts, rng.uniform(0.8, 3.0), shape, sp)
    specks = rng.integers(0, np.array(shape), (rng.integers(5, 30), 3))
    m[tuple(specks.T)] = True
    if rng.random() < 0.5:  # a plate
        z = rng.integers(0, shape[0])
        m[z, 5:20, 5:30] = True
    p = np.clip(rng.normal(0.97, 0.04, shape), 0, 1).astype(np.float32)
    p[rng.random(shape) < 0.002] = 1.0
    return m, p


@pytest.mark.parametrize("seed", range(12))
def test_the_fused_clean_up_equals_the_four_steps_one_after_the_other(seed):
    """Session 29: remove_specks_and_blobs labels the filled mask once and applies the speck,
    confidence and blob tests to those labels; it must give exactly what fill_cavities,
    remove_small_components, remove_unconfident_components and remove_blob_components give one
    after the other (each relabelling what the step before left)."""
    from napari_tubular.geometry import (
        BLOB_RATIO,
        fill_cavities,
        remove_blob_components,
        remove_small_components,
        remove_specks_and_blobs,
        remove_unconfident_components,
    )
    from napari_tubular.geometry.components import CONFIDENCE_MAX_MM3

    rng = np.random.default_rng(seed)
    sp = [(1.0, 1.0, 1.0), (2.0, 0.7, 0.7), (0.8, 0.8, 0.8)][seed % 3]
    m, p = _random_scene(rng, (40, 48, 52), sp)
    min_size = [0.0, 5.0, 20.0, 300.0][seed % 4]
    level = [None, 0.99, 0.999][seed % 3]
    ratio = [BLOB_RATIO, None, BLOB_RATIO, 1.5][seed % 4]
    s_ref, s_new = {}, {}
    ref = fill_cavities(m, sp, s_ref)
    ref, n_ref = remove_small_components(ref, sp, min_size)
    if level:
        ref, n_unsure = remove_unconfident_components(ref, p, level, sp, CONFIDENCE_MAX_MM3, s_ref)
        n_ref += n_unsure
    blobs_ref = []
    if ratio:
        ref, blobs_ref = remove_blob_components(ref, sp, ratio)
    out, n_out, blobs_out = remove_specks_and_blobs(m, sp, min_size, ratio, p, level, s_new)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, ref)
    assert n_out == n_ref
    assert s_new == s_ref
    assert sorted(blobs_out, key=lambda d: d["centroid_vox"]) == sorted(
        blobs_ref, key=lambda d: d["centroid_vox"])


@pytest.mark.parametrize(("spacing", "n_vox"), [((2.0, 0.6, 0.6), 18), ((0.7, 0.7, 0.7), 10)])
def test_a_component_of_exactly_the_minimum_size_is_kept(spacing, n_vox):
    """An outside judge: 18 voxels of 2.0 x 0.6 x 0.6 mm are 12.959999999999999 mm^3 in float,
    and a component of exactly ``min_size_mm3 = 12.96`` ("smallest volume kept") was removed."""
    m = np.zeros((6, 6, 30), bool)
    m[2, 2, 2 : 2 + n_vox] = True
    size = round(n_vox * spacing[0] * spacing[1] * spacing[2], 6)
    out, n = remove_small_components(m, spacing, size)
    assert n == 0
    assert out.sum() == n_vox
    out, _n, _ = remove_specks_and_blobs(m, spacing, size, None)
    assert out.sum() == n_vox
    # a threshold a little above the volume still removes it
    out, n = remove_small_components(m, spacing, size * (1 + 1e-6))
    assert n == 1
    assert out.sum() == 0


@pytest.mark.parametrize("bad", [None, "5", [1, 2]])
def test_thresholds_that_are_not_numbers_are_value_errors(bad):
    """None or a string as a threshold raised ``TypeError: ufunc 'isfinite' not supported``
    (an outside judge)."""
    from napari_tubular.geometry import remove_unconfident_components

    m = np.zeros((5, 6, 7), bool)
    m[1:3, 1:4, 1:5] = True
    p = m * 0.9
    with pytest.raises(ValueError, match="min_size_mm3"):
        remove_small_components(m, (1.0, 1.0, 1.0), bad)
    with pytest.raises(ValueError, match="blob ratio"):
        remove_blob_components(m, (1.0, 1.0, 1.0), bad)
    with pytest.raises(ValueError, match="min confidence"):
        remove_unconfident_components(m, p, bad)
    with pytest.raises(ValueError, match="min_size_mm3"):
        remove_specks_and_blobs(m, (1.0, 1.0, 1.0), bad, 0.5)


def test_read_only_bool_masks_are_taken():
    """A read-only bool mask (memory-mapped, or an array napari holds read-only) raised "buffer
    source array is read-only" from cc3d in skeletonize_mask, local_radius_mm and the
    component filters (an outside judge)."""
    from napari_tubular.geometry import (
        local_radius_mm,
        remove_unconfident_components,
        skeletonize_mask,
    )

    m = np.zeros((8, 9, 10), bool)
    m[2:6, 3:6, 1:9] = True
    m[1, 1, 1] = True
    m.flags.writeable = False
    sp = (1.0, 1.0, 1.0)
    p = np.where(m, 0.95, 0.0)
    assert remove_small_components(m, sp, 2.0)[1] == 1
    assert remove_blob_components(m, sp)[0].sum() == m.sum()
    assert remove_unconfident_components(m, p, 0.9)[1] == 0
    assert skeletonize_mask(m, spacing=sp).any()
    assert local_radius_mm(m, sp).max() > 0
