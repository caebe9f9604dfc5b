"""Partial-volume boundary trim (napari_tubular.geometry.partial_volume)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_tubular.geometry.partial_volume import partial_volume_fraction, trim_partial_volume


def _tube_scene(seed=0):
    """A straight tube along x: a 2 x 2-voxel core at 300 over 40, a ring of voxels holding
    20 % of the contrast around it (partial volume), noise 5. The 'network mask' is the core
    plus the ring (one voxel too thick all around, as the default model's was on such a
    tube); a one-voxel line at half contrast elsewhere."""
    rng = np.random.default_rng(seed)
    img = np.full((20, 20, 30), 40.0) + rng.normal(0, 5, (20, 20, 30))
    core = np.zeros(img.shape, bool)
    core[8:10, 8:10, 3:27] = True
    ring = np.zeros(img.shape, bool)
    ring[7:11, 7:11, 3:27] = True
    ring &= ~core
    img[core] += 260.0
    img[ring] += 0.2 * 260.0
    line = np.zeros(img.shape, bool)
    line[15, 3, 3:27] = True
    img[line] += 0.3 * 260.0
    return img, core, ring, line


def test_fraction_reads_the_share_of_contrast_and_ignores_units():
    img, core, ring, line = _tube_scene()
    mask = core | ring | line
    frac = partial_volume_fraction(img, mask)
    assert frac.dtype == np.float32
    assert np.median(frac[core]) == pytest.approx(1.0, abs=0.1)
    assert np.median(frac[ring]) == pytest.approx(0.2, abs=0.1)
    # a linear change of units (HU -> [0, 1], counts) gives the same map
    np.testing.assert_allclose(partial_volume_fraction(img * 0.01 + 3.0, mask), frac, atol=1e-4)


def test_trim_removes_the_partial_volume_ring_but_not_thin_vessels_or_the_core():
    img, core, ring, line = _tube_scene()
    mask = core | ring | line
    frac = partial_volume_fraction(img, mask)
    out = trim_partial_volume(mask, frac, 0.4).astype(bool)
    assert out.dtype == bool
    assert out[core].all()  # the vessel itself stays
    assert out[line].all()  # a one-voxel vessel at its own level: nothing below the threshold
    # the ring's side voxels (next to the core's interior) go, and since session 25 its corners
    # too (boundary voxels of a thin part, removed where no component splits or vanishes)
    assert out[ring].mean() < 0.1
    dice_before = 2 * (mask & core).sum() / (mask.sum() + core.sum())
    dice_after = 2 * (out & core).sum() / (out.sum() + core.sum())
    assert dice_after > dice_before + 0.2
    # nothing is trimmed at a fraction of 0, and bad fractions are refused
    assert np.array_equal(trim_partial_volume(mask, frac, 0.0).astype(bool), mask)
    with pytest.raises(ValueError, match="min_fraction"):
        trim_partial_volume(mask, frac, 1.0)


def test_empty_mask_and_outside_the_vessels_box():
    img, core, ring, _ = _tube_scene()
    assert np.all(partial_volume_fraction(img, np.zeros(img.shape, bool)) == 1.0)
    assert not trim_partial_volume(np.zeros(img.shape, bool), np.ones(img.shape, np.float32)).any()


@pytest.mark.parametrize("noise", [2.0, 80.0])
def test_trim_tightens_an_oversized_mask_and_noise_does_not_eat_the_vessel(noise):
    """A blurred 3-voxel-radius tube (contrast 260) and a mask one voxel too wide all around
    (what the network's P > 0.5 does): the trim brings it closer to the truth (Dice up) at low
    noise, and with noise of 0.3 x the contrast it does not trim true vessel voxels (the
    smoothing and the noise margin; raw voxels lost 0.05 Dice on such images)."""
    from scipy import ndimage

    rng = np.random.default_rng(1)
    z, y, x = np.indices((24, 32, 32)).astype(float)
    d = np.hypot(y - 15.3, x - 16.2)
    truth = d <= 3.0
    img = 40.0 + 260.0 * np.clip(0.5 + 3.0 - d, 0, 1)
    img = ndimage.gaussian_filter(img, 0.6) + rng.normal(0, noise, img.shape)
    mask = d <= 4.0
    out = trim_partial_volume(mask, partial_volume_fraction(img, mask), 0.4).astype(bool)

    def dice(a):
        return 2 * (a & truth).sum() / (a.sum() + truth.sum())

    assert out[truth].mean() > 0.99  # the vessel itself stays
    if noise < 10:
        assert dice(out) > dice(mask) + 0.05
    else:
        assert dice(out) >= dice(mask) - 0.005


@pytest.mark.parametrize("chunk", [7, 1 << 18])
def test_trim_equals_its_morphological_definition(monkeypatch, chunk):
    """The trim tests only the candidate voxels (for the sliders' latency); it must remove
    exactly ``labels & boundary & (fraction < min)`` with the boundary from a whole-volume
    6-connected erosion and dilation (faces count as outside), also when the candidates are
    processed in several chunks and the labels touch the volume's faces."""
    from scipy import ndimage

    from napari_tubular.geometry import partial_volume

    monkeypatch.setattr(partial_volume, "_CHUNK", chunk)
    monkeypatch.setattr(partial_volume, "THIN_TRIM", False)  # the thick parts' rule alone
    rng = np.random.default_rng(3)
    lab = ndimage.binary_dilation(rng.random((20, 23, 17)) < 0.08, iterations=1)
    lab[:, :3, :] = True  # a slab on a face: no interior at the face itself
    frac = rng.random(lab.shape).astype(np.float32)
    interior = ndimage.binary_erosion(lab)
    boundary = lab & ~interior & ndimage.binary_dilation(interior)
    expected = lab & ~(boundary & (frac < 0.4))
    out = trim_partial_volume(lab, frac, 0.4)
    assert out.dtype == np.uint8
    assert (expected != lab).sum() > 50  # the scene trims something
    assert np.array_equal(out.astype(bool), expected)


@pytest.mark.parametrize("wall", [-600.0, None])
def test_a_wall_darker_than_the_background_is_what_the_edge_voxels_mix_with(wall):
    """An airway in a lung, mirrored (what ``--polarity dark`` gives): a lumen 150 above the
    parenchyma with a one-voxel wall 600 below it. The edge voxels of the lumen mix lumen and
    wall, so against the wider background (parenchyma and wall averaged) they read low and the
    trim ate true lumen (an audit's airways: 0.58 of the lumen volume, Dice 0.73; here 0.64 of
    it kept). With the material right against the mask as the background where it is darker,
    most of the lumen stays (0.82: the blur still darkens its outermost voxels). The same tube
    without a wall (``None``) is left whole, and a mask one voxel too wide is tightened."""
    from scipy import ndimage

    rng = np.random.default_rng(2)
    z, y, x = np.indices((24, 32, 32)).astype(float)
    d = np.hypot(y - 15.3, x - 16.2)
    lumen = d <= 3.0
    img = 150.0 * np.clip(0.5 + 3.0 - d, 0, 1)
    if wall is not None:
        img += wall * np.clip(0.5 + 4.0 - d, 0, 1) * np.clip(d - 2.5, 0, 1)
    img = ndimage.gaussian_filter(img, 0.6) + rng.normal(0, 10, img.shape)

    def trim(mask):
        return trim_partial_volume(mask, partial_volume_fraction(img, mask), 0.4).astype(bool)

    out = trim(lumen)
    if wall is not None:
        assert out[lumen].mean() > 0.75
    else:
        assert out[lumen].all()
        wide = d <= 4.0
        assert trim(wide).sum() < 0.8 * wide.sum()
        # without a wall the rule changes next to nothing (a negative noise margin replaced the
        # background of the edge voxels in plain tissue: a mutation review)
        from napari_tubular.geometry import partial_volume as pv

        for mask in (lumen, wide):
            with_rule = pv.partial_volume_fraction(img, mask)
            real = pv._wall_background
            try:
                pv._wall_background = lambda *a, **k: None
                # (noise alone takes a voxel or two past the 2-SD margin)
                assert np.mean(with_rule != pv.partial_volume_fraction(img, mask)) < 5e-4
            finally:
                pv._wall_background = real


@pytest.mark.parametrize(("seed", "chunk"), [(3, 1 << 16), (4, 1 << 16), (3, 5)])
def test_the_trim_never_changes_the_topology(seed, chunk, monkeypatch):
    """Session 25: boundary voxels of thin parts (touching no interior voxel) below the
    threshold go too, but only simple points: on random scenes the Betti numbers (components,
    loops, cavities) are those of the labels, what goes is boundary below the threshold, and
    most of the thick parts' boundary below it still goes."""
    from scipy import ndimage

    from napari_tubular.geometry import partial_volume
    from napari_tubular.topology import betti_numbers

    monkeypatch.setattr(partial_volume, "_SIMPLE_CHUNK", chunk)  # several chunks per class
    rng = np.random.default_rng(seed)
    lab = ndimage.binary_dilation(rng.random((22, 25, 19)) < 0.05, iterations=1)
    lab |= rng.random(lab.shape) < 0.03  # single voxels and thin bridges
    frac = rng.random(lab.shape).astype(np.float32)
    out = trim_partial_volume(lab, frac, 0.4).astype(bool)
    six = ndimage.generate_binary_structure(3, 1)
    interior = ndimage.binary_erosion(lab, six)
    boundary = lab & ~interior
    thick = boundary & ndimage.binary_dilation(interior, six)
    low = frac < 0.4
    removed = lab & ~out
    assert not (out & ~lab).any()
    assert not (removed & ~(boundary & low)).any()  # only boundary voxels below the threshold
    assert (removed & thick).sum() > 0.5 * (thick & low).sum()
    assert (removed & ~thick).sum() > 20  # the scene trims thin parts
    assert tuple(betti_numbers(out)) == tuple(betti_numbers(lab))


def test_a_thin_loop_is_not_opened_nor_a_merged_pair_holed():
    """An outside judge: the first version of the trim of thin parts guarded only the
    components: a faint voxel of a one-voxel ring went (its loop opened, b1 1 -> 0), and a
    faint middle column of two thin vessels the network merged was punched through (b1
    0 -> 3)."""
    from napari_tubular.topology import betti_numbers

    ring = np.zeros((5, 20, 20), np.uint8)
    ring[2, 4, 4:16] = ring[2, 15, 4:16] = ring[2, 4:16, 4] = ring[2, 4:16, 15] = 1
    frac = np.ones(ring.shape, np.float32)
    frac[2, 4, 9] = 0.2
    assert np.array_equal(trim_partial_volume(ring, frac, 0.4), ring)
    pair = np.zeros((30, 6, 8), np.uint8)
    pair[2:28, 2:4, 2:6] = 1
    frac = np.ones(pair.shape, np.float32)
    for z in (8, 14, 20):
        frac[z, 2:4, 3:5] = 0.2
    out = trim_partial_volume(pair, frac, 0.4)
    assert tuple(betti_numbers(out)) == tuple(betti_numbers(pair)) == (1, 0, 0)
    assert out.sum() < pair.sum()  # what can go without a hole still goes


def test_thin_vessel_tightened_and_a_faint_stretch_not_cut():
    """A sharp-edged oblique tube of radius 0.8 voxel (partial-volume image) under a mask one
    voxel too wide (what the network gives such a vessel: session 23's thin tortuous vessel
    twice its volume): the trim brings it to the truth; a stretch of the vessel fainter than
    the threshold everywhere is not cut out of it."""
    rng = np.random.default_rng(2)
    shape = (40, 40, 40)
    ss = 4
    fine = (np.indices(tuple(n * ss for n in shape)).reshape(3, -1).T + 0.5) / ss - 0.5
    d = np.linalg.norm(np.cross(fine - [20.0, 20.0, 20.0], [1.0, 0.6, 0.3] / np.linalg.norm(
        [1.0, 0.6, 0.3])), axis=1).reshape(tuple(n * ss for n in shape))
    occupancy = (d <= 0.8).reshape(shape[0], ss, shape[1], ss, shape[2], ss).mean(axis=(1, 3, 5))
    z, y, x = (np.indices(shape) - 20.0)
    axis = np.array([1.0, 0.6, 0.3]) / np.linalg.norm([1.0, 0.6, 0.3])
    dist = np.linalg.norm(np.stack([z, y, x], -1) - (z * axis[0] + y * axis[1] + x * axis[2])[
        ..., None] * axis, axis=-1)
    truth = dist <= 0.8
    img = 40.0 + 300.0 * occupancy + rng.normal(0, 10, shape)
    mask = dist <= 1.6
    out = trim_partial_volume(mask, partial_volume_fraction(img, mask), 0.4).astype(bool)

    def dice(a):
        return 2 * (a & truth).sum() / (a.sum() + truth.sum())

    assert dice(out) > dice(mask) + 0.15
    assert out[truth].mean() > 0.9
    import cc3d

    assert cc3d.connected_components(out, connectivity=26).max() == 1
    # a faint stretch (every voxel far below the threshold): still one piece
    frac = partial_volume_fraction(img, mask)
    t = z * axis[0] + y * axis[1] + x * axis[2]
    frac[(np.abs(t) < 3) & mask] = 0.05
    out = trim_partial_volume(mask, frac, 0.4).astype(bool)
    assert cc3d.connected_components(out, connectivity=26).max() == 1
    assert out[truth & (np.abs(t) >= 3)].mean() > 0.9
