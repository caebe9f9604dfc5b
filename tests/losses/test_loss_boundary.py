"""Boundary loss with the whole-volume signed distance, generalised Dice, alpha schedule."""

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from napari_tubular.geometry.distance import signed_distance
from napari_tubular.losses import (
    BoundaryAlphaScheduler,
    BoundaryLoss,
    GDLBoundaryLoss,
    GeneralizedDiceLoss,
)


def _t(a):
    return torch.from_numpy(np.asarray(a, dtype=np.float32))[None, None]


def _ball(shape=(24, 24, 24), r=6.0):
    g = np.indices(shape).astype(float)
    c = (np.array(shape) - 1) / 2
    return ((g - c[:, None, None, None]) ** 2).sum(0) <= r * r


def test_perfect_is_minimal_and_errors_monotone():
    m = _ball()
    phi = _t(signed_distance(m, (1.0, 1.0, 1.0)))
    loss = BoundaryLoss(activation=None)
    best = float(loss(_t(m), phi))
    assert best < 0  # the minimum of L_B is negative: sum of phi inside
    grown = [float(loss(_t(ndi.binary_dilation(m, iterations=k)), phi)) for k in (1, 2, 3)]
    shrunk = [float(loss(_t(ndi.binary_erosion(m, iterations=k)), phi)) for k in (1, 2, 3)]
    assert best < grown[0] < grown[1] < grown[2]
    assert best <= shrunk[0] < shrunk[1] < shrunk[2]
    # no binary or soft prediction can go below the mask: phi < 0 exactly on (most of) the mask
    assert float(loss(torch.rand(phi.shape), phi)) > best


def test_scales_with_spacing_and_ignores_axis_along_the_tube(tube_np):
    m = tube_np((12, 20, 20), radius=4.0, axis=0) > 0  # tube along z, constant along z
    x = torch.randn(1, 1, *m.shape, generator=torch.Generator().manual_seed(0))
    loss = BoundaryLoss()
    base = float(loss(x, _t(signed_distance(m, (1.0, 1.0, 1.0)))))
    # doubling every spacing doubles the mm distances and the loss
    assert float(loss(x, _t(signed_distance(m, (2.0, 2.0, 2.0))))) == pytest.approx(2 * base, rel=1e-5)
    # the z spacing does not change in-plane distances of a tube along z
    for sz in (1.5, 2.5, 5.0):  # (the inner "-1 voxel" offset is min(spacing): keep it 1)
        assert float(loss(x, _t(signed_distance(m, (sz, 1.0, 1.0))))) == pytest.approx(base, rel=1e-5)
    # in-plane anisotropy does change it (distances along x are longer)
    assert float(loss(x, _t(signed_distance(m, (1.0, 1.0, 2.0))))) != pytest.approx(base, rel=1e-3)


def test_whole_volume_phi_differs_from_patch_phi():
    """Why phi comes from the pipeline: a patch cut through the object changes phi."""
    m = _ball((24, 24, 24), 8.0)
    whole = signed_distance(m, (1.0, 1.0, 1.0))[:8]
    patch = signed_distance(m[:8], (1.0, 1.0, 1.0))
    assert not np.allclose(whole, patch)


def test_gdl_perfect_worse_and_monai_equivalence():
    monai_losses = pytest.importorskip("monai.losses")
    m = torch.from_numpy(_ball((12, 12, 12), 3.0)).float()[None, None]
    gdl = GeneralizedDiceLoss(activation=None)
    vals = [float(gdl((1 - s) * m + s * (1 - m), m)) for s in (0.0, 0.2, 0.5, 0.8)]
    assert vals[0] < 1e-6
    assert all(b > a for a, b in zip(vals, vals[1:]))
    x = torch.randn(2, 1, 8, 8, 8, generator=torch.Generator().manual_seed(0))
    t = (torch.rand(2, 1, 8, 8, 8) > 0.7).float()
    two = torch.cat([1 - torch.sigmoid(x), torch.sigmoid(x)], 1)
    ref = monai_losses.GeneralizedDiceLoss()(two, torch.cat([1 - t, t], 1))
    assert float(GeneralizedDiceLoss()(x, t)) == pytest.approx(float(ref), rel=1e-6)
    assert GeneralizedDiceLoss(reduction="none")(x, t).shape == (2,)


def test_scheduler():
    s = BoundaryAlphaScheduler()
    alphas = [s.alpha] + [s.step() for _ in range(120)]
    assert alphas[0] == 1.0
    assert alphas[1] == pytest.approx(0.99)
    assert alphas[50] == pytest.approx(0.5)
    assert min(alphas) == pytest.approx(0.01)
    assert alphas[-1] == pytest.approx(0.01)
    assert all(b <= a for a, b in zip(alphas, alphas[1:]))
    s2 = BoundaryAlphaScheduler(start=0.5, decrement=0.1, floor=0.2)
    s2.load_state_dict(s.state_dict())
    assert s2.alpha == s.alpha
    assert s2.epoch == 120
    with pytest.raises(ValueError, match="floor"):
        BoundaryAlphaScheduler(start=0.5, floor=0.6)
    with pytest.raises(ValueError, match="missing"):
        s2.load_state_dict({"start": 1.0})


def test_combined_follows_the_schedule():
    m = _ball((12, 12, 12), 3.0)
    phi = _t(signed_distance(m, (1.0, 1.0, 1.0)))
    t = _t(m)
    x = torch.randn(t.shape, generator=torch.Generator().manual_seed(1))
    sched = BoundaryAlphaScheduler(start=1.0, decrement=0.25, floor=0.1)
    loss = GDLBoundaryLoss(sched)
    gd, b = float(GeneralizedDiceLoss()(x, t)), float(BoundaryLoss()(x, phi))
    for a in (1.0, 0.75, 0.5, 0.25, 0.1, 0.1):
        assert float(loss(x, t, phi)) == pytest.approx(a * gd + (1 - a) * b, rel=1e-6)
        assert loss.last_parts["alpha"] == pytest.approx(a)
        sched.step()


def test_gradcheck_and_shapes():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 1, 3, 4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    phi = torch.randn(2, 1, 3, 4, 3, generator=g, dtype=torch.float64)
    t = (torch.rand(2, 1, 3, 4, 3, generator=g) > 0.5).double()
    assert torch.autograd.gradcheck(lambda a: BoundaryLoss()(a, phi), (x,))
    assert torch.autograd.gradcheck(lambda a: GeneralizedDiceLoss()(a, t), (x,))
    assert BoundaryLoss(reduction="none")(x, phi).shape == (2, 1)
    with pytest.raises(ValueError, match="same shape"):
        BoundaryLoss()(x, phi[:, :, :2])


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_phi_is_refused(bad):
    """An outside judge: a NaN (or inf) in phi gave a NaN loss, which training reported as
    divergence ("lower --lr"); GDLBoundaryLoss passes it on."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(1, 1, 3, 4, 3, generator=g)
    t = (torch.rand(1, 1, 3, 4, 3, generator=g) > 0.5).float()
    phi = torch.randn(1, 1, 3, 4, 3, generator=g)
    phi[0, 0, 1, 2, 1] = bad
    with pytest.raises(ValueError, match="phi .* must be finite"):
        BoundaryLoss()(x, phi)
    with pytest.raises(ValueError, match="phi .* must be finite"):
        GDLBoundaryLoss()(x, t, phi)
