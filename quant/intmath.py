"""Integer helpers shared by the quant/ kernels: parameter checks, bit length, Newton integer square root."""

from __future__ import annotations

import numpy as np

from tokensift import checks

__all__ = ["check_int", "check_scale", "bit_length", "isqrt"]


def check_int(name: str, value: object, low: int, high: int) -> int:
    """:func:`tokensift.checks.check_int` in ``low..high``, naming a wrong value by its repr."""
    return checks.check_int(name, value, low=low, high=high, show="repr")


def check_scale(name: str, value: object) -> float:
    """:func:`tokensift.checks.check_scale`, naming a wrong value by its repr."""
    return checks.check_scale(name, value, show="repr")


def _nonneg_int64(name: str, values) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must be integers, not {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if np.any(arr < 0):
        raise ValueError(f"{name} must be non-negative")
    return arr


def bit_length(values) -> np.ndarray:
    """Number of bits of each non-negative int64 (0 for 0), by a binary search of shifts.

    >>> bit_length([0, 1, 2, 255, 256, 2**62]).tolist()
    [0, 1, 2, 8, 9, 63]
    """
    n = _nonneg_int64("bit_length inputs", values)
    length = np.zeros(n.shape, dtype=np.int64)
    for step in (32, 16, 8, 4, 2, 1):
        length = length + step * ((n >> (length + step)) > 0)
    return length + (n > 0)


def isqrt(values) -> np.ndarray:
    """``floor(sqrt(n))`` of non-negative int64s by Newton's iteration ``x <- (x + n // x) >> 1``.

    Starting above the root (``x0 = 2**ceil(bit_length(n) / 2)``), the iterates decrease strictly until
    they reach ``floor(sqrt(n))``; the loop stops when no element decreases (at most 6 steps for 62 bits).

    >>> isqrt([0, 1, 3, 4, 15, 16, 2**62 - 1]).tolist()
    [0, 1, 1, 2, 3, 4, 2147483647]
    """
    n = _nonneg_int64("isqrt inputs", values)
    x = np.where(n > 0, np.left_shift(1, (bit_length(n) + 1) >> 1), 0)
    while True:
        safe = np.maximum(x, 1)
        y = (x + n // safe) >> 1
        smaller = y < x
        if not np.any(smaller):
            return x
        x = np.where(smaller, y, x)
