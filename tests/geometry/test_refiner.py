"""Refiner: caching (T_r only re-thresholds, T_p recomputes), equality with refine()."""

import numpy as np
import pytest

from napari_tubular.geometry import EmptySkeletonWarning, Refiner, edt_mm, refine

from ._shapes import small_tree

SP = (2.0, 0.8, 0.8)


@pytest.fixture(scope="module")
def case():
    mask, _ = small_tree(SP, shape=(32, 64, 64))
    d = edt_mm(mask, SP)
    prob = np.where(mask, 0.5 + 0.49 * d / d.max(), 0.01).astype(np.float32)
    return mask, prob, (d + 0.16).astype(np.float32)


def test_tr_change_only_rethresholds(case):
    _, prob, radius = case
    ref = Refiner(prob, radius, SP, device="cpu")
    r1 = ref.update(tp=0.8, tr=0.5)
    assert ref.n_reconstructions == 1
    r2 = ref.update(tr=0.2)
    assert ref.n_reconstructions == 1
    assert r2.refined is r1.refined
    np.testing.assert_array_equal(r2.labels, r1.refined > 0.2)
    assert r2.labels.sum() > r1.labels.sum()
    r3 = ref.update(tp=0.7)
    assert ref.n_reconstructions == 2
    assert r3.tr == 0.2
    assert r3.n_seeds > r1.n_seeds
    one_shot = refine(prob, radius, SP, tp=0.7, tr=0.2)
    np.testing.assert_allclose(r3.refined, one_shot.refined, atol=1e-5)
    np.testing.assert_array_equal(r3.skeleton, one_shot.skeleton)
    ref.update(tp=0.7, tr=0.2)
    assert ref.n_reconstructions == 2  # nothing changed


def test_refiner_points_and_soft_shape(case):
    _, prob, radius = case
    ref = Refiner(prob, radius, SP, tp=0.8, device="cpu")
    res = ref.update()
    pts, r = ref.points()
    np.testing.assert_allclose(pts, res.centers_mm)
    np.testing.assert_allclose(r, res.radii_mm)
    ys = ref.soft_shape()
    assert (ys >= res.refined - 1e-6).all()  # weights p_u <= 1


def test_refiner_empty_then_recovers(case):
    _, prob, radius = case
    ref = Refiner(prob, radius, SP, device="cpu")
    with pytest.warns(EmptySkeletonWarning):
        res = ref.update(tp=1.0)
    assert not res.labels.any()
    assert ref.update(tp=0.8).labels.any()


def test_refiner_errors(case):
    _, prob, radius = case
    with pytest.raises(ValueError, match="shape"):
        Refiner(prob, radius[:-1], SP)
    with pytest.raises(ValueError, match="3-D"):
        Refiner(prob[0], radius[0], SP)
    ref = Refiner(prob, radius, SP, device="cpu")
    with pytest.raises(ValueError, match="tp"):
        ref.update(tp=2.0)
    with pytest.raises(ValueError, match="device"):
        Refiner(prob, radius, SP, device="gpu0")


def test_refiner_seed_cache_follows_any_tp(case):
    _, prob, radius = case
    ref = Refiner(prob, radius, SP, device="cpu")
    for tp in (0.9, 0.3, 0.95, 0.0, 0.6):
        res = ref.update(tp=tp)
        np.testing.assert_array_equal(res.skeleton, prob > tp)
        np.testing.assert_allclose(res.centers_mm, np.argwhere(prob > tp) * np.asarray(SP))


def test_radius_bound_stops_an_axis_ridge_from_ballooning():
    """A straight tube whose radius map is right (EDT) except on its axis, where a one-voxel
    ridge says three times the radius (what a fine-tuned scale head did on a 2.5 mm tube): the
    refined labels balloon without the bound and stay on the tube with it (the cap is 1.5 x
    the distance to the edge of P > 0.5); the bound leaves a correct radius map alone."""
    sp = (0.8, 0.8, 0.8)
    z, y, x = np.indices((40, 40, 48)).astype(float)
    d_axis = np.hypot((z - 20) * sp[0], (y - 20) * sp[1])
    tube = d_axis <= 2.5
    radius = np.where(tube, edt_mm(tube, sp) + 0.16, 0).astype(np.float32)
    prob = np.where(tube, 0.5 + 0.49 * (1 - d_axis / 2.5), 0.0).astype(np.float32)
    ridge = radius.copy()
    ridge[20, 20, :] = 7.5

    def dice(labels):
        lab = labels.astype(bool)
        return 2 * (lab & tube).sum() / (lab.sum() + tube.sum())

    unbounded = Refiner(prob, ridge, sp, device="cpu", radius_bound=None).update(tp=0.6, tr=0.6)
    bounded = Refiner(prob, ridge, sp, device="cpu").update(tp=0.6, tr=0.6)
    # measured: 7,024 voxels unbounded, 2,112 bounded, for a 1,392-voxel tube (the cap lets the
    # ridge reach 1.5 x (2.5 + 0.4) mm = 4.4 mm)
    assert unbounded.labels.sum() > 4 * tube.sum()
    assert dice(unbounded.labels) < 0.5
    assert bounded.labels.sum() < 1.6 * tube.sum()
    assert dice(bounded.labels) > 0.75
    clean = Refiner(prob, radius, sp, device="cpu").update(tp=0.6, tr=0.6)
    clean_unbounded = Refiner(prob, radius, sp, device="cpu", radius_bound=None).update(tp=0.6,
                                                                                       tr=0.6)
    np.testing.assert_array_equal(clean.labels, clean_unbounded.labels)
    with pytest.raises(ValueError, match="radius_bound"):
        Refiner(prob, radius, sp, radius_bound=0.1)
    # the one-shot function is the Refiner, cap included (an audit: it had no cap and gave
    # the unbounded balloon)
    one_shot = refine(prob, ridge, sp, tp=0.6, tr=0.6)
    np.testing.assert_array_equal(one_shot.labels, bounded.labels)
    np.testing.assert_array_equal(refine(prob, ridge, sp, tp=0.6, tr=0.6,
                                         radius_bound=None).labels, unbounded.labels)


