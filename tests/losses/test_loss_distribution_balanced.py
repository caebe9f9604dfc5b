"""Distribution-balanced loss: re-balancing weights, negative-tolerant regularisation, BCE limit."""

import pytest
import torch
import torch.nn.functional as F

from napari_tubular.losses import DistributionBalancedLoss

COUNTS = [500.0, 60.0, 5.0]
N = 1000


def _data(seed=0, shape=(16, 3)):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(shape, generator=g, dtype=torch.float64) * 3
    y = (torch.rand(shape, generator=g) > 0.6).double()
    return z, y


@pytest.mark.parametrize("shape", [(16, 3), (4, 3, 5, 6)])
def test_reduces_to_bce_in_the_documented_limit(shape):
    z, y = _data(shape=shape)
    bce = F.binary_cross_entropy_with_logits(z, y, reduction="none")
    off = DistributionBalancedLoss(COUNTS, N, rebalance=False, negative_tolerant=False, reduction="none")
    assert torch.allclose(off(z, y), bce, atol=1e-12, rtol=1e-10)
    by_params = DistributionBalancedLoss(COUNTS, N, rebalance=False, kappa=0.0, lam=1.0)
    assert float(by_params(z, y)) == pytest.approx(float(bce.mean()), rel=1e-10)
    # and it is not BCE when switched on
    assert float(DistributionBalancedLoss(COUNTS, N)(z, y)) != pytest.approx(float(bce.mean()), rel=1e-3)


def test_rebalancing_weights_by_hand():
    loss = DistributionBalancedLoss(COUNTS, N, alpha=0.1, beta=10.0, mu=0.3)
    y = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    w = loss.weights(y)
    c = 3
    p_i = (1 / c) * (1 / 500 + 1 / 60)
    r = torch.tensor([(1 / (c * n)) / p_i for n in COUNTS], dtype=torch.float64)
    assert torch.allclose(w[0], 0.1 + torch.sigmoid(10 * (r - 0.3)))
    r1 = torch.tensor([5 / n for n in COUNTS], dtype=torch.float64)  # single positive = class 2
    assert torch.allclose(w[1], 0.1 + torch.sigmoid(10 * (r1 - 0.3)))
    assert torch.allclose(w[2], torch.full((3,), 0.1 + torch.sigmoid(torch.tensor(7.0)).item(), dtype=torch.float64))
    # a frequent class co-occurring with a rare one is down-weighted in that sample
    assert w[0, 0] < w[0, 1]


def test_negative_tolerance():
    """Negatives of a rare class are pushed less: lower loss and a gradient in [0, 1]."""
    loss = DistributionBalancedLoss(COUNTS, N, rebalance=False, kappa=0.05, lam=3.0, reduction="none")
    assert float(loss.nu[2]) > 0
    assert float(loss.nu[0]) == pytest.approx(0.0, abs=1e-9)
    z = torch.linspace(-6, 6, 25, dtype=torch.float64)[:, None].repeat(1, 3).requires_grad_(True)
    y = torch.zeros_like(z)
    out = loss(z, y)
    bce = F.binary_cross_entropy_with_logits(z, y, reduction="none")
    assert bool((out[:, 2] < bce[:, 2]).all())
    out.sum().backward()
    assert float(z.grad.min()) >= 0
    assert float(z.grad.max()) <= 1


def test_perfect_minimal_and_monotone():
    _, y = _data(1)
    loss = DistributionBalancedLoss(COUNTS, N)
    vals = [float(loss(m * (2 * y - 1), y)) for m in (30.0, 5.0, 1.0, 0.0, -3.0)]
    assert vals[0] < 1e-6
    assert all(b > a for a, b in zip(vals, vals[1:])), vals


def test_gradcheck_from_labels_and_errors():
    z, y = _data(2, shape=(5, 3))
    z.requires_grad_(True)
    labels = (torch.rand(200, 3, generator=torch.Generator().manual_seed(0)) > torch.tensor([0.3, 0.8, 0.97])).int()
    loss = DistributionBalancedLoss.from_labels(labels, lam=2.0)
    assert torch.allclose(loss.inv_counts, 1.0 / labels.sum(0).float())
    assert torch.autograd.gradcheck(lambda a: loss(a, y), (z,))
    with pytest.raises(ValueError, match="classes"):
        loss(z[:, :2], y[:, :2])
    with pytest.raises(ValueError, match="class_counts"):
        DistributionBalancedLoss([10.0, 0.0], 100)
    with pytest.raises(ValueError, match="num_samples"):
        DistributionBalancedLoss([10.0, 20.0], 15)
