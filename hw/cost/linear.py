"""THE assumption for the parts not built yet: linear layers on a MAC array of the same kind.

Everything the model needs that has no generator yet — the QKV, output-projection and MLP layers, the
patch embedding, the classifier head and the token predictors' MLPs — is costed here, and only here:

**Linear array.** One :class:`tokensift.hw.common.mac_array.MacArray` of ``lanes`` int8 x int8 multipliers (one
DSP each) in dot mode, fed by an input-row buffer and followed by one
:class:`tokensift.hw.common.requant.Requantizer`:

* weights are streamed from off-chip memory, ``lanes`` int8 weights per cycle, and never stored on chip
  (the bandwidth is assumed available: ``lanes`` bytes per cycle, 4.8 GB/s for 16 lanes at 300 MHz);
* the buffer holds one input row (``in_max`` int8 values as ``lanes``-wide words, block or LUT RAM by
  :func:`tokensift.hw.common.resources.map_memory`) and is reused for every output of that row;
* an output is one dot product of ``ceil(in / lanes)`` chunks issued back to back, so a layer of
  ``N`` tokens takes::

      cycles = N * out * ceil(in / lanes) + dot_latency + 1

  (the array pipelines across outputs and rows; ``dot_latency`` is the MAC array's, ``+ 1`` the
  requantizer's register);
* a predictor of a token selector is a stack of such layers; its cycles are its multiply-accumulates
  (as :mod:`tokensift.sw` counts them) over ``lanes``, rounded up, plus the same fill;
* LayerNorm, GELU, softmax of the predictor and the residual additions are not modeled (neither
  resources nor cycles): they are assumed to be streaming units overlapped with the array.

Its resources are those of the three validated pieces: :mod:`tokensift.hw.common.mac_array_resources`,
:func:`tokensift.hw.common.resources.map_memory` and :mod:`tokensift.hw.common.requant_resources`.

>>> p = LinearParams(lanes=16, in_max=1536)
>>> linear_cycles(p, n_tokens=197, in_features=384, out_features=1152)
5446664
>>> linear_resources(p, "xcup").dsp  # 16 MACs + the requantizer's 32 x 17 multiplier
18
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from amaranth.utils import ceil_log2

from tokensift.checks import check_count, check_int
from tokensift.hw.common.mac_array_resources import MacArrayParams
from tokensift.hw.common.mac_array_resources import resources as mac_array_resources
from tokensift.hw.common.requant_resources import RequantParams
from tokensift.hw.common.requant_resources import resources as requant_resources
from tokensift.hw.common.resources import Resources, map_memory
from tokensift.quant.fixed import INT8
from tokensift.quant.qparams import MULTIPLIER_BITS

__all__ = ["LinearParams", "linear_cycles", "predictor_cycles", "linear_resources", "REQUANT_MULTIPLIER"]

#: the output scale the linear array's requantizer is costed with: a full-width multiplier of the default
#: width of :func:`tokensift.quant.qparams.quantize_multiplier` (the hardware would load per-channel
#: multipliers at run time; the multiplier's width, not its value, sets the DSPs)
REQUANT_MULTIPLIER = (1 << MULTIPLIER_BITS) - 1
REQUANT_SHIFT = 24


@dataclass(frozen=True, kw_only=True)
class LinearParams:
    """The linear array: ``lanes`` int8 MACs, an input-row buffer for rows up to ``in_max`` values."""

    lanes: int
    in_max: int
    data_bits: int = 8
    acc_bits: int = 32

    def __post_init__(self):
        for name, value, low in (("lanes", self.lanes, 1), ("in_max", self.in_max, 1),
                                 ("data_bits", self.data_bits, 2), ("acc_bits", self.acc_bits, 2)):
            check_int(name, value, low=low, numpy=False)

    @property
    def mac_array(self) -> MacArrayParams:
        return MacArrayParams(lanes=self.lanes, a_bits=self.data_bits, b_bits=self.data_bits,
                              dot_bits=2 * self.data_bits, acc_bits=self.acc_bits, tag_bits=1)

    @property
    def fill(self) -> int:
        """Pipeline fill: the MAC array's dot latency (operands, product, tree, accumulator) and the
        requantizer."""
        return 3 + ceil_log2(self.lanes) + 1


def _check(params) -> LinearParams:
    if not isinstance(params, LinearParams):
        raise TypeError(f"params must be LinearParams, not {type(params).__name__}")
    return params


def linear_cycles(params: LinearParams, *, n_tokens: int, in_features: int, out_features: int) -> int:
    """Cycles of one linear layer over ``n_tokens`` rows (0 rows: 0 cycles)."""
    p = _check(params)
    for name, value in (("n_tokens", n_tokens), ("in_features", in_features), ("out_features", out_features)):
        check_count(name, value, zero=True, numpy=False)
    if in_features > p.in_max:
        raise ValueError(f"in_features {in_features} exceeds the row buffer of the linear array (in_max {p.in_max})")
    if n_tokens == 0 or out_features == 0:
        return 0
    return n_tokens * out_features * math.ceil(in_features / p.lanes) + p.fill


def predictor_cycles(params: LinearParams, *, macs: int) -> int:
    """Cycles of a token predictor's MLP of ``macs`` multiply-accumulates on the linear array."""
    p = _check(params)
    check_count("macs", macs, zero=True, numpy=False)
    return -(-macs // p.lanes) + p.fill if macs else 0


def linear_resources(params: LinearParams, family: str) -> Resources:
    """MAC array + input-row buffer + requantizer."""
    p = _check(params)
    words = math.ceil(p.in_max / p.lanes)
    buffer = map_memory(p.lanes * p.data_bits, words, family=family).resources
    requant = RequantParams(acc_bits=p.acc_bits, out=INT8, multiplier=REQUANT_MULTIPLIER, shift=REQUANT_SHIFT)
    return mac_array_resources(p.mac_array, family) + buffer + requant_resources(requant, family)
