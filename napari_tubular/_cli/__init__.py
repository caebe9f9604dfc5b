"""One module per CLI command; see ``napari_tubular.cli``."""

import contextlib
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
