"""``python -m napari_tubular.training [CONFIG] [options]``: same as ``napari-tubular train``.

Meant for ``torchrun --nproc_per_node N -m napari_tubular.training ...`` (DDP). Only the train
command's module is imported (not the other CLI commands), so a training machine needs no
I/O or GUI dependencies beyond what training uses.
"""

import argparse
import os
import sys

from napari_tubular._cli import tidy_warnings
from napari_tubular._cli import train as _train_cli


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m napari_tubular.training",
                                     description="train a DDT segmentation model")
    _train_cli.add_arguments(parser)
    args = parser.parse_args(argv)
    # warnings as the command line prints them, once (rank 0) rather than once per process
    # with Python's source line (an audit: the label warning under torchrun)
    rank = int(os.environ.get("RANK", "0") or 0)
    with tidy_warnings("napari_tubular.training", show=rank == 0):
        try:
            return int(_train_cli.run(args) or 0)
        except KeyboardInterrupt:
            sys.stderr.write("interrupted\n")
            return 130
        except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError,
                RuntimeError) as exc:
            sys.stderr.write(f"napari_tubular.training: error: {exc}\n")
            return 2


if __name__ == "__main__":
    sys.exit(main())
