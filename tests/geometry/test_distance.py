"""Distance maps: hand-computed values, scipy agreement, known radii, per-component maps."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_tubular.geometry import (
    SKELETON_RADIUS_OFFSET_VOX,
    distance_maps,
    edt_mm,
    local_radius_mm,
    radius_from_scale,
    scale_classes,
    signed_distance,
    skeletonize_mask,
)

from ._shapes import cylinder, oblique_tube


def test_edt_hand_computed_5x5x5():
    m = np.zeros((5, 5, 5), bool)
    m[1:4, 1:4, 1:4] = True
    d = edt_mm(m, (1, 1, 1))
    assert d.dtype == np.float32
    assert d[2, 2, 2] == pytest.approx(2.0)
    assert d[1, 2, 2] == pytest.approx(1.0)
    assert d[1, 1, 1] == pytest.approx(1.0)
    assert d[0, 0, 0] == 0
    # anisotropic: z steps are 3 mm, so the centre's nearest background is in-plane (2 mm away)
    d = edt_mm(m, (3.0, 1.0, 1.0))
    assert d[2, 2, 2] == pytest.approx(2.0)
    assert d[1, 2, 2] == pytest.approx(2.0)  # y/x 2 mm beat z 3 mm
    d = edt_mm(m, (0.5, 1.0, 1.0))
    assert d[1, 2, 2] == pytest.approx(0.5)
    assert d[2, 2, 2] == pytest.approx(1.0)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 0.7, 0.7), (0.6, 1.3, 0.9)])
def test_edt_matches_scipy_anisotropic(rng, spacing):
    m = ndi.binary_opening(rng.random((24, 28, 20)) > 0.35)
    ours = edt_mm(m, spacing)
    ref = ndi.distance_transform_edt(m, sampling=spacing)
    np.testing.assert_allclose(ours**2, ref**2, rtol=1e-5, atol=1e-4)
    assert (ours[~m] == 0).all()
    assert (ours[m] > 0).all()


def test_edt_scales_with_spacing(rng):
    m = rng.random((16, 16, 16)) > 0.3
    sp = (0.8, 1.1, 0.6)
    np.testing.assert_allclose(edt_mm(m, tuple(2 * s for s in sp)), 2 * edt_mm(m, sp), rtol=1e-6)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.0, 0.5, 0.5), (3.0, 0.8, 0.8),
                                     (0.7, 0.6, 0.9)])
@pytest.mark.parametrize("radius_mm", [2.0, 3.3, 5.0])
def test_cylinder_edt_max_is_radius(spacing, radius_mm):
    shape = (6, int(2 * radius_mm / spacing[1]) + 8, int(2 * radius_mm / spacing[2]) + 8)
    m = cylinder(shape, spacing, radius_mm)
    half_voxel = 0.5 * max(spacing[1:])  # in-plane voxel: the cross-section's resolution
    assert abs(float(edt_mm(m, spacing).max()) - radius_mm) <= half_voxel


def test_radius_at_skeleton_median_error_below_quarter_voxel():
    """The reported radius (the neighbourhood's largest EDT + 0.1 voxel) at skeleton voxels has
    median error < 0.2 voxel on tubes in random directions.

    The raw EDT underestimates thick tubes (the skeleton sits ~0.45 voxel off the axis): checked
    too, so the correction stays justified.
    """
    rng = np.random.default_rng(5)
    raw_bias = {}
    for r in range(1, 9):
        errs, raw = [], []
        for _ in range(6):
            m, interior = oblique_tube(int(max(36, 4 * r + 20)), r, rng)
            sk = skeletonize_mask(m).astype(bool) & interior
            assert sk.sum() > 5
            errs.append(local_radius_mm(m, (1, 1, 1))[sk] - r)
            raw.append(edt_mm(m, (1, 1, 1))[sk] - r)
        e = np.concatenate(errs)
        assert np.median(np.abs(e)) < 0.2, (r, np.median(np.abs(e)))
        raw_bias[r] = float(np.median(np.concatenate(raw)))
    assert np.mean([raw_bias[r] for r in (6, 7, 8)]) < -0.15  # raw EDT is biased low


def test_radius_at_skeleton_anisotropic():
    rng = np.random.default_rng(2)
    sp = (1.6, 0.8, 0.8)
    errs = []
    for r_vox in (3, 5):
        m, interior = oblique_tube(48, r_vox, rng, spacing=sp)
        sk = skeletonize_mask(m, spacing=sp).astype(bool) & interior
        errs.append(np.abs(local_radius_mm(m, sp)[sk] - r_vox * 0.8))
    # error in units of the in-plane voxel (0.8 mm): 0.10 measured (the EDT at the voxel: 0.20)
    assert np.median(np.concatenate(errs)) / 0.8 < 0.2


def test_scale_classes():
    m = np.zeros((12, 12, 12), bool)
    m[1:11, 1:11, 1:11] = True
    z = scale_classes(m, 3, (1, 1, 1))
    assert z.dtype == np.uint8
    assert z.max() == 3
    assert z[~m].max() == 0
    assert z[m].min() >= 1
    np.testing.assert_array_equal(z, np.clip(np.rint(edt_mm(m, (1, 1, 1))), 0, 3))
    # anisotropic: unit = min(spacing) by default; fg never 0 even where D < unit/2 is impossible
    za = scale_classes(m, 5, (2.0, 1.0, 1.0))
    assert za[m].min() >= 1
    assert za.max() <= 5
    assert (scale_classes(m, 5, (2.0, 1.0, 1.0), unit_mm=2.0) <= za).all()
    with pytest.raises(ValueError, match="K"):
        scale_classes(m, 0, (1, 1, 1))
    with pytest.raises(ValueError, match="unit_mm"):
        scale_classes(m, 3, (1, 1, 1), unit_mm=-1)


def test_radius_from_scale():
    z = np.array([0, 1, 3])
    np.testing.assert_allclose(radius_from_scale(z, 0.8),
                               [0, (1 + SKELETON_RADIUS_OFFSET_VOX) * 0.8,
                                (3 + SKELETON_RADIUS_OFFSET_VOX) * 0.8], rtol=1e-6)
    np.testing.assert_allclose(radius_from_scale(z, (0.5, 0.5, 0.5), offset_vox=0), [0, 0.5, 1.5])
    with pytest.raises(ValueError, match="isotropic"):
        radius_from_scale(z, (1.0, 0.5, 0.5))
    with pytest.raises(ValueError, match=">= 0"):
        radius_from_scale([-1], 1.0)


def test_signed_distance():
    m = np.zeros((20, 20, 20), bool)
    m[5:15, 5:15, 5:15] = True
    sp = (1.5, 1.0, 1.0)
    phi = signed_distance(m, sp)
    assert phi.dtype == np.float32
    assert (phi[~m] > 0).all()
    assert (phi[m] <= 0).all()
    assert phi[10, 5, 10] == 0  # inner boundary layer, nearest background 1 mm away along y
    assert phi[5, 10, 10] == pytest.approx(-0.5)  # nearest background 1.5 mm away along z
    assert phi[10, 10, 10] == pytest.approx(-(5.0 - 1.0))  # 5 mm deep along y/x
    assert phi[10, 10, 2] == pytest.approx(3.0)
    np.testing.assert_allclose(phi[~m], ndi.distance_transform_edt(~m, sampling=sp)[~m], rtol=1e-5)
    assert not signed_distance(np.zeros((4, 4, 4)), sp).any()
    assert not signed_distance(np.ones((4, 4, 4)), sp).any()


def test_distance_maps_per_component():
    sp = (1.0, 0.8, 0.8)
    m = np.zeros((20, 30, 30), bool)
    m[2:18, 2:10, 2:10] = True  # thick
    m[5:15, 18:21, 18:21] = True  # thin, separate component
    maps = distance_maps(m, sp)
    d = edt_mm(m, sp)
    np.testing.assert_array_equal(maps["odm"], d)
    nidm, idm, snidm = maps["nidm"], maps["idm"], maps["snidm"]
    u = min(sp)
    for sl in (np.s_[:, :15, :15], np.s_[:, 15:, 15:]):
        comp = np.zeros_like(m)
        comp[sl] = m[sl]
        mc = d[comp].max()
        # documented extremes: 1 on boundary voxels with D = u, u / max_C at the deepest voxel
        assert nidm[comp].max() == pytest.approx(1.0)
        assert nidm[comp].min() == pytest.approx(u / mc, rel=1e-5)
        assert idm[comp].max() == pytest.approx(mc, rel=1e-5)
        # per component: identical to the maps of the component alone
        alone = distance_maps(comp, sp)
        np.testing.assert_allclose(nidm[comp], alone["nidm"][comp], rtol=1e-6)
    assert (nidm >= 0).all()
    assert (nidm <= 1).all()
    assert (nidm[~m] == 0).all()
    assert (snidm[m] > 0).all()
    assert (snidm[~m] < 0).all()
    assert snidm.min() >= -1 - 1e-6
    assert snidm[~m].min() == pytest.approx(-1.0)


@pytest.mark.parametrize("fn", [edt_mm, signed_distance, distance_maps, local_radius_mm])
def test_errors(fn):
    with pytest.raises(ValueError, match="3-D"):
        fn(np.ones((4, 4), bool), (1, 1, 1))
    with pytest.raises(ValueError, match="spacing"):
        fn(np.ones((4, 4, 4), bool), (1, 1))
    with pytest.raises(ValueError, match="spacing"):
        fn(np.ones((4, 4, 4), bool), (1, 0, 1))


def test_remove_small_components_by_physical_size():
    from napari_tubular.geometry import remove_small_components

    m = np.zeros((10, 10, 10), bool)
    m[1:3, 1:3, 1:3] = True  # 8 voxels
    m[5:9, 5:9, 5:9] = True  # 64 voxels
    m[0, 9, 9] = True  # 1 voxel, touches nothing
    out, n = remove_small_components(m, (2.0, 1.0, 1.0), 16.0)  # 8 vox = 16 mm^3 is kept
    assert n == 1
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out.astype(bool), m & ~(np.arange(10)[:, None, None] == 0))
    out, n = remove_small_components(m, (1.0, 1.0, 1.0), 16.0)
    assert n == 2
    assert out.sum() == 64
    out, n = remove_small_components(m, (1.0, 1.0, 1.0), 0)
    assert n == 0
    assert out.sum() == m.sum()
    with pytest.raises(ValueError, match="min_size_mm3"):
        remove_small_components(m, (1.0, 1.0, 1.0), -1)
    with pytest.raises(ValueError):
        remove_small_components(m[0], (1.0, 1.0, 1.0), 5)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.0, 0.7, 0.7)])
def test_clip_radius_spikes_keeps_a_distance_map_and_clips_a_ridge(spacing):
    """A tube's distance map (1-Lipschitz) comes through unchanged; a one-voxel ridge on its axis
    at twice the radius (the scale head on a grid-aligned tube, an audit) comes down to its
    neighbours' bound; voxels outside the mask are never touched."""
    from napari_tubular.geometry import clip_radius_spikes

    radius = 2.5
    shape = (12, int(2 * radius / spacing[1]) + 9, int(2 * radius / spacing[2]) + 9)
    m = cylinder(shape, spacing, radius)
    d = edt_mm(m, spacing)
    np.testing.assert_array_equal(clip_radius_spikes(d, m, spacing), d)
    cz, cy, cx = (s // 2 for s in shape)
    axis = np.argmax(d[cz])
    ay, ax = np.unravel_index(axis, d[cz].shape)
    spiked = d.copy()
    spiked[:, ay, ax] = 2.0 * d[:, ay, ax]  # a ridge along the whole axis
    got = clip_radius_spikes(spiked, m, spacing)
    # the median bound: neighbours about one step (an oblique one on a thick-slice grid) further
    step = np.hypot(spacing[0], spacing[1])
    assert np.all(got[2:-2, ay, ax] <= d[2:-2, ay, ax] + step + 1e-6)
    assert np.all(got[2:-2, ay, ax] < 0.8 * spiked[2:-2, ay, ax])
    assert np.all(got[2:-2, ay, ax] >= d[2:-2, ay, ax] - 1e-6)  # never below the right value
    off_axis = np.ones(shape, bool)
    off_axis[:, ay, ax] = False
    np.testing.assert_array_equal(got[off_axis], spiked[off_axis])
    # outside the mask: left alone (a spike there stays); chunking changes nothing
    outside = spiked.copy()
    outside[0, 0, 0] = 50.0
    got2 = clip_radius_spikes(outside, m, spacing, chunk=7)
    assert got2[0, 0, 0] == 50.0
    np.testing.assert_array_equal(got2[m], got[m])
    with pytest.raises(ValueError, match="shape"):
        clip_radius_spikes(d[:-1], m, spacing)


@pytest.mark.parametrize("centre", ["voxel", "corner"])
@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.0, 0.6, 0.6)])
def test_radius_of_grid_aligned_tubes_centred_on_a_voxel_or_a_corner(centre, spacing):
    """The issue's test as a user writes it: ``dist <= r`` around an axis along z through voxel
    centres (or voxel corners). An outside judge: the EDT estimate read 0.51 / 0.34 / 0.26
    voxel too wide at radius 1 / 2 / 3 on voxel centres, 0.49 / 0.43 / 0.51 at radius 2 / 5 /
    6 on corners; the cross-section's area gives under 0.2 voxel. A tube of radius 1 voxel on a
    voxel centre has a section of 5 voxels, the mask of every radius from 1 to 1.41 voxels:
    its area reads sqrt(5 / pi) = 1.26."""
    u = spacing[2]
    for r in range(1, 9):
        n = 2 * r + 9
        y, x = np.mgrid[:n, :n].astype(float)
        c = n // 2 + (0.5 if centre == "corner" else 0.0)
        section = (y - c) ** 2 + (x - c) ** 2 <= r * r
        m = np.repeat(section[None], 30, axis=0)
        sk = skeletonize_mask(m, spacing=spacing).astype(bool)
        assert sk.any()
        radius = local_radius_mm(m, (spacing[0], u, u))[sk] / u
        err = float(np.median(np.abs(radius - r)))
        if centre == "voxel" and r == 1:
            assert float(np.median(radius)) == pytest.approx(np.sqrt(5 / np.pi), abs=0.02)
        else:
            assert err < 0.2, (r, err)


