"""Shared synthetic volumes for the loss tests (torch tensors (B, C, Z, Y, X))."""

import numpy as np
import pytest
import torch


def _tube(shape=(20, 20, 40), radius=3.0, center=None, axis=2):
    """Binary straight tube along ``axis`` as a float32 numpy array (Z, Y, X)."""
    grids = np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij")
    others = [d for d in range(3) if d != axis]
    c = center if center is not None else [(shape[d] - 1) / 2 for d in others]
    r2 = sum((grids[d] - cc) ** 2 for d, cc in zip(others, c))
    return (r2 <= radius**2).astype(np.float32)


@pytest.fixture
def tube():
    """Factory: tube(shape, radius, axis) -> float32 tensor (1, 1, Z, Y, X)."""

    def make(shape=(20, 20, 40), radius=3.0, axis=2, center=None):
        return torch.from_numpy(_tube(shape, radius, center, axis))[None, None]

    return make


@pytest.fixture
def tube_np():
    return _tube


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The loss tests use tiny tensors: one intra-op thread is faster and immune to CPU contention."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
