"""``python -m napari_tubular.training [CONFIG] [options]``: same as ``napari-tubular train``.

Meant for ``torchrun --nproc_per_node N -m napari_tubular.training ...`` (DDP). Only the train
command's module is imported (not the other CLI commands), so a training machine needs no
I/O or GUI dependencies beyond what training uses.
"""

import argparse
import sys

from napari_tubular._cli import ddp_rank, tidy_warnings
from napari_tubular._cli import train as _train_cli
from napari_tubular.cli import _run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m napari_tubular.training",
                                     description="train a DDT segmentation model")
    _train_cli.add_arguments(parser)
    args = parser.parse_args(argv)
    # warnings as the command line prints them, once (rank 0) rather than once per process
    # with Python's source line (an audit: the label warning under torchrun)
    args.func = _train_cli.run
    with tidy_warnings("napari_tubular.training", show=ddp_rank() == 0):
        # the command line's handling of errors: a message, not a traceback (an audit: an
        # OSError such as a run folder name too long ended in one here), once under torchrun
        return _run(args, prefix="napari_tubular.training")


if __name__ == "__main__":
    sys.exit(main())
