"""Type checks of the public Python functions' plain options (core: no Qt, no torch).

The CLI parses its flags into bools and numbers; a script can pass anything. A text is not a
yes/no option (``bool("false")`` is True) nor a number (``float("0.5")`` would take it, while
``--tp`` refuses text), so both are refused with an :class:`ArgumentTypeError` naming the
argument: a ValueError, as the other argument checks of the API raise, and a TypeError, as a
wrong type is (``TrainConfig`` tells the generator's wrong types by it).
"""

from __future__ import annotations

import numbers

import numpy as np


class ArgumentTypeError(TypeError, ValueError):
    """An option of the wrong type (a text for a yes/no option or a number)."""


def check_flag(name: str, value) -> bool:
    """``value`` as a bool: True / False (numpy's too) or the integers 0 / 1.

    Raises:
        ArgumentTypeError: anything else, e.g. the text ``"false"`` (which ``bool`` makes
            True).
    """
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral) and int(value) in (0, 1):
        return bool(value)
    raise ArgumentTypeError(f"{name} must be True or False, got {value!r}")


def check_real(name: str, value, *, optional: bool = False) -> float | None:
    """``value`` as a float (range checks stay with the caller); None passes when ``optional``.

    Raises:
        ArgumentTypeError: a text such as ``"0.5"``, a bool, None (unless ``optional``) or a
            non-number.
    """
    if value is None and optional:
        return None
    if isinstance(value, str | bytes | bool | np.bool_) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"{name} must be a number, got {value!r}")
    return float(value)
