"""DDT losses: class-balanced L_cls, L_dis with the lambda * w_v term, combined objective."""

import inspect
import math

import pytest
import torch

from napari_tubular.losses import DDTLoss
from napari_tubular.losses.ddt import ddt_cls_loss, ddt_dis_loss

K = 4


def _case(seed=0, shape=(2, 6, 7, 8)):
    g = torch.Generator().manual_seed(seed)
    z = torch.randint(0, K + 1, shape, generator=g)
    z[z < 2] = 0  # plenty of background
    y = (z > 0).double()[:, None]
    return g, y, z


def _naive_cls(p, y):
    bp, bn = 0.5 / y.sum(), 0.5 / (1 - y).sum()
    return -(bp * (y * torch.log(p)).sum() + bn * ((1 - y) * torch.log(1 - p)).sum())


def _naive_dis(a, z, lam, eps=1e-6):
    g = torch.softmax(a, 1)
    gmax, amax = g.max(1)
    w = (amax - z).abs().double() / K
    logg = torch.log(g.gather(1, z[:, None])[:, 0])
    term = logg + lam * w * torch.log((1 - gmax).clamp_min(eps))
    bp = 0.5 / (z > 0).sum().double()
    return -(bp * term[z > 0].sum())


def test_matches_the_formulas():
    g, y, z = _case()
    seg = torch.randn(y.shape, generator=g, dtype=torch.float64)
    a = torch.randn((2, K + 1, 6, 7, 8), generator=g, dtype=torch.float64) * 3
    assert float(ddt_cls_loss(seg, y)) == pytest.approx(float(_naive_cls(torch.sigmoid(seg), y)), rel=1e-10)
    for lam in (0.0, 1.0, 2.5):
        assert float(ddt_dis_loss(a, z, lam)) == pytest.approx(float(_naive_dis(a, z, lam)), rel=1e-9)
    loss = DDTLoss(K=K, weight_dis=0.7)
    total = loss(seg, a, y, z)
    assert set(loss.last_parts) == {"cls", "dis", "total"}
    assert float(total) == pytest.approx(float(loss.last_parts["cls"] + 0.7 * loss.last_parts["dis"]), rel=1e-12)


def test_input_variants_agree():
    """Sigmoid logits, 2-class softmax logits [0, z] and probabilities give the same L_cls."""
    g, y, z = _case(1)
    s = torch.randn(y.shape, generator=g, dtype=torch.float64)
    ref = float(ddt_cls_loss(s, y, "sigmoid"))
    assert float(ddt_cls_loss(torch.cat([torch.zeros_like(s), s], 1), y, "softmax")) == pytest.approx(ref, rel=1e-10)
    assert float(ddt_cls_loss(torch.sigmoid(s), y, None)) == pytest.approx(ref, rel=1e-8)
    # the scale target may also come as (B, 1, Z, Y, X)
    a = torch.randn((2, K + 1, 6, 7, 8), generator=g)
    assert float(ddt_dis_loss(a, z[:, None])) == pytest.approx(float(ddt_dis_loss(a, z)), rel=1e-6)


def test_perfect_is_minimal_and_degradation_monotone():
    _, y, z = _case(2)
    onehot = torch.nn.functional.one_hot(z, K + 1).permute(0, 4, 1, 2, 3).float()
    loss = DDTLoss(K=K)
    vals = []
    for margin in (20.0, 6.0, 2.0, 0.5, -0.5, -2.0):
        vals.append(float(loss(margin * (2 * y - 1), margin * (2 * onehot - 1), y, z)))
    assert vals[0] < 1e-6
    assert all(b > a for a, b in zip(vals, vals[1:])), vals


def test_w_term_grows_with_scale_error():
    """A confident scale prediction off by more classes costs more (w_v = |argmax - z| / K)."""
    z = torch.full((1, 3, 3, 3), 1)
    vals = []
    for wrong in (1, 2, 3, 4):
        a = torch.zeros(1, K + 1, 3, 3, 3)
        a[:, wrong] = 3.0
        vals.append(float(ddt_dis_loss(a, z, lam=1.0)))
    assert all(b > a_ for a_, b in zip(vals, vals[1:])), vals
    a = torch.zeros(1, K + 1, 3, 3, 3)
    a[:, 1] = 3.0  # correct argmax: the lambda term vanishes
    assert float(ddt_dis_loss(a, z, lam=1.0)) == pytest.approx(float(ddt_dis_loss(a, z, lam=0.0)))


def test_extreme_logits_stay_finite():
    _, y, z = _case(3)
    seg = (1 - 2 * y) * 1e4  # confidently wrong
    a = torch.zeros((2, K + 1, 6, 7, 8))
    a[:, 0] = 1e4  # confidently "background" on the foreground
    seg.requires_grad_(True)
    a.requires_grad_(True)
    loss = DDTLoss(K=K)(seg, a, y, z)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(seg.grad).all()
    assert torch.isfinite(a.grad).all()
    # the 1 - max g clamp bounds the lambda term: log(1e-6) per voxel at most
    assert float(ddt_dis_loss(a, z, lam=1.0) - ddt_dis_loss(a, z, lam=0.0)) <= 0.5 * -math.log(1e-6) + 1e-6