def test_refiner_results_cannot_corrupt_its_cache(case):
    """The cached arrays a result shares are read-only (an audit: editing ``refined`` in place
    changed every later T_r step); bad maps are refused with a message."""
    _mask, prob, radius = case
    sp = SP
    refiner = Refiner(prob, radius, sp, device="cpu")
    first = refiner.update(tp=0.6, tr=0.5)
    with pytest.raises(ValueError, match="read-only"):
        first.refined[...] = 0
    first.labels[...] = 0  # the caller's own array
    assert refiner.update(tr=0.4).labels.sum() > 0
    # the same thresholds again give fresh labels too (an audit: the zeroed ones came back)
    again = refiner.update(tr=0.4)
    n = int(again.labels.sum())
    again.labels[...] = 0
    assert int(refiner.update(tr=0.4).labels.sum()) == n > 0
    assert int(refiner.update().labels.sum()) == n
    # NaN probabilities are said and taken as 0; a map of NaN only is refused
    holes = prob.astype(np.float32).copy()
    holes[0, 0, :3] = np.nan
    with pytest.warns(UserWarning, match="3 NaN voxel"):
        refine(holes, radius, sp, tp=0.6, tr=0.5)
    with pytest.raises(ValueError, match="only NaN"):
        refine(np.full(prob.shape, np.nan, np.float32), radius, sp)
    bad = radius.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        Refiner(prob, bad, sp)
    with pytest.raises(ValueError, match="negative"):
        refine(prob, -radius, sp)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        refine(prob * 3, radius, sp)


def _fresh(prob, radius, tp, tr):
    return Refiner(prob, radius, SP, device="cpu").update(tp=tp, tr=tr)


def test_small_tp_steps_update_the_cache_and_match_a_whole_reconstruction(case):
    """A slider drag: each T_p step adds or subtracts only the kernels of the seeds it changes
    (info['incremental']); after a run of such steps, up and down, the result is a fresh
    refiner's at the same thresholds: the same skeleton, seeds and radii, Y_r to float32
    rounding, and the labels wherever Y_r is not within rounding of T_r."""
    _, prob, radius = case
    ref = Refiner(prob, radius, SP, device="cpu")
    ref.update(tp=0.80, tr=0.5)
    rng = np.random.default_rng(3)
    tps = np.clip(0.8 + np.cumsum(rng.normal(0, 0.01, 25)), 0.6, 0.95)
    kinds = []
    for tp in tps:
        res = ref.update(tp=float(tp))
        kinds.append(res.info.get("incremental", False))
        fresh = _fresh(prob, radius, float(tp), 0.5)
        np.testing.assert_array_equal(res.skeleton, fresh.skeleton)
        np.testing.assert_array_equal(res.centers_mm, fresh.centers_mm)
        np.testing.assert_array_equal(res.radii_mm, fresh.radii_mm)
        np.testing.assert_allclose(res.refined, fresh.refined, atol=1e-5, rtol=1e-5)
        near = np.abs(fresh.refined - 0.5) < 1e-4
        np.testing.assert_array_equal(res.labels[~near], fresh.labels[~near])
        assert res.refined.min() >= 0.0
        assert not res.refined.flags.writeable
    assert sum(kinds) >= 20  # the steps were incremental, not whole reconstructions
    # the points and the unweighted soft shape follow the incremental seed set
    pts, r = ref.points()
    np.testing.assert_array_equal(pts, ref.result.centers_mm)
    ys = ref.soft_shape()
    fresh_ref = Refiner(prob, radius, SP, device="cpu")
    fresh_ref.update(tp=ref.tp, tr=0.5)
    np.testing.assert_allclose(ys, fresh_ref.soft_shape(), atol=1e-5)


