"""TubularUNet / build_model: output shapes per config, gradients, config round trip, bad input."""

import pytest

torch = pytest.importorskip("torch")

from napari_tubular.models import TubularUNet, build_model  # noqa: E402

# (config, input shape, seg shape, scale shape, ds shapes)
CASES = [
    (
        dict(base_channels=2, depth=2, num_scales=3),
        (1, 1, 8, 8, 8),
        (1, 1, 8, 8, 8),
        (1, 3, 8, 8, 8),
        None,
    ),
    (
        dict(base_channels=2, depth=3, num_scales=5, deep_supervision=True, ds_channels=3),
        (2, 1, 16, 12, 8),
        (2, 1, 16, 12, 8),
        (2, 5, 16, 12, 8),
        [(2, 3, 8, 6, 4), (2, 3, 4, 3, 2)],
    ),
    # sizes that are not multiples of 2**(depth-1): padded inside, cropped back
    (
        dict(base_channels=2, depth=3, num_scales=4, residual=True, deep_supervision=True),
        (1, 1, 9, 10, 7),
        (1, 1, 9, 10, 7),
        (1, 4, 9, 10, 7),
        [(1, 1, 5, 5, 4), (1, 1, 3, 3, 2)],
    ),
    (
        dict(base_channels=3, depth=2, num_scales=2, norm="batch", in_channels=2),
        (2, 2, 6, 6, 6),
        (2, 1, 6, 6, 6),
        (2, 2, 6, 6, 6),
        None,
    ),
    (
        dict(base_channels=2, depth=2, num_scales=3, norm="none"),
        (1, 1, 5, 4, 3),
        (1, 1, 5, 4, 3),
        (1, 3, 5, 4, 3),
        None,
    ),
]


@pytest.mark.parametrize(("cfg", "in_shape", "seg_shape", "scale_shape", "ds_shapes"), CASES)
def test_output_shapes(cfg, in_shape, seg_shape, scale_shape, ds_shapes):
    net = TubularUNet(**cfg).eval()
    with torch.no_grad():
        out = net(torch.randn(in_shape))
    assert tuple(out["seg"].shape) == seg_shape
    assert tuple(out["scale"].shape) == scale_shape
    if ds_shapes is None:
        assert "ds" not in out
    else:
        assert [tuple(t.shape) for t in out["ds"]] == ds_shapes


def test_padding_does_not_leak_into_the_crop():
    """The padded forward equals the unpadded one on a size that needs no padding."""
    torch.manual_seed(0)
    net = TubularUNet(base_channels=2, depth=2, num_scales=3, norm="none").eval()
    x = torch.randn(1, 1, 8, 8, 8)
    with torch.no_grad():
        a = net(x)["seg"]
        b = net(x[..., :7])["seg"]  # padded back to 8 with zeros, same as x with a zero column?
        x0 = x.clone()
        x0[..., 7] = 0
        c = net(x0)["seg"][..., :7]
    assert torch.allclose(b, c, atol=1e-6)
    assert a.shape[-1] == 8


@pytest.mark.parametrize("residual", [False, True])
def test_all_parameters_get_gradients(residual):
    torch.manual_seed(0)
    net = TubularUNet(
        base_channels=2, depth=3, num_scales=3, deep_supervision=True, residual=residual
    )
    out = net(torch.randn(2, 1, 8, 8, 8))
    loss = out["seg"].mean() + out["scale"].square().mean() + sum(t.mean() for t in out["ds"])
    loss.backward()
    missing = [
        n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
    ]
    assert not missing


def test_build_model_round_trip_and_channels():
    net = TubularUNet(base_channels=4, depth=4, num_scales=6, max_channels=10, residual=True)
    assert net.channels == [4, 8, 10, 10]
    again = build_model(net.config)
    assert again.config == net.config
    assert [tuple(p.shape) for p in again.parameters()] == [
        tuple(p.shape) for p in net.parameters()
    ]


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ({"depth": 1}, "depth"),
        ({"num_scales": 1}, "num_scales"),
        ({"norm": "layer"}, "norm"),
        ({"base_channels": 2.5}, "base_channels"),
        ({"bogus": 1}, "unknown model config"),
        ({"name": "resnet"}, "unknown model architecture"),
        # an outside judge: bool("false") is True: the text built the heads it turns off
        ({"deep_supervision": "false"}, "deep_supervision must be true or false, got 'false'"),
        ({"residual": "no"}, "residual must be true or false"),
        ({"residual": 0.5}, "residual must be true or false"),
    ],
)
def test_build_model_rejects_bad_config(cfg, match):
    with pytest.raises(ValueError, match=match):
        build_model(cfg)


def test_ill_input_shape():
    net = TubularUNet(base_channels=2, depth=2, num_scales=3)
    with pytest.raises(ValueError, match="B, C, Z, Y, X"):
        net(torch.zeros(1, 8, 8, 8))
    with pytest.raises(ValueError, match="input channel"):
        net(torch.zeros(1, 2, 8, 8, 8))


@pytest.mark.parametrize("base", [6, 12, 20])
def test_group_norm_takes_widths_not_divisible_by_8(base):
    """norm='group' failed inside torch for 6, 12 or 20 channels (8 groups): the groups are the
    largest divisor of the channels up to 8."""
    import torch

    net = TubularUNet(base_channels=base, depth=2, norm="group", num_scales=3)
    out = net(torch.zeros(1, 1, 16, 16, 16))
    assert out["seg"].shape == (1, 1, 16, 16, 16)
    norms = [m for m in net.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms
    for m in norms:  # the largest divisor of the channels up to 8
        assert m.num_groups == max(g for g in range(1, 9) if m.num_channels % g == 0)
