"""Refinement of large balls (hand-made radius maps): progress, cancel."""

import numpy as np
import pytest

from napari_tubular.geometry import Refiner, edt_mm, refine, soft_reconstruction, spheres
from napari_tubular.geometry.spheres import Cancelled

SP = (1.2, 1.0, 0.9)


def _blob(radius_mm=7.0, shape=(16, 20, 22), sp=SP):
    """A ball (ellipsoid in voxels), its EDT as the radius map (a user's hand-made map) and P
    rising from 0.5 at the wall to 0.99 at the centre."""
    g = np.stack(np.indices(shape), -1) * np.asarray(sp)
    c = (np.asarray(shape) - 1) / 2 * np.asarray(sp)
    mask = ((g - c) ** 2).sum(-1) <= radius_mm ** 2
    d = edt_mm(mask, sp).astype(np.float32)
    prob = np.where(mask, 0.5 + 0.49 * d / d.max(), 0.0).astype(np.float32)
    return prob, d


def _small_chunks(monkeypatch, threads):
    """A blob, summed in many small chunks by ``threads`` threads."""
    monkeypatch.setattr(spheres, "_CHUNK_ENTRIES", 1 << 12)
    monkeypatch.setattr(spheres, "_MIN_CHUNK", 1 << 10)
    monkeypatch.setattr(spheres, "_n_threads", lambda: threads)
    return _blob()