def test_batch_without_foreground_is_finite():
    y = torch.zeros(1, 1, 4, 4, 4)
    z = torch.zeros(1, 4, 4, 4, dtype=torch.long)
    out = DDTLoss(K=K)(torch.randn(1, 1, 4, 4, 4), torch.randn(1, K + 1, 4, 4, 4), y, z)
    assert torch.isfinite(out)
    assert float(out) > 0


def test_gradcheck():
    g, y, z = _case(4, shape=(1, 2, 3, 2))
    seg = torch.randn(y.shape, generator=g, dtype=torch.float64, requires_grad=True)
    a = torch.randn((1, K + 1, 2, 3, 2), generator=g, dtype=torch.float64, requires_grad=True)
    loss = DDTLoss(K=K, lam=1.0)
    assert torch.autograd.gradcheck(lambda s, b: loss(s, b, y, z), (seg, a), eps=1e-6, atol=1e-6)


def test_errors():
    _, y, z = _case()
    seg = torch.randn(y.shape)
    a = torch.randn(2, K + 1, 6, 7, 8)
    loss = DDTLoss(K=K)
    with pytest.raises(ValueError, match="K\\+1"):
        loss(seg, a[:, :K], y, z)
    with pytest.raises(ValueError, match="0..4"):
        loss(seg, a, y, z + 3)
    with pytest.raises(ValueError, match="integer"):
        loss(seg, a, y, z.float())
    with pytest.raises(ValueError, match="target"):
        loss(seg, a, y[:, :, :3], z)
    with pytest.raises(ValueError, match="K must"):
        DDTLoss(K=0)


def test_targets_outside_unit_range_are_refused():
    """An audit: a 0/255 uint8 mask gave L_cls = -6066 instead of an error (the other losses
    refuse such targets)."""
    g, y, z = _case()
    seg = torch.randn(y.shape, generator=g, dtype=torch.float64)
    scale = torch.randn((y.shape[0], K + 1, *y.shape[2:]), generator=g, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"target must hold values in \[0, 1\]"):
        DDTLoss(K=K)(seg, scale, (y * 255).to(torch.uint8), z)
    assert torch.isfinite(DDTLoss(K=K)(seg, scale, y, z))


def test_numpy_integers_are_taken_for_counts():
    """An audit: DDTLoss(K=np.int64(4)) and SoftclDiceLoss(iters=np.int64(3)) were refused while
    soft_skeleton took numpy integers."""
    import numpy as np

    from napari_tubular.losses import SoftclDiceLoss

    assert DDTLoss(K=np.int64(K)).K == K
    assert SoftclDiceLoss(iters=np.int64(3)).iters == 3
    with pytest.raises(ValueError, match="K must be an int"):
        DDTLoss(K=np.float64(4.0))


def test_train_default_loss_is_the_documented_sum():
    """An outside judge: ``train``'s default loss (``ddt+cldice``, K = 5, clDice weight a) is
    ``L_cls + L_dis + (1 - a) softDice + a softclDice`` (docs/training.md, ``LOSSES``), the weight
    0 for the first 35 % of the run, then ramped linearly to 0.2 over 15 %."""
    from napari_tubular.losses import SoftclDiceLoss, SoftDiceLoss
    from napari_tubular.training import config as cfg_mod
    from napari_tubular.training.config import TrainConfig
    from napari_tubular.training.loop import LossFn, cldice_weight_at

    cfg = TrainConfig()
    assert (cfg.loss, cfg.K, cfg.cldice_iters, cfg.cldice_weight) == ("ddt+cldice", 5, 5, 0.2)
    # the LOSSES docstring named only the clDice term, not the soft Dice term there from step 0
    bullet = inspect.getsource(cfg_mod).split('- ``"ddt+cldice"`` (default)')[1].split("\n- ")[0]
    assert "(1 - a) softDice + a softclDice" in " ".join(bullet.split())
    weights = [cldice_weight_at(cfg, f, 0) for f in (0.0, 0.349, 0.425, 0.5, 0.9)]
    assert weights == pytest.approx([0.0, 0.0, 0.1, 0.2, 0.2])
    g = torch.Generator().manual_seed(3)
    y = (torch.rand((2, 1, 8, 8, 8), generator=g) > 0.6).float()
    z = y * torch.randint(1, cfg.K + 1, y.shape, generator=g)
    out = {"seg": torch.randn(y.shape, generator=g), "scale": torch.randn((2, cfg.K + 1, 8, 8, 8), generator=g)}
    fn = LossFn(cfg)
    for a in (0.0, 0.1, 0.2):
        total, _ = fn(out, y, z, a)
        ddt = DDTLoss(K=cfg.K)(out["seg"], out["scale"], y, z.long()[:, 0])
        ref = ddt + (1 - a) * SoftDiceLoss(batch=True)(out["seg"], y) + a * SoftclDiceLoss(5)(out["seg"], y)
        assert float(total) == pytest.approx(float(ref), rel=1e-6)
