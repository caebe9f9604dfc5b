"""Soft skeleton: equality with the max_pool3d formulation, gradients, tubes."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_tubular.geometry.soft_skeleton import (
    soft_dilate,
    soft_erode,
    soft_skeleton,
    soft_skeleton_volume,
)

from ._shapes import oblique_tube


def _ref_erode(x):
    p1 = -F.max_pool3d(-x, (3, 1, 1), 1, (1, 0, 0))
    p2 = -F.max_pool3d(-x, (1, 3, 1), 1, (0, 1, 0))
    p3 = -F.max_pool3d(-x, (1, 1, 3), 1, (0, 0, 1))
    return torch.min(torch.min(p1, p2), p3)


def _ref_dilate(x):
    return F.max_pool3d(x, 3, 1, 1)


def test_matches_max_pool_formulation():
    torch.manual_seed(0)
    x = torch.rand(2, 1, 9, 10, 11)
    torch.testing.assert_close(soft_erode(x), _ref_erode(x), rtol=0, atol=0)
    torch.testing.assert_close(soft_dilate(x), _ref_dilate(x), rtol=0, atol=0)
    ref = torch.relu(x - _ref_dilate(_ref_erode(x)))
    y = x
    for _ in range(4):
        y = _ref_erode(y)
        delta = torch.relu(y - _ref_dilate(_ref_erode(y)))
        ref = ref + torch.relu(delta - ref * delta)
    torch.testing.assert_close(soft_skeleton(x, 4), ref, rtol=1e-6, atol=1e-6)


def test_gradient_flows():
    torch.manual_seed(1)
    x = torch.rand(1, 2, 6, 7, 8, dtype=torch.float64, requires_grad=True)
    s = soft_skeleton(x, 3)
    s.sum().backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0
    xs = torch.rand(1, 1, 4, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: soft_skeleton(t, 2), (xs,), eps=1e-7, atol=1e-5)


@pytest.mark.parametrize("radius", [2, 4, pytest.param(6, marks=pytest.mark.slow)])
def test_tube_skeleton_nonempty_and_inside(radius):
    m, interior = oblique_tube(4 * radius + 16, radius, np.random.default_rng(radius))
    x = torch.from_numpy(m.astype(np.float32))[None, None]
    s = soft_skeleton(x, radius + 1)[0, 0].numpy()
    assert (s[interior & m] > 0.5).sum() >= 0.5 * (4 * radius + 16) / 2  # a line along the tube
    assert s[~m].max() == 0  # lies inside the tube
    vol = soft_skeleton_volume(m)
    assert vol.dtype == np.float32
    assert vol.shape == m.shape
    assert vol[~m].max() == 0


def test_too_few_iterations_lose_thick_skeleton():
    m, interior = oblique_tube(30, 5, np.random.default_rng(0))
    x = torch.from_numpy(m.astype(np.float32))[None, None]
    few = soft_skeleton(x, 1)[0, 0].numpy()
    enough = soft_skeleton(x, 6)[0, 0].numpy()
    assert (enough[interior] > 0.5).sum() > 2 * (few[interior] > 0.5).sum()


def test_errors():
    with pytest.raises(ValueError, match="B, C, Z, Y, X"):
        soft_skeleton(torch.rand(1, 4, 4, 4), 2)
    with pytest.raises(ValueError, match="Tensor"):
        soft_skeleton(np.zeros((1, 1, 4, 4, 4)), 2)
    with pytest.raises(ValueError, match="iters"):
        soft_skeleton(torch.rand(1, 1, 4, 4, 4), -1)
    with pytest.raises(ValueError, match="3-D"):
        soft_skeleton_volume(np.zeros((4, 4)))


def test_package_reexport_is_lazy_and_callable():
    import subprocess
    import sys

    code = ("import sys, napari_tubular.geometry as g; assert 'torch' not in sys.modules; "
            "import torch; from napari_tubular.geometry import soft_skeleton, soft_erode; "
            "x = torch.rand(1, 1, 5, 5, 5); assert soft_skeleton(x, 2).shape == x.shape")
    subprocess.run([sys.executable, "-c", code], check=True)
