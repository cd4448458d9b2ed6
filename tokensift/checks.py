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
import os
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["check_int", "check_count", "check_bool", "check_scale", "check_int_array", "check_finite",
           "check_probability", "check_output_dir", "check_input_file"]


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


def check_finite(name: str, value: object, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False) -> float:
    """``value`` as a finite ``float`` in ``[low, high]`` (``(low, high]`` with ``low_open``).

    >>> check_finite("--clock-mhz", 100, low=0, low_open=True)
    100.0
    >>> check_finite("--clock-mhz", float("inf"), low=0, low_open=True)
    Traceback (most recent call last):
    ValueError: --clock-mhz must be a finite number, not inf
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, not {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, not {value}")
    too_low = low is not None and (value <= low if low_open else value < low)
    if too_low or (high is not None and value > high):
        if high is None and low == 0:
            raise ValueError(f"{name} must be {'positive' if low_open else 'non-negative'}, not {value:g}")
        if high is None:
            raise ValueError(f"{name} must be {'greater than' if low_open else 'at least'} {low:g}, not {value:g}")
        if low is None:
            raise ValueError(f"{name} must be at most {high:g}, not {value:g}")
        raise ValueError(f"{name} must be in {'(' if low_open else '['}{low:g}, {high:g}], not {value:g}")
    return value


def check_probability(name: str, value: object, *, below_one: bool = True) -> float:
    """``value`` as a probability in ``[0, 1)`` (``[0, 1]`` with ``below_one=False``).

    >>> check_probability("--stall", 1.5)
    Traceback (most recent call last):
    ValueError: --stall must be a probability in [0, 1), not 1.5
    """
    value = check_finite(name, value)
    if not (0.0 <= value < 1.0 if below_one else 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be a probability in [0, {'1)' if below_one else '1]'}, not {value:g}")
    return value


def check_output_dir(name: str, path: str | os.PathLike) -> Path:
    """The folder ``path``, created if need be and proven writable, before any work is spent on its contents.

    The error (a :class:`~tokensift.errors.PathError`) names the option, the path and the reason: a file
    where the folder should be, a parent that is a file, no permission.
    """
    from tokensift.errors import PathError

    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise PathError(f"{name} {str(folder)!r} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise PathError(f"{name} {str(folder)!r} is not a writable folder: "
                        f"{exc.strerror or type(exc).__name__}") from None
    return folder


def check_input_file(name: str, path: str | os.PathLike) -> Path:
    """The file ``path``, which must exist and be readable (a :class:`~tokensift.errors.PathError` if not)."""
    from tokensift.errors import PathError

    file = Path(path)
    if not file.exists():
        raise PathError(f"{name} {str(file)!r} does not exist")
    if file.is_dir():
        raise PathError(f"{name} {str(file)!r} is a folder, not a file")
    try:
        with open(file, "rb") as f:
            f.read(1)
    except OSError as exc:
        raise PathError(f"{name} {str(file)!r} cannot be read: {exc.strerror or type(exc).__name__}") from None
    return file
