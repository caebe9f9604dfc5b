"""``python -m napari_tubular.training [CONFIG] [options]``: same as ``napari-tubular train``.

Meant for ``torchrun --nproc_per_node N -m napari_tubular.training ...`` (DDP). Only the train
command's module is imported (not the other CLI commands), so a training machine needs no
I/O or GUI dependencies beyond what training uses.
"""

import argparse
import sys

from napari_tubular._cli import ddp_rank, error_text, tidy_warnings
from napari_tubular._cli import train as _train_cli


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m napari_tubular.training",
                                     description="train a DDT segmentation model")
    _train_cli.add_arguments(parser)
    args = parser.parse_args(argv)
    # warnings as the command line prints them, once (rank 0) rather than once per process
    # with Python's source line (an audit: the label warning under torchrun)
    rank = ddp_rank()
    with tidy_warnings("napari_tubular.training", show=rank == 0):
        try:
            return int(_train_cli.run(args) or 0)
        except KeyboardInterrupt:
            if rank == 0:
                sys.stderr.write("interrupted\n")
            return 130
        except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError,
                RuntimeError) as exc:
            # once, by rank 0, under torchrun (error_text)
            text = error_text("napari_tubular.training", exc)
            if text:
                sys.stderr.write(text + "\n")
            return 2


if __name__ == "__main__":
    sys.exit(main())
