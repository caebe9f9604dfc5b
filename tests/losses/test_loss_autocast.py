"""Every loss under autocast (bfloat16 on CPU; float16/bfloat16 on CUDA): finite, float32 loss and grads."""

import pytest
import torch

from napari_tubular.losses import (
    BoundaryLoss,
    DDTLoss,
    DeepSupervisionLoss,
    DiceclDiceLoss,
    DistributionBalancedLoss,
    GDLBoundaryLoss,
    LRNet,
    MapDiceLoss,
    ShapeAwareLoss,
    SoftclDiceLoss,
    SoftDiceLoss,
)

K = 3


def _run_all(device, dtype):
    """Forward + backward of every loss on conv outputs produced under autocast."""
    g = torch.Generator().manual_seed(0)
    shape = (2, 1, 8, 10, 12)
    x = torch.randn(shape, generator=g).to(device)
    y = (torch.rand(shape, generator=g) > 0.6).float().to(device)
    z = (y[:, 0] * torch.randint(1, K + 1, shape[:1] + shape[2:], generator=g).to(device)).long()
    phi = (torch.randn(shape, generator=g) * 5).to(device)
    conv = torch.nn.Conv3d(1, 1 + (K + 1) + 3, 3, padding=1).to(device)
    lrnet = LRNet(base_channels=2).to(device)
    db = DistributionBalancedLoss([50.0, 5.0, 1.0], 100).to(device)
    results = {}
    losses = {
        "dice": lambda o: SoftDiceLoss()(o[:, :1], y),
        "cldice": lambda o: SoftclDiceLoss(iters=3)(o[:, :1], y),
        "dicecldice": lambda o: DiceclDiceLoss(iters=3, alpha=0.3)(o[:, :1], y),
        "ddt": lambda o: DDTLoss(K=K)(o[:, :1], o[:, 1:K + 2], y, z),
        "boundary": lambda o: BoundaryLoss()(o[:, :1], phi),
        "gdl_boundary": lambda o: GDLBoundaryLoss()(o[:, :1], y, phi),
        "mapdice": lambda o: MapDiceLoss()(o[:, :1], y * 0.5),
        "shape_aware": lambda o: ShapeAwareLoss(lrnet)(o[:, :1], y * 0.5),
        "deep_supervision": lambda o: DeepSupervisionLoss()(
            [o[:, K + 2:], torch.nn.functional.avg_pool3d(o[:, K + 2:], 2)],
            (torch.rand(2, 3, 8, 10, 12, generator=g) > 0.9).float().to(device)),
        "db": lambda o: db(o[:, K + 2:].mean((2, 3, 4)), torch.tensor([[1.0, 0, 1], [0, 1, 0]], device=device)),
    }
    for name, fn in losses.items():
        conv.zero_grad()
        with torch.autocast(device_type=device, dtype=dtype):
            out = conv(x)
            assert out.dtype == dtype
            loss = fn(out)
        loss.backward()
        assert loss.dtype == torch.float32, name
        assert torch.isfinite(loss), name
        assert all(torch.isfinite(p.grad).all() for p in conv.parameters()), name
        assert float(conv.weight.grad.abs().sum()) > 0, name
        results[name] = float(loss.detach())
    return results


@pytest.mark.slow
def test_cpu_bfloat16_autocast_is_finite():
    torch.manual_seed(0)
    low = _run_all("cpu", torch.bfloat16)
    assert len(low) == 10


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_autocast(dtype):
    torch.manual_seed(0)
    assert len(_run_all("cuda", dtype)) == 10


@pytest.mark.gpu
def test_cuda_matches_cpu_float32():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 1, 16, 16, 16, generator=g)
    t = (torch.rand(1, 1, 16, 16, 16, generator=g) > 0.7).float()
    for loss in (SoftDiceLoss(), SoftclDiceLoss(iters=4), BoundaryLoss()):
        a = loss(x, t)
        b = loss(x.cuda(), t.cuda()).cpu()
        assert float(a) == pytest.approx(float(b), rel=1e-5, abs=1e-6)
