"""The GEMM engine's weight stream as the memory image holds it: the same bytes as the engine's own encoder,
round trips, the padded last column tile, and shapes and values the engine cannot take rejected."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokensift.hw.gemm.config import SHIFT_BITS, GemmConfig
from tokensift.hw.gemm.layout import encode_weights
from tokensift.quant.accel.stream import GemmShape, decode_stream, encode_stream
from tokensift.quant.qparams import MAX_SHIFT, MULTIPLIER_BITS


def _layer(rng, m: int, k: int, shape: GemmShape):
    return (rng.integers(-128, 128, (m, k)), rng.integers(-(1 << (shape.acc_bits - 1)), 1 << (shape.acc_bits - 1), m),
            rng.integers(1, 1 << shape.multiplier_bits, m), rng.integers(0, shape.max_shift + 1, m))


def _engine_bytes(layer, shape: GemmShape) -> bytes:
    w, *_ = layer
    m, k = w.shape
    cfg = GemmConfig(rows=2, cols=shape.cols, max_tokens=4, max_in=k, max_out=m, weight_bytes=shape.stream_bytes,
                     acc_bits=shape.acc_bits, multiplier_bits=shape.multiplier_bits)
    return b"".join(beat.to_bytes(shape.stream_bytes, "little") for beat in encode_weights(*layer, cfg))


@pytest.mark.parametrize("cols, stream_bytes, m, k, acc_bits, multiplier_bits", [
    (64, 8, 96, 32, 32, MULTIPLIER_BITS),   # the default engine, a padded last tile (TINY's qkv)
    (64, 8, 1, 16, 32, MULTIPLIER_BITS),    # DynamicViT's score layer: one channel, 63 padding
    (64, 16, 128, 64, 32, MULTIPLIER_BITS),  # whole tiles, the 16-byte beats of docs/gemm.md's demo engine
    (32, 16, 10, 32, 32, MULTIPLIER_BITS),  # the default demo run's 4 x 32 engine, the head
    (8, 2, 5, 3, 32, MULTIPLIER_BITS),
    (16, 1, 17, 7, 24, 20),                 # one-byte beats: a 50-bit record in 7 beats
    (128, 32, 200, 5, 32, 31),              # a 69-bit record in one 32-byte beat
    (4, 4, 9, 1, 2, 2),
])
def test_the_stream_is_the_engines_weight_beats_byte_for_byte(cols, stream_bytes, m, k, acc_bits, multiplier_bits):
    shape = GemmShape(cols=cols, stream_bytes=stream_bytes, acc_bits=acc_bits, multiplier_bits=multiplier_bits,
                      shift_bits=SHIFT_BITS)
    layer = _layer(np.random.default_rng(m * k + cols), m, k, shape)
    got = encode_stream(*layer, shape)
    assert got == _engine_bytes(layer, shape)
    cfg = GemmConfig(rows=1, cols=cols, max_tokens=1, max_in=k, max_out=m, weight_bytes=stream_bytes,
                     acc_bits=acc_bits, multiplier_bits=multiplier_bits)
    assert shape.record_bytes == cfg.record_beats * cfg.weight_bytes
    assert len(got) == shape.stream_length(m, k) == -(-m // cols) * cfg.tile_beats(k) * stream_bytes


@settings(max_examples=60, deadline=None)
@given(data=st.data(), stream_bytes=st.sampled_from([1, 2, 4, 8, 16]), m=st.integers(1, 70), k=st.integers(1, 20),
       acc_bits=st.integers(2, 32), multiplier_bits=st.integers(2, 31), shift_bits=st.integers(1, 8))
def test_decoding_gives_back_the_layer(data, stream_bytes, m, k, acc_bits, multiplier_bits, shift_bits):
    cols = stream_bytes * data.draw(st.integers(1, 8))
    shape = GemmShape(cols=cols, stream_bytes=stream_bytes, acc_bits=acc_bits, multiplier_bits=multiplier_bits,
                      shift_bits=shift_bits)
    layer = _layer(np.random.default_rng(data.draw(st.integers(0, 1 << 30))), m, k, shape)
    layer[1][0], layer[2][0], layer[3][0] = -(1 << (acc_bits - 1)), (1 << multiplier_bits) - 1, shape.max_shift
    got = decode_stream(encode_stream(*layer, shape), m=m, k=k, shape=shape)
    for name, a, b in zip(("weight", "bias", "multipliers", "shifts"), got, layer, strict=True):
        assert a.dtype == np.int64 and np.array_equal(a, b), name


def test_the_last_column_tile_is_padded_with_zero_weights_and_unit_records():
    shape = GemmShape(cols=8, stream_bytes=4)  # 54-bit records: 8 bytes each
    w = np.arange(-30, 0).reshape(10, 3)  # channels 0..7 in tile 0, 8..9 and 6 padding channels in tile 1
    data = encode_stream(w, np.arange(10) - 5, np.arange(10) + 100, np.arange(10) % 7, shape)
    tile = 8 * (3 + 8)
    assert len(data) == 2 * tile
    second = np.frombuffer(data[tile:], dtype=np.uint8)
    panel = second[:24].view(np.int8).reshape(3, 8)
    assert np.array_equal(panel[:, :2], w[8:].T) and not panel[:, 2:].any()
    records = [int.from_bytes(bytes(second[24 + 8 * c:32 + 8 * c]), "little") for c in range(8)]
    fields = [(r & 0xFFFFFFFF, (r >> 32) & 0xFFFF, r >> 48) for r in records]
    assert fields[:2] == [(3, 108, 1), (4, 109, 2)]
    assert fields[2:] == [(0, 1, 0)] * 6  # bias 0, multiplier 1, shift 0
    first = int.from_bytes(data[24:32], "little")  # channel 0's record: bias -5 in two's complement
    assert (first & 0xFFFFFFFF, (first >> 32) & 0xFFFF, first >> 48) == ((1 << 32) - 5, 100, 0)


@pytest.mark.parametrize("kwargs, exc, message", [
    ({"cols": 12, "stream_bytes": 8}, ValueError, r"cols \(12\) must be a multiple of stream_bytes \(8\): a weight row "
                                                   r"is whole beats"),
    ({"cols": 64, "stream_bytes": 24}, ValueError, r"stream_bytes must be a power of two \(an AXI data width\), not 24"),
    ({"cols": 0}, ValueError, r"cols must be between 1 and 1024, not 0"),
    ({"cols": 2048}, ValueError, r"cols must be between 1 and 1024, not 2048"),
    ({"stream_bytes": 256, "cols": 512}, ValueError, r"stream_bytes must be between 1 and 128, not 256"),
    ({"acc_bits": 33}, ValueError, r"acc_bits must be between 2 and 32, not 33"),
    ({"multiplier_bits": 32}, ValueError, r"multiplier_bits must be between 2 and 31, not 32"),
    ({"shift_bits": 0}, ValueError, r"shift_bits must be between 1 and 8, not 0"),
    ({"cols": 64.0}, TypeError, r"cols must be an integer, not float"),
    ({"stream_bytes": True}, TypeError, r"stream_bytes must be an integer, not bool"),
])
def test_bad_shapes_are_rejected(kwargs, exc, message):
    with pytest.raises(exc, match=f"^{message}$"):
        GemmShape(**kwargs)


def test_values_the_engine_cannot_hold_name_the_layer_and_channel():
    shape = GemmShape(cols=8, stream_bytes=8)
    w, b, mul, sh = np.zeros((3, 4), dtype=np.int64), np.zeros(3, np.int64), np.ones(3, np.int64), np.zeros(3, np.int64)
    cases = [
        ((np.where(np.arange(12).reshape(3, 4) == 9, 128, w), b, mul, sh),
         r"fc1: the weights of output channel 2 do not fit int8"),
        ((w, np.array([0, 1 << 31, 0]), mul, sh), r"fc1: bias 2147483648 of output channel 1 does not fit the engine's "
                                                  r"32-bit accumulator"),
        ((w, b, np.array([1, 1, 1 << 16]), sh), r"fc1: multiplier 65536 of output channel 2 does not fit the engine's "
                                                r"16-bit multiplier \(1\.\.65535\)"),
        ((w, b, np.array([0, 1, 1]), sh), r"fc1: multiplier 0 of output channel 0 does not fit the engine's 16-bit "
                                          r"multiplier \(1\.\.65535\)"),
        ((w, b, mul, np.array([0, MAX_SHIFT + 1, 0])), r"fc1: shift 63 of output channel 1 does not fit the engine's "
                                                       r"shifts \(0\.\.62\)"),
        ((w, b[:2], mul, sh), r"fc1: bias must have one value per output channel \(3\), not 2"),
        ((w[:0], b[:0], mul[:0], sh[:0]), r"fc1: a weight stream needs at least one output channel and one input, "
                                          r"not 0 x 4"),
        ((w.astype(float), b, mul, sh), r"fc1: weight must be a 2-dimensional integer array, not float64 of shape "
                                        r"\(3, 4\)"),
    ]
    for args, message in cases:
        with pytest.raises(ValueError, match=f"^{message}$"):
            encode_stream(*args, shape, what="fc1")
    with pytest.raises(ValueError, match=r"^fc1: shift 8 of output channel 0 does not fit the engine's shifts "
                                         r"\(0\.\.7\)$"):
        encode_stream(w, b, mul, np.array([8, 0, 0]), GemmShape(cols=8, shift_bits=3), what="fc1")
    with pytest.raises(TypeError, match=r"^shape must be a GemmShape, not dict$"):
        encode_stream(w, b, mul, sh, {"cols": 8})


def test_a_malformed_stream_is_rejected():
    shape = GemmShape(cols=8, stream_bytes=8)
    data = bytearray(encode_stream(np.ones((5, 2), dtype=np.int64), np.arange(5), np.full(5, 3), np.full(5, 2), shape))
    records = 8 * 2  # the record block of the only tile starts after its 2 rows of 8 weights
    cases = []
    bad = bytearray(data)
    bad[records + 8 * 6 + 4] = 0  # padding channel 6's multiplier 1 -> 0
    cases.append((bad, r"the padding channels 5\.\.7 of the last column tile are not zero weights with records "
                       r"\(0, 1, 0\)"))
    bad = bytearray(data)
    bad[7] = 1  # a padding channel's weight
    cases.append((bad, r"the padding channels 5\.\.7 .*"))
    bad = bytearray(data)
    bad[records + 8 * 2 + 7] |= 0x80  # bit 63 of channel 2's record: above its 54 bits of fields
    cases.append((bad, r"the record of channel 2 has bits set above its 54 bits of fields"))
    bad = bytearray(data)
    bad[records + 8 * 1 + 4:records + 8 * 1 + 6] = bytes(2)  # channel 1's multiplier -> 0
    cases.append((bad, r"channel 1's multiplier 0 is outside the engine's range 1\.\.65535"))
    bad = bytearray(data)
    bad[records + 8 * 3 + 6] |= 0x3F  # channel 3's shift -> 63
    cases.append((bad, r"channel 3's shift 63 is outside the engine's range 0\.\.62"))
    cases.append((data[:-8], r"the weight stream of a 5 x 2 layer is 80 bytes, not 72"))
    for stream, message in cases:
        with pytest.raises(ValueError, match=f"^{message}$"):
            decode_stream(bytes(stream), m=5, k=2, shape=shape)
    assert np.array_equal(decode_stream(bytes(data), m=5, k=2, shape=shape).multipliers, np.full(5, 3))


def test_the_module_examples():
    import doctest

    from tokensift.quant.accel import stream

    result = doctest.testmod(stream)
    assert result.attempted > 0 and result.failed == 0
