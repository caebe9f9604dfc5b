"""One module per CLI command; see ``napari_tubular.cli``."""

import contextlib
import os
import sys
import warnings


@contextlib.contextmanager
def tidy_warnings(prefix: str, show: bool = True):
    """Within the block, a UserWarning prints as ``{prefix}: warning: {message}`` on stderr,
    without Python's source line (or not at all when ``show`` is False: a DDP process other
    than rank 0); other categories (a library's deprecation) as Python prints them. The
    process's ``warnings.showwarning`` is restored after the block."""
    shown = warnings.showwarning

    def tidy(message, category, filename, lineno, file=None, line=None):
        if not issubclass(category, UserWarning):
            shown(message, category, filename, lineno, file, line)
        elif show:
            sys.stderr.write(f"{prefix}: warning: {message}\n")
            sys.stderr.flush()

    warnings.showwarning = tidy
    try:
        yield
    finally:
        warnings.showwarning = shown


#: the words of torch.distributed's errors in a process whose peer has ended (gloo, nccl, the
#: TCP store): that peer's own error is the one to read
_PEER_GONE = ("closed by peer", "remote worker", "connection reset", "broken pipe",
              "connection refused")


def ddp_rank() -> int:
    """This process's rank under torchrun (0 outside it)."""
    try:
        return int(os.environ.get("RANK", "0") or 0)
    except ValueError:
        return 0


def error_text(prefix: str, exc: BaseException) -> str | None:
    """The line that reports ``exc`` (a user error: bad option, missing file), or None where
    another process says it: under torchrun every process reads the same options and data and
    fails alike, so only rank 0 reports (an audit: "error: data folder not found" once per
    process); the other ranks report only an error of their own, with their rank, and never
    the lost connection to a rank that has failed."""
    rank = ddp_rank()
    if rank == 0:
        return f"{prefix}: error: {exc}"
    if not isinstance(exc, RuntimeError) or isinstance(exc, NotImplementedError):
        return None
    text = str(exc)
    if any(word in text.lower() for word in _PEER_GONE):
        return None
    return f"{prefix}: error (rank {rank}): {text}"
