"""The shared parameter checks of tokensift.checks: accepted types, bounds, and the one-sentence errors."""

import doctest
import math

import numpy as np
import pytest

import tokensift.checks
from tokensift.checks import check_bool, check_count, check_int, check_int_array, check_scale


def test_doctests():
    result = doctest.testmod(tokensift.checks)
    assert result.attempted == 8 and result.failed == 0


@pytest.mark.parametrize("value", [0, 7, -3, np.int8(5), np.int64(1 << 40), np.uint16(9)])
def test_check_int_accepts_ints_and_returns_a_python_int(value):
    out = check_int("n", value)
    assert out == int(value) and type(out) is int


@pytest.mark.parametrize("check, kind, value", [
    (check_int, "an integer", True),
    (check_int, "an integer", False),
    (check_int, "an integer", np.bool_(True)),
    (check_int, "an integer", 2.0),
    (check_int, "an integer", "3"),
    (check_int, "an integer", None),
    (check_int, "an integer", np.float32(1)),
    (check_scale, "a real number", True),
    (check_scale, "a real number", "0.5"),
    (check_scale, "a real number", None),
    (check_scale, "a real number", 1j),
])
def test_a_value_of_the_wrong_type_is_named_by_its_type_or_its_repr(check, kind, value):
    with pytest.raises(TypeError) as err:
        check("n", value)
    assert str(err.value) == f"n must be {kind}, not {type(value).__name__}"
    with pytest.raises(TypeError) as err:
        check("n", value, show="repr")
    assert str(err.value) == f"n must be {kind}, not {value!r}"


def test_check_int_numpy_false_takes_python_ints_only():
    assert check_int("lanes", 4, numpy=False) == 4
    with pytest.raises(TypeError, match=r"^lanes must be an integer, not int64$"):
        check_int("lanes", np.int64(4), numpy=False)
    with pytest.raises(TypeError, match=r"^lanes must be an integer, not bool$"):
        check_int("lanes", True, numpy=False)


@pytest.mark.parametrize("value, low, high, message", [
    (0, 1, 256, r"^x must be between 1 and 256, not 0$"),
    (257, 1, 256, r"^x must be between 1 and 256, not 257$"),
    (np.int64(-1), 0, 62, r"^x must be between 0 and 62, not -1$"),
    (0, 1, None, r"^x must be at least 1, not 0$"),
    (-5, -4, None, r"^x must be at least -4, not -5$"),
    (17, None, 16, r"^x must be at most 16, not 17$"),
])
def test_check_int_bounds(value, low, high, message):
    with pytest.raises(ValueError, match=message):
        check_int("x", value, low=low, high=high)


@pytest.mark.parametrize("value, low, high", [(1, 1, 256), (256, 1, 256), (0, 0, None), (-9, None, -9), (5, None, None)])
def test_check_int_bounds_are_inclusive(value, low, high):
    assert check_int("x", value, low=low, high=high) == value


def test_check_int_rejects_an_unknown_show():
    with pytest.raises(ValueError, match=r"^show must be 'type' or 'repr', not 'name'$"):
        check_int("x", 1.5, show="name")


@pytest.mark.parametrize("value, zero", [(1, False), (10**12, False), (0, True), (3, True), (np.int32(2), False)])
def test_check_count_accepts(value, zero):
    out = check_count("n", value, zero=zero)
    assert out == int(value) and type(out) is int


@pytest.mark.parametrize("value, zero, message", [
    (0, False, r"^n must be a positive integer, not 0$"),
    (-1, True, r"^n must be a non-negative integer, not -1$"),
    (True, False, r"^n must be a positive integer, not True$"),
    (2.0, False, r"^n must be a positive integer, not 2\.0$"),
    ("4", True, r"^n must be a non-negative integer, not '4'$"),
    (np.int64(0), False, r"^n must be a positive integer, not 0$"),
])
def test_check_count_rejects_with_one_value_error(value, zero, message):
    with pytest.raises(ValueError, match=message):
        check_count("n", value, zero=zero)


def test_check_count_numpy_false():
    assert check_count("depth", 4, numpy=False) == 4
    with pytest.raises(ValueError) as err:
        check_count("depth", np.int64(4), numpy=False)
    assert str(err.value) == f"depth must be a positive integer, not {np.int64(4)!r}"


@pytest.mark.parametrize("value", [True, False])
def test_check_bool_accepts_bools(value):
    assert check_bool("package", value) is value


@pytest.mark.parametrize("value, shown", [(1, "int"), (0, "int"), ("yes", "str"), (None, "NoneType"),
                                          (np.bool_(True), type(np.bool_(True)).__name__)])
def test_check_bool_rejects_everything_else(value, shown):
    with pytest.raises(TypeError, match=rf"^package must be a bool, not {shown}$"):
        check_bool("package", value)


@pytest.mark.parametrize("value", [1, 0.5, 2.0**-40, np.float32(0.25), np.int16(3), 1e300])
def test_check_scale_accepts_positive_finite_reals(value):
    out = check_scale("scale", value)
    assert out == float(value) and type(out) is float


@pytest.mark.parametrize("value, message", [
    (0.0, r"^scale must be a positive finite number, not 0\.0$"),
    (0, r"^scale must be a positive finite number, not 0\.0$"),
    (-1.0, r"^scale must be a positive finite number, not -1\.0$"),
    (math.inf, r"^scale must be a positive finite number, not inf$"),
    (math.nan, r"^scale must be a positive finite number, not nan$"),
])
def test_check_scale_range(value, message):
    with pytest.raises(ValueError, match=message):
        check_scale("scale", value)


def test_check_scale_numpy_false():
    assert check_scale("alpha", 0.5, numpy=False) == 0.5
    with pytest.raises(TypeError, match=r"^alpha must be a real number, not float32$"):
        check_scale("alpha", np.float32(0.5), numpy=False)


@pytest.mark.parametrize("values", [[1, 2], np.arange(3, dtype=np.int8), np.zeros((2, 0), dtype=np.uint16), 5])
def test_check_int_array_returns_int64(values):
    out = check_int_array("x", values)
    assert out.dtype == np.int64 and np.array_equal(out, np.asarray(values))


@pytest.mark.parametrize("values, dtype", [([1.0], "float64"), (np.array([1], dtype=object), "object"),
                                           ([True], "bool"), (["1"], "<U1")])
def test_check_int_array_rejects_other_dtypes(values, dtype):
    with pytest.raises(TypeError) as err:
        check_int_array("x", values)
    assert str(err.value) == f"x must hold integers, not {dtype}"


@pytest.mark.parametrize("values, bits, ok", [([-128, 127], 8, True), ([128], 8, False), ([-129], 8, False),
                                              ([0, 1], 2, True), ([2], 2, False),
                                              (np.zeros(0, dtype=np.int64), 2, True)])
def test_check_int_array_bits(values, bits, ok):
    if ok:
        assert check_int_array("x", values, bits=bits).tolist() == list(values)
    else:
        low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        with pytest.raises(ValueError, match=rf"^x must fit in signed {bits} bits, between {low} and {high}$"):
            check_int_array("x", values, bits=bits)
