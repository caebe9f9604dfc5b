import os
import sys

# One torch intra-op thread for the whole session (and the CLI / torchrun subprocesses, which
# inherit it; OMP_NUM_THREADS set beforehand is kept). The tests run tiny networks on tiny
# windows, where a second OpenMP thread only adds synchronisation: on a shared CPU each forward
# pass of the tests' 16^3 networks took 25x longer with 2 threads (0.10 s vs 0.004 s), and
# test_cli_segment's interrupted-write test 4.1 s instead of 0.14 s. It also makes the thread
# count independent of the test order: the first in-process training (--threads 1) used to
# switch the rest of the session to one thread.
os.environ.setdefault("OMP_NUM_THREADS", "1")
if "torch" in sys.modules:  # imported before this file (a plugin): the variable came too late
    sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

import numpy as np  # noqa: E402
import pytest  # noqa: E402


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_finish(session):
    """Move what the collection loaded (torch, napari, Qt, the test modules: about 300,000
    objects) out of the garbage collector's reach: they live to the end anyway, and every full
    collection walked them again. The widgets call ``gc.collect()`` twice a run (to free GPU
    memory) and napari's viewer fixture once a test: 0.65 s each on a shared CPU, ~0 after the
    freeze. Objects made by the tests are collected as before (leak checks included)."""
    import gc

    gc.collect()
    gc.freeze()


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
