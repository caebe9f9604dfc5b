"""Refinement of large balls (hand-made radius maps): progress, cancel."""

import numpy as np
import pytest

from napari_tubular.geometry import Refiner, edt_mm, refine, spheres
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


@pytest.mark.parametrize("threads", [1, 2])
def test_progress_rises_to_100_in_the_calling_thread(monkeypatch, threads):
    import threading

    monkeypatch.setattr(spheres, "_CHUNK_ENTRIES", 1 << 12)
    monkeypatch.setattr(spheres, "_MIN_CHUNK", 1 << 10)
    monkeypatch.setattr(spheres, "_n_threads", lambda: threads)
    prob, radius = _blob()
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
    monkeypatch.setattr(spheres, "_CHUNK_ENTRIES", 1 << 12)
    monkeypatch.setattr(spheres, "_MIN_CHUNK", 1 << 10)
    monkeypatch.setattr(spheres, "_n_threads", lambda: threads)
    prob, radius = _blob()
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
