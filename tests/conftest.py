import os

import numpy as np
import pytest


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    skip_gui = pytest.mark.skip(reason="needs a display (run under xvfb-run)")
    has_display = bool(os.environ.get("DISPLAY"))
    cuda = None
    for item in items:
        if "gpu" in item.keywords:
            if cuda is None:
                cuda = _has_cuda()
            if not cuda:
                item.add_marker(skip_gpu)
        if "gui" in item.keywords and not has_display:
            item.add_marker(skip_gui)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
