"""The saturating residual add: the reference of the encoder block's skip-connection hardware.

Both operands are codes of the residual format (the block's input and its projection or fc2 output,
requantized into that format); their exact sum is brought back into the format by its overflow mode
(saturation by default), and every value that did not fit is counted.

>>> from tokensift.quant.fixed import FixedFormat, OverflowCounter
>>> counter = OverflowCounter()
>>> residual_add([30000, -5, -30000], [10000, 7, -10000], FixedFormat(bits=16), counter=counter).tolist()
[32767, 2, -32768]
>>> counter.total
2
"""

from __future__ import annotations

import numpy as np

from tokensift.checks import check_int_array
from tokensift.quant.fixed import FixedFormat, OverflowCounter

__all__ = ["residual_add"]


def residual_add(x, y, res: FixedFormat, *, counter: OverflowCounter | None = None,
                 site: str = "residual") -> np.ndarray:
    """``res.fit(x + y)``: the exact sum of two arrays of residual codes, saturated (or wrapped) into ``res``."""
    if not isinstance(res, FixedFormat):
        raise TypeError(f"res must be a FixedFormat, not {type(res).__name__}")
    a = check_int_array("residual operand x", x)
    b = check_int_array("residual operand y", y)
    return res.fit(a + b, counter=counter, site=site)
