"""Parameter checks shared by sw/, quant/ and hw/ (numpy is their only dependency).

Each check returns the value in its plain Python type and raises one sentence that names the parameter:
``TypeError`` for a value of the wrong kind, ``ValueError`` for one out of range. ``bool`` is never
taken for an integer or a number.

``numpy=False`` takes Python ``int`` only (for parameters stored as given and used by Amaranth or
written to JSON); ``show`` picks how a value of the wrong type is named: ``"type"`` (``not float``)
or ``"repr"`` (``not 8.0``).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["check_int", "check_count", "check_bool", "check_scale", "check_int_array"]


def _shown(value: object, show: str) -> str:
    if show == "type":
        return type(value).__name__
    if show == "repr":
        return repr(value)
    raise ValueError(f"show must be 'type' or 'repr', not {show!r}")


def _is_int(value: object, numpy: bool) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer) if numpy else int)


def check_int(name: str, value: object, *, low: int | None = None, high: int | None = None,
              numpy: bool = True, show: str = "type") -> int:
    """``value`` as an ``int`` in ``low..high`` (either bound may be left open).

    >>> check_int("lanes", 4, low=1, high=256)
    4
    >>> check_int("lanes", 0, low=1, high=256)
    Traceback (most recent call last):
    ValueError: lanes must be between 1 and 256, not 0
    >>> check_int("bits", 8.0, show="repr")
    Traceback (most recent call last):
    TypeError: bits must be an integer, not 8.0
    """
    if not _is_int(value, numpy):
        raise TypeError(f"{name} must be an integer, not {_shown(value, show)}")
    if low is not None and high is not None:
        if not low <= value <= high:
            raise ValueError(f"{name} must be between {low} and {high}, not {value}")
    elif low is not None and value < low:
        raise ValueError(f"{name} must be at least {low}, not {value}")
    elif high is not None and value > high:
        raise ValueError(f"{name} must be at most {high}, not {value}")
    return int(value)


def check_count(name: str, value: object, *, zero: bool = False, numpy: bool = True) -> int:
    """``value`` as a positive ``int`` (non-negative with ``zero=True``); a value of any other type or
    range is one ``ValueError``: ``n must be a positive integer, not 0``."""
    if not _is_int(value, numpy) or value < (0 if zero else 1):
        shown = int(value) if _is_int(value, numpy) else repr(value)
        raise ValueError(f"{name} must be a {'non-negative' if zero else 'positive'} integer, not {shown}")
    return int(value)


def check_bool(name: str, value: object) -> bool:
    """``value`` itself, which must be ``True`` or ``False`` (not ``0``, ``1`` or ``numpy.bool_``)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, not {type(value).__name__}")
    return value


def check_scale(name: str, value: object, *, numpy: bool = True, show: str = "type") -> float:
    """``value`` as a positive finite ``float`` (an int or float, numpy's included unless ``numpy=False``)."""
    real = (int, float, np.integer, np.floating) if numpy else (int, float)
    if isinstance(value, bool) or not isinstance(value, real):
        raise TypeError(f"{name} must be a real number, not {_shown(value, show)}")
    value = float(value)
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f"{name} must be a positive finite number, not {value}")
    return value


def check_int_array(name: str, values, *, bits: int | None = None) -> np.ndarray:
    """``values`` as an int64 array (of a numpy integer dtype, not ``object``), whose values fit in
    ``bits``-bit signed integers when ``bits`` is given.

    >>> check_int_array("q", [[1, -128]], bits=8).dtype
    dtype('int64')
    >>> check_int_array("q", [1, 128], bits=8)
    Traceback (most recent call last):
    ValueError: q must fit in signed 8 bits, between -128 and 127
    """
    arr = np.asarray(values)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must hold integers, not {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if bits is not None and arr.size:
        low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        if arr.min() < low or arr.max() > high:
            raise ValueError(f"{name} must fit in signed {bits} bits, between {low} and {high}")
    return arr