@pytest.mark.parametrize("threads", [1, 2])
def test_progress_rises_to_100_in_the_calling_thread(monkeypatch, threads):
    import threading

    prob, radius = _small_chunks(monkeypatch, threads)
    calls = []
    main = threading.get_ident()

    def progress(done, total, message):
        calls.append((done, total, message, threading.get_ident() == main))

    res = refine(prob, radius, SP, tp=0.6, progress=progress)
    done = [c[0] for c in calls]
    assert len(calls) > 3
    assert done[0] == 0
    assert done[-1] == 100
    assert done == sorted(done)
    assert len(set(done)) == len(done)
    assert {c[1] for c in calls} == {100}
    assert {c[2] for c in calls} == {spheres.PROGRESS_MESSAGE}
    assert all(c[3] for c in calls)
    ref = refine(prob, radius, SP, tp=0.6)  # progress changes nothing (threads add in any order)
    np.testing.assert_allclose(res.refined, ref.refined, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("threads", [1, 2])
def test_cancel_raises_and_leaves_the_refiner_as_it_was(monkeypatch, threads):
    prob, radius = _small_chunks(monkeypatch, threads)
    ref = Refiner(prob, radius, SP, device="cpu")
    first = ref.update(tp=0.9, tr=0.25)
    asked = []

    def cancel():
        asked.append(1)
        return len(asked) > 2  # during the sum, not before it

    with pytest.raises(Cancelled):
        ref.update(tp=0.5, tr=0.3, cancel=cancel)
    assert len(asked) >= 3
    assert (ref.tp, ref.tr) == (0.9, 0.25)
    assert ref.result is first
    again = ref.update(tp=0.5, tr=0.3)
    fresh = refine(prob, radius, SP, tp=0.5, tr=0.3)
    np.testing.assert_allclose(again.refined, fresh.refined, atol=1e-5)
    np.testing.assert_array_equal(again.labels, fresh.labels)
    with pytest.raises(Cancelled):  # a cancel before the first chunk
        refine(prob, radius, SP, cancel=lambda: True)


def test_refine_maps_raises_inference_cancelled():
    from napari_tubular import inference

    prob, radius = _blob()
    with pytest.raises(inference.Cancelled):
        inference.refine_maps(prob, radius, SP, 0.9, 0.25, cancel=lambda: True)


def _exact_and_fast(prob, radius, sp, tp, monkeypatch):
    """``refine`` by the exact scatter, and with the fast path taken for every eligible seed."""
    calls = []
    original = spheres._sum_fast

    def spy(*args, **kwargs):
        calls.append(args[0].shape[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(spheres, "_sum_fast", spy)
    exact = refine(prob, radius, sp, tp=tp)
    assert not calls  # a small case: never the fast path by default
    monkeypatch.setattr(spheres, "FAST_MIN_RADIUS_VOX", 3.0)
    monkeypatch.setattr(spheres, "FAST_MIN_ENTRIES", 0.0)
    monkeypatch.setattr(spheres, "FAST_MIN_GAIN", 0.0)
    fast = refine(prob, radius, sp, tp=tp)
    assert calls  # the fast path ran
    return exact, fast


#: each seed's kernel on its level's ball is within this fraction of the exact one (the
#: interpolation bound of ``_sum_fast`` for FAST_LEVEL_RATIO 1.05 and truncate 3; 1.7e-3 is
#: the largest found on a fine grid of sigmas and distances)
FAST_RTOL = spheres.FAST_RTOL


@pytest.mark.parametrize(("radius_mm", "sp", "tp"), [
    (7.0, SP, 0.6), (9.0, (1.0, 1.0, 1.0), 0.55), (8.0, (2.0, 0.7, 0.8), 0.7)])
def test_the_fast_path_has_the_exact_support_and_labels(monkeypatch, radius_mm, sp, tp):
    shape = tuple(int(2 * radius_mm / s) + 5 for s in sp)
    prob, radius = _blob(radius_mm, shape, sp)
    exact, fast = _exact_and_fast(prob, radius, sp, tp, monkeypatch)
    ye, yf = exact.refined, fast.refined
    # the support is the exact one (the union of the seeds' balls), to the voxel
    np.testing.assert_array_equal(yf > 0, ye > 0)
    assert np.all(np.abs(yf - ye) <= FAST_RTOL * ye + 1e-6)
    for tr in (1e-6, 0.25, 0.5, 0.6):
        differ = (yf > tr) != (ye > tr)
        # only voxels whose exact value lies within the bound of T_r can change side
        assert np.all(np.abs(ye[differ] - tr) <= FAST_RTOL * ye[differ])
        assert differ.sum() <= 0.002 * (ye > tr).sum()
    np.testing.assert_array_equal(fast.skeleton, exact.skeleton)


def test_the_fast_path_reports_progress_and_can_be_cancelled(monkeypatch):
    monkeypatch.setattr(spheres, "FAST_MIN_RADIUS_VOX", 3.0)
    monkeypatch.setattr(spheres, "FAST_MIN_ENTRIES", 0.0)
    monkeypatch.setattr(spheres, "FAST_MIN_GAIN", 0.0)
    prob, radius = _blob(9.0, (24, 24, 24), (1.0, 1.0, 1.0))
    done = []
    refine(prob, radius, (1.0, 1.0, 1.0), tp=0.55, progress=lambda d, t, m: done.append(d))
    assert done[0] == 0
    assert done[-1] == 100
    assert done == sorted(done)
    asked = []

    def cancel():
        asked.append(1)
        return len(asked) > 3

    with pytest.raises(Cancelled):
        refine(prob, radius, (1.0, 1.0, 1.0), tp=0.55, cancel=cancel)


def test_refiner_steps_after_a_fast_sum_add_and_subtract_the_same_kernels(monkeypatch):
    """A T_p step after a whole sum by the fast path adds / subtracts the fast path's kernels
    (by scatter for a few seeds), so it matches a fresh refine to float32 rounding."""
    monkeypatch.setattr(spheres, "FAST_MIN_RADIUS_VOX", 3.0)
    monkeypatch.setattr(spheres, "FAST_MIN_ENTRIES", 0.0)
    monkeypatch.setattr(spheres, "FAST_MIN_GAIN", 0.0)
    sp = (1.0, 1.0, 1.0)
    prob, radius = _blob(9.0, (24, 24, 24), sp)
    ref = Refiner(prob, radius, sp, device="cpu")
    assert ref.update(tp=0.6, tr=0.25).info["fast"]
    for tp in (0.58, 0.56, 0.6, 0.62):
        res = ref.update(tp=tp)
        assert res.info == {"incremental": True, "fast": True}
    # a T_r step re-thresholds that sum: it says how the sum was made (it said nothing)
    assert ref.update(tr=0.3).info == {"incremental": True, "fast": True}
    assert ref.update(tr=0.25).info == {"incremental": True, "fast": True}
    fresh = refine(prob, radius, sp, tp=0.62, tr=0.25)
    assert fresh.info["fast"]
    np.testing.assert_allclose(res.refined, fresh.refined, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(res.labels, fresh.labels)


def test_the_fast_kernels_by_scatter_equal_those_by_fft():
    rng = np.random.default_rng(3)
    sp = (1.3, 0.9, 1.0)
    shape = (30, 36, 34)
    seeds = np.stack([rng.integers(0, n, 60) for n in shape], 1)
    sig = rng.uniform(3.0, 4.5, 60).astype(np.float32)
    w = rng.uniform(0.5, 1.0, 60).astype(np.float32)
    a = (0.5 / (sig * sig)).astype(np.float32)
    c = ((3 * sig) ** 2).astype(np.float32)
    ok, k, c_lev, _, _, _, h = spheres._fast_plan(w, c, sp)
    assert ok.all()
    lo, size = spheres._fast_frame(seeds, h)
    by_fft = np.zeros(int(np.prod(shape)), np.float32)
    spheres._sum_fast(seeds, w, a, c, sp, shape, k, c_lev, lo, size, 3.0, by_fft,
                      lambda done: None, None)
    by_scatter = np.zeros_like(by_fft)
    spheres._fast_model_scatter(seeds, w, a, c, sp, shape, k, c_lev, 3.0, by_scatter, None,
                                None)
    np.testing.assert_allclose(by_scatter, by_fft, rtol=1e-5, atol=1e-6)
    exact = soft_reconstruction(seeds, sig, w, shape, sp).ravel()  # the exact kernels
    np.testing.assert_array_equal(by_fft > 0, exact > 0)
    assert np.all(np.abs(by_fft - exact) <= FAST_RTOL * exact + 1e-6)


env_fn = spheres._union_envelope


@pytest.mark.parametrize("sp", [(1.0, 1.0, 1.0), (1.5, 0.8, 1.0)])
def test_union_of_many_large_balls_by_the_envelope_equals_the_scatter(sp, monkeypatch):
    rng = np.random.default_rng(5)
    shape = (26, 30, 28)
    c = np.stack([rng.integers(0, n, 400) for n in shape], 1)
    c[0] = 0  # balls clipped by the volume's faces
    c[1] = np.array(shape) - 1
    r = rng.uniform(0.3, 9.0, 400)
    r[2] = 0.0  # draws nothing
    env = spheres._union_envelope(c[r > 0], (r[r > 0] ** 2).astype(np.float32), sp, shape)
    g = np.stack(np.indices(shape), -1) * np.asarray(sp)
    brute = np.zeros(shape, bool)
    for ci, ri in zip(c, r):
        brute |= ((g - ci * np.asarray(sp)) ** 2).sum(-1) < ri * ri
    np.testing.assert_array_equal(env, brute)
    np.testing.assert_array_equal(spheres.union_of_balls(c, r, shape, sp), brute)  # scatter
    calls = []
    monkeypatch.setattr(spheres, "ENVELOPE_MIN_ENTRIES", 0.0)
    monkeypatch.setattr(spheres, "ENVELOPE_MIN_GAIN", 0.0)
    monkeypatch.setattr(spheres, "_union_envelope", lambda *a: calls.append(1) or env_fn(*a))
    np.testing.assert_array_equal(spheres.union_of_balls(c, r, shape, sp), brute)
    assert calls


def test_fast_refined_labels_lie_inside_the_union_of_the_seeds_balls(monkeypatch):
    sp = (1.2, 0.9, 1.0)
    prob, radius = _blob(9.0, (20, 26, 24), sp)
    _, fast = _exact_and_fast(prob, radius, sp, 0.55, monkeypatch)
    assert fast.info["fast"]
    seeds = np.rint(fast.centers_mm / np.asarray(sp)).astype(int)
    balls = spheres.union_of_balls(seeds, fast.radii_mm * (1 + 1e-6), prob.shape, sp)
    assert balls.sum() > fast.labels.sum() > 0
    for tr in (1e-9, 1e-4, 0.25):
        assert not np.any((fast.refined > tr) & ~balls)


def test_no_fft_frame_larger_than_the_bound(monkeypatch):
    """The fast path's FFT frames take about five float64 arrays of a level's frame: a blob
    filling a 512³ volume would have taken about 5 GB. Past FAST_MAX_FRAME_VOXELS the kernels
    are scattered exactly (the same labels as the exact path)."""
    sp = (1.0, 1.0, 1.0)
    prob, radius = _blob(9.0, (23, 23, 23), sp)
    from scipy import fft as sfft

    ffts = []
    original = sfft.rfftn
    monkeypatch.setattr(sfft, "rfftn", lambda *a, **k: ffts.append(1) or original(*a, **k))
    exact = refine(prob, radius, sp, tp=0.6)
    monkeypatch.setattr(spheres, "FAST_MIN_RADIUS_VOX", 3.0)
    monkeypatch.setattr(spheres, "FAST_MIN_ENTRIES", 0.0)
    monkeypatch.setattr(spheres, "FAST_MIN_GAIN", 0.0)
    refine(prob, radius, sp, tp=0.6)
    assert ffts  # the fast path summed by FFT
    ffts.clear()
    monkeypatch.setattr(spheres, "FAST_MAX_FRAME_VOXELS", 1000)
    bounded = refine(prob, radius, sp, tp=0.6)
    assert not ffts
    np.testing.assert_array_equal(bounded.labels, exact.labels)
