"""tokensift.quant: the integer arithmetic contract and the bit-exact reference of the hardware."""

from tokensift.quant.fixed import (
    INT8,
    INT32,
    UINT8,
    FixedFormat,
    Overflow,
    OverflowCounter,
    Rounding,
    requantize,
    round_shift,
)

__all__ = [
    "FixedFormat",
    "Rounding",
    "Overflow",
    "OverflowCounter",
    "round_shift",
    "requantize",
    "INT8",
    "UINT8",
    "INT32",
]