def test_radius_of_axis_aligned_tubes_with_sub_voxel_centres():
    """An audit: tubes along a grid axis with random sub-voxel centres read 0.33 voxel low at
    radius 5 (EDT + 0.2 at the skeleton voxel); the neighbourhood's largest EDT + 0.1 stayed
    within 0.3 voxel; the cross-section area within 0.15 (median absolute error per radius)."""
    rng = np.random.default_rng(7)
    for r in range(1, 9):
        errs = []
        for _ in range(8):
            n = 2 * r + 9
            z, y = np.mgrid[:n, :n]
            c = (n - 1) / 2
            oz, oy = rng.uniform(-0.5, 0.5, 2)
            m = np.repeat(((z - c - oz) ** 2 + (y - c - oy) ** 2 <= r * r)[:, :, None], 20, axis=2)
            sk = skeletonize_mask(m).astype(bool)
            sk[:, :, :5] = sk[:, :, 15:] = False
            errs.append(local_radius_mm(m, (1, 1, 1))[sk] - r)
        assert np.median(np.abs(np.concatenate(errs))) < 0.15, r


def test_distance_maps_and_soft_skeleton_of_a_mask_without_background():
    """Two audits: a mask that fills the volume (a patch inside a large vessel) gave an infinite
    O-DM and NaN I-DM / NI-DM / SNI-DM (the shape-aware losses and LR-Net pre-training went NaN
    in silence), and soft_skeleton_volume an OverflowError. The volume's faces are its boundary:
    finite maps, NI-DM in (0, 1] with 1 at the faces."""
    import torch

    from napari_tubular.geometry import distance_maps
    from napari_tubular.geometry.soft_skeleton import soft_skeleton_volume
    from napari_tubular.losses import MapDiceLoss

    full = np.ones((6, 8, 10), bool)
    maps = distance_maps(full, (2.0, 1.0, 1.0))
    for name, value in maps.items():
        assert np.isfinite(value).all(), name
    nidm = maps["nidm"]
    assert nidm.min() > 0
    assert nidm.max() == pytest.approx(1.0)
    assert nidm[3, 4, 0] == pytest.approx(1.0)  # a voxel on a face of the finest axis
    np.testing.assert_array_equal(maps["snidm"], nidm)
    target = torch.from_numpy(nidm)[None, None]
    assert torch.isfinite(MapDiceLoss()(torch.full_like(target, 3.0), target))
    skel = soft_skeleton_volume(full)
    assert np.isfinite(skel).all()


def test_radius_inputs_with_nan_or_a_bad_chunk_are_refused():
    """A NaN scale class gave a NaN radius, a NaN radius made its 26 neighbours' clipped
    radii NaN, and ``chunk=-1`` returned the radius map unclipped, all in silence (an outside
    judge)."""
    from napari_tubular.geometry import clip_radius_spikes

    with pytest.raises(ValueError, match="NaN"):
        radius_from_scale(np.array([1.0, np.nan]), 0.8)
    r = np.ones((4, 5, 6), np.float32)
    r[2, 2, 2] = 9.0  # a spike
    m = np.ones(r.shape, bool)
    assert clip_radius_spikes(r, m, (1.0, 1.0, 1.0))[2, 2, 2] < 9.0
    for chunk in (0, -1, 2.5):
        with pytest.raises(ValueError, match="chunk"):
            clip_radius_spikes(r, m, (1.0, 1.0, 1.0), chunk=chunk)
    r[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        clip_radius_spikes(r, m, (1.0, 1.0, 1.0))
