"""The fixed-point type: ranges, rounding ties, overflow, conversions, and its error messages."""

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

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

formats = st.builds(
    FixedFormat,
    bits=st.integers(2, 40),
    frac=st.integers(-8, 40),
    signed=st.booleans(),
    rounding=st.sampled_from(list(Rounding)),
    overflow=st.sampled_from(list(Overflow)),
)


def exact_round(num: Fraction, rounding: Rounding) -> int:
    """Rounding done with exact rationals: the definition the integer code must meet."""
    floor = math.floor(num)
    rem = num - floor
    if rounding is Rounding.FLOOR:
        return floor
    if rounding is Rounding.TRUNC:
        return math.trunc(num)
    if rem != Fraction(1, 2):
        return floor + (rem > Fraction(1, 2))
    if rounding is Rounding.HALF_UP:
        return floor + 1
    if rounding is Rounding.HALF_AWAY:
        return floor + 1 if num > 0 else floor
    return floor + (floor % 2)  # HALF_EVEN


class TestRanges:
    def test_int8(self):
        assert (INT8.min_int, INT8.max_int) == (-128, 127)
        assert (UINT8.min_int, UINT8.max_int) == (0, 255)
        assert (INT32.min_int, INT32.max_int) == (-(2**31), 2**31 - 1)

    def test_real_range(self):
        fmt = FixedFormat(bits=8, frac=4)
        assert fmt.lsb == 1 / 16
        assert (fmt.min_value, fmt.max_value) == (-8.0, 127 / 16)
        assert str(fmt) == "s8.4"

    @given(formats)
    def test_range_is_exactly_bits_wide(self, fmt):
        assert fmt.max_int - fmt.min_int + 1 == 2**fmt.bits
        assert fmt.contains([fmt.min_int, fmt.max_int])
        assert not fmt.contains([fmt.max_int + 1]) and not fmt.contains([fmt.min_int - 1])


class TestRoundShift:
    @given(st.lists(st.integers(-(2**40), 2**40), min_size=1, max_size=20), st.integers(0, 20),
           st.sampled_from(list(Rounding)))
    def test_matches_exact_rationals(self, values, shift, rounding):
        got = round_shift(np.array(values), shift, rounding)
        want = [exact_round(Fraction(v, 2**shift), rounding) for v in values]
        assert got.tolist() == want

    @pytest.mark.parametrize("rounding, expected", [
        (Rounding.HALF_UP, [-2, -1, 1, 2, 3]),      # -2.5 -1.5 0.5 1.5 2.5
        (Rounding.HALF_EVEN, [-2, -2, 0, 2, 2]),
        (Rounding.HALF_AWAY, [-3, -2, 1, 2, 3]),
        (Rounding.FLOOR, [-3, -2, 0, 1, 2]),
        (Rounding.TRUNC, [-2, -1, 0, 1, 2]),
    ])
    def test_ties(self, rounding, expected):
        assert round_shift(np.array([-5, -3, 1, 3, 5]), 1, rounding).tolist() == expected

    def test_negative_shift_is_exact_left_shift(self):
        assert round_shift([3, -3], -2).tolist() == [12, -12]

    def test_most_negative_value(self):
        assert round_shift([-(2**31)], 31).tolist() == [-1]
        assert round_shift([-(2**31)], 32).tolist() == [0]  # -0.5 rounds half up to 0

    def test_rejects_float_values(self):
        with pytest.raises(TypeError, match=r"^integer values expected, not float64$"):
            round_shift(np.array([1.5]), 1)

    def test_rejects_float_shift(self):
        with pytest.raises(TypeError, match=r"^shift must be an integer, not float$"):
            round_shift([1], 1.0)


