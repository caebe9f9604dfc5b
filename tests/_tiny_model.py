"""A random-weight TubularUNet saved as a model file, for tests that run the whole pipeline."""

from __future__ import annotations


def save_tiny_model(path, *, K: int = 3, spacing=(1.0, 1.0, 1.0), patch=(16, 16, 16),
                    normalization=None, base_channels: int = 2, **meta):
    """Seeded (torch seed 0) TubularUNet of depth 2 with K + 1 scale classes, written to
    ``path`` with the given meta (default normalisation: a -100..600 HU window)."""
    import torch

    from napari_tubular.models import TubularUNet, save_model

    torch.manual_seed(0)
    net = TubularUNet(base_channels=base_channels, depth=2, num_scales=K + 1)
    meta = {"K": K, "spacing": list(spacing), "patch_size": list(patch),
            "normalization": normalization or {"kind": "window", "low": -100, "high": 600},
            **meta}
    return save_model(path, net, meta)