def test_removed_seeds_leave_no_residue_at_a_tiny_tr(case):
    """Subtracting a removed seed's kernel leaves float32 rounding where nothing else reaches;
    a T_r below EXACT_TR must not label those voxels: the refiner sums every seed again."""
    from napari_tubular.geometry.refiner import EXACT_TR

    _, prob, radius = case
    ref = Refiner(prob, radius, SP, device="cpu")
    ref.update(tp=0.7, tr=0.5)
    assert ref.update(tp=0.75).info.get("incremental")
    tiny = EXACT_TR / 10
    res = ref.update(tr=tiny)
    assert not res.info.get("incremental")
    fresh = _fresh(prob, radius, 0.75, tiny)
    np.testing.assert_array_equal(res.labels, fresh.labels)
    res = ref.update(tp=0.8)  # and T_p steps at that T_r stay exact
    assert not res.info.get("incremental")
    np.testing.assert_array_equal(res.labels, _fresh(prob, radius, 0.8, tiny).labels)


def test_large_tp_jumps_and_long_drags_sum_every_seed_again(case):
    from napari_tubular.geometry.refiner import INCREMENTAL_MAX_STEPS

    _, prob, radius = case
    ref = Refiner(prob, radius, SP, device="cpu")
    ref.update(tp=0.95, tr=0.5)
    assert not ref.update(tp=0.55).info.get("incremental")  # most seeds change
    steps = [ref.update(tp=0.55 + 0.001 * ((i % 2) + 1)).info.get("incremental", False)
             for i in range(INCREMENTAL_MAX_STEPS + 1)]
    assert all(steps[:INCREMENTAL_MAX_STEPS])
    assert not steps[-1]


def test_seeds_at_a_probability_equal_to_float32_tp_do_not_depend_on_earlier_steps():
    """An audit: probabilities on a grid of 0.05 (float32(0.05) > 0.05) and the sliders at
    T_p 0.9 -> 0.05 -> 0.02: the first step's candidates (float32 ``P > 0.05``) left out the
    voxels of P == float32(0.05) while the count (float64) took them as seeds, so the
    incremental step to 0.02 added nothing and lost their kernels (here: skeleton 9506
    voxels against 10028 for a fresh refiner at 0.02, 39 label voxels wrong); at T_p 0.05
    itself the seeds depended on the slider's earlier values."""
    rng = np.random.default_rng(0)
    prob = (rng.integers(0, 21, (20, 22, 24)) / 20).astype(np.float32)
    radius = np.full(prob.shape, 1.5, np.float32)
    ref = Refiner(prob, radius, (1.0, 0.8, 1.2), device="cpu", radius_bound=None)
    for tp in (0.9, 0.05, 0.02, 0.05, 0.3, 0.1, 0.05):
        got = ref.update(tp, 0.4)
        fresh = Refiner(prob, radius, (1.0, 0.8, 1.2), device="cpu",
                        radius_bound=None).update(tp, 0.4)
        np.testing.assert_array_equal(got.skeleton, prob > tp)
        np.testing.assert_array_equal(got.skeleton, fresh.skeleton)
        np.testing.assert_allclose(got.refined, fresh.refined, atol=1e-5)


def test_a_tiny_tr_relative_to_a_large_map_sums_every_seed_again():
    """An outside judge: the residue a removed kernel leaves grows with the sum it was taken
    from (4.9e-4 where a 14 mm aorta's Y_r reached 1049), so a T_r of 1e-3 could label empty
    voxels after incremental steps; below EXACT_TR_RELATIVE of the map's largest value the
    refiner sums every seed again and the labels are a fresh refiner's."""
    from napari_tubular.geometry.refiner import EXACT_TR, EXACT_TR_RELATIVE

    sp = (1.0, 1.0, 1.0)
    zz, yy, xx = np.indices((24, 40, 40))
    d = np.sqrt((yy - 20.0) ** 2 + (xx - 20.0) ** 2)
    prob = np.clip(1.0 - d / 12.0, 0.01, 1.0).astype(np.float32)  # a fat tube along z
    radius = np.full(prob.shape, 9.0, np.float32)
    ref = Refiner(prob, radius, sp, device="cpu", radius_bound=None)
    first = ref.update(tp=0.3, tr=0.5)
    peak = float(first.refined.max())
    tiny = 0.5 * EXACT_TR_RELATIVE * peak
    assert tiny > EXACT_TR  # the relative bound is the one that matters here
    assert ref.update(tp=0.32).info.get("incremental")
    n = ref.n_reconstructions
    res = ref.update(tr=tiny)
    assert ref.n_reconstructions == n + 1  # a whole sum, not a re-threshold of the residues
    assert not res.info.get("incremental")
    fresh = Refiner(prob, radius, sp, device="cpu", radius_bound=None).update(tp=0.32, tr=tiny)
    np.testing.assert_array_equal(res.labels, fresh.labels)
    assert ref.update(tr=0.5, tp=0.34).info.get("incremental")  # a usual T_r steps on