class TestQuantize:
    @given(formats, st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=20))
    def test_matches_exact_rounding_then_overflow(self, fmt, values):
        counter = OverflowCounter()
        got = fmt.quantize(values, counter=counter)
        rounded = [exact_round(Fraction(v) * Fraction(2) ** fmt.frac, fmt.rounding) for v in values]
        outside = sum(not fmt.min_int <= r <= fmt.max_int for r in rounded)
        if fmt.overflow is Overflow.SATURATE:
            want = [min(max(r, fmt.min_int), fmt.max_int) for r in rounded]
        else:
            want = [((r - fmt.min_int) % 2**fmt.bits) + fmt.min_int for r in rounded]
        assert got.tolist() == want
        assert counter.total == outside

    @given(formats, st.data())
    def test_round_trip_integer_exact(self, fmt, data):
        q = data.draw(st.lists(st.integers(fmt.min_int, fmt.max_int), min_size=1, max_size=20))
        assert fmt.quantize(fmt.to_float(q)).tolist() == q

    @given(st.floats(-7.9, 7.9))
    def test_error_within_half_lsb(self, x):
        fmt = FixedFormat(bits=8, frac=4)
        assert abs(fmt.fake_quant([x])[0] - x) <= fmt.lsb / 2

    def test_saturates_and_counts(self):
        counter = OverflowCounter()
        assert INT8.quantize([1000.0, -1000.0, 3.0], counter=counter, site="x").tolist() == [127, -128, 3]
        assert counter.total == 2 and counter.by_site == {"x": 2}

    def test_wrap_keeps_low_bits_and_counts(self):
        fmt = FixedFormat(bits=8, overflow=Overflow.WRAP)
        counter = OverflowCounter()
        assert fmt.fit([128, -129, 256, 5], counter=counter).tolist() == [-128, 127, 0, 5]
        assert counter.total == 3

    def test_huge_values_saturate(self):
        assert INT8.quantize([1e300, -1e300]).tolist() == [127, -128]

    def test_rejects_nan(self):
        with pytest.raises(ValueError, match=r"^values to quantize must be finite, not NaN or infinity$"):
            INT8.quantize([float("nan")])

    def test_convert_between_formats(self):
        src = FixedFormat(bits=16, frac=8)
        dst = FixedFormat(bits=8, frac=4)
        assert dst.convert([0x0180, 0x0188, 0x7FFF], src).tolist() == [24, 25, 127]


class TestRequantize:
    @given(st.lists(st.integers(-(2**31), 2**31 - 1), min_size=1, max_size=30),
           st.integers(1, 2**31 - 1), st.integers(0, 62))
    def test_exact_definition(self, acc, multiplier, shift):
        counter = OverflowCounter()
        got = requantize(acc, multiplier, shift, INT8, counter=counter)
        rounded = [exact_round(Fraction(a * multiplier, 2**shift), Rounding.HALF_UP) for a in acc]
        assert got.tolist() == [min(max(r, -128), 127) for r in rounded]
        assert counter.total == sum(not -128 <= r <= 127 for r in rounded)

    def test_rejects_wide_accumulators(self):
        with pytest.raises(ValueError, match=r"^accumulators must fit in signed 32 bits before requantization$"):
            requantize([2**31], 1, 0, INT8)

    def test_rejects_multiplier(self):
        with pytest.raises(ValueError, match=r"^multiplier must be between 1 and 2\*\*31 - 1, not 0$"):
            requantize([1], 0, 0, INT8)
        with pytest.raises(TypeError, match=r"^multiplier must be an integer, not float$"):
            requantize([1], 1.5, 0, INT8)

    def test_rejects_shift(self):
        with pytest.raises(ValueError, match=r"^shift must be between 0 and 62, not 63$"):
            requantize([1], 1, 63, INT8)


class TestFormatValidation:
    def test_bits_range(self):
        with pytest.raises(ValueError, match=r"^bits must be between 2 and 62 for a signed format, not 1$"):
            FixedFormat(bits=1)
        with pytest.raises(ValueError, match=r"^bits must be between 1 and 62 for an unsigned format, not 63$"):
            FixedFormat(bits=63, signed=False)

    def test_types(self):
        with pytest.raises(TypeError, match=r"^bits must be an integer, not float$"):
            FixedFormat(bits=8.0)
        with pytest.raises(TypeError, match=r"^rounding must be a Rounding, not 'half_up'$"):
            FixedFormat(bits=8, rounding="half_up")
        with pytest.raises(TypeError, match=r"^overflow must be an Overflow, not 'wrap'$"):
            FixedFormat(bits=8, overflow="wrap")

    def test_amaranth_shape(self):
        from amaranth.hdl import signed, unsigned

        assert INT8.shape == signed(8)
        assert UINT8.shape == unsigned(8)
