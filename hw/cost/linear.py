"""The linear layers on the GEMM engine (:mod:`tokensift.hw.gemm`), as the cost model counts them.

Every linear layer of the model -- QKV, output projection, fc1, fc2, the patch embedding (flattened patches)
and the classifier head -- is one job of the generated GEMM engine: an output-stationary ``rows x cols``
array of int8 MACs (one DSP each) with a double-buffered weight buffer, weights streamed from DRAM. A
layer's cycles are the engine's exact cycle model (:func:`tokensift.hw.gemm.cycles.cycles`, equal to
Verilator's for a job on an idle engine at a fixed memory latency): from the job's start to its last
output, the first weight tile's load included (a layer's input is the previous layer's output, so its
job cannot start earlier).

The weight stream: ``weight_rate`` bytes per cycle (the device's realistic DRAM bandwidth at the clock,
:meth:`tokensift.devices.Device.dram_bytes_per_cycle`, rounded down; :data:`DEFAULT_WEIGHT_RATE` when no
device is given) after ``weight_latency`` cycles (:data:`DEFAULT_WEIGHT_LATENCY`, an assumed DRAM round
trip), into beats of ``weight_bytes`` (the power of two at or above the rate, at most ``cols``).

The token predictors' MLPs (DynamicViT, SPViT) are jobs of the same engine
(:mod:`tokensift.hw.cost.predictor`).

>>> p = LinearParams(rows=8, cols=128, max_tokens=197, in_max=1536, out_max=1536, weight_rate=16)
>>> linear_cycles(p, n_tokens=197, in_features=384, out_features=1152)
89845
>>> round(197 * 384 * 1152 / (p.macs * 89845), 3)  # MAC utilization of that job
0.947
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from tokensift.checks import check_count, check_int
from tokensift.hw.common.resources import Resources

__all__ = ["LinearParams", "linear_cycles", "linear_resources", "default_rows",
           "device_weight_rate", "DEFAULT_WEIGHT_RATE", "DEFAULT_WEIGHT_LATENCY"]

#: weight bytes per cycle when no device says otherwise: one 128-bit AXI beat per cycle
DEFAULT_WEIGHT_RATE = 16
#: cycles from a weight request to its first byte: an assumed DRAM round trip (about 0.3-1 us)
DEFAULT_WEIGHT_LATENCY = 100


def default_rows(macs: int) -> int:
    """The array's rows (tokens per tile) for ``macs`` MACs when no shape is given: about a quarter of
    the square root, a power of two from 1 to 16, so tiles are wide in output channels (the weight panel is
    reused by every token tile) and short in tokens (few padded rows when a frame is pruned).

    >>> [default_rows(m) for m in (4, 16, 64, 128, 1024, 4096)]
    [1, 1, 2, 2, 8, 16]
    """
    check_int("macs", macs, low=1, numpy=False)
    rows = 1
    while rows * 2 <= min(16, math.isqrt(macs) // 4):
        rows *= 2
    return rows


def device_weight_rate(device, clock_mhz: float) -> int:
    """Weight bytes per cycle the device's DRAM delivers at ``clock_mhz`` (realistic bandwidth, rounded
    down, at least 1)."""
    return max(1, int(device.dram_bytes_per_cycle(clock_mhz) + 1e-9))  # 47.999... is 48


@dataclass(frozen=True, kw_only=True)
class LinearParams:
    """The GEMM engine a model's linear layers run on, and its weight memory."""

    rows: int
    cols: int
    max_tokens: int
    in_max: int
    out_max: int
    weight_rate: int = DEFAULT_WEIGHT_RATE
    weight_latency: int = DEFAULT_WEIGHT_LATENCY

    def __post_init__(self):
        for name in ("rows", "cols", "max_tokens", "in_max", "out_max", "weight_rate"):
            check_int(name, getattr(self, name), low=1, numpy=False)
        check_int("weight_latency", self.weight_latency, low=0, numpy=False)
        self.gemm  # noqa: B018 -- the engine's own checks (rows a power of two, cols <= 1024, ...)

    @classmethod
    def for_macs(cls, macs: int, *, rows: int | None = None, **kw) -> LinearParams:
        """An engine of ``macs`` MACs: ``rows`` (default :func:`default_rows`) x ``macs / rows``."""
        rows = default_rows(macs) if rows is None else check_int("rows", rows, low=1, numpy=False)
        if macs % rows:
            raise ValueError(f"the linear array's {macs} MACs are not a multiple of its {rows} rows")
        return cls(rows=rows, cols=macs // rows, **kw)

    @property
    def macs(self) -> int:
        return self.rows * self.cols

    @property
    def lanes(self) -> int:
        """MACs of the array (the co-optimizer's ``linear_lanes``)."""
        return self.macs

    @property
    def weight_bytes(self) -> int:
        """Bytes per weight beat: the power of two at or above the memory's rate, at most ``cols`` (a beat
        must divide a weight row of ``cols`` bytes)."""
        w = 1
        while w < self.weight_rate and w < self.cols and self.cols % (2 * w) == 0:
            w *= 2
        return w

    @property
    def gemm(self):
        from tokensift.hw.gemm.config import GemmConfig

        return GemmConfig(rows=self.rows, cols=self.cols, max_tokens=self.max_tokens, max_in=self.in_max,
                          max_out=self.out_max, weight_bytes=self.weight_bytes)


def _check(params) -> LinearParams:
    if not isinstance(params, LinearParams):
        raise TypeError(f"params must be LinearParams, not {type(params).__name__}")
    return params


def linear_cycles(params: LinearParams, *, n_tokens: int, in_features: int, out_features: int) -> int:
    """Cycles of one linear layer over ``n_tokens`` rows (0 rows: 0 cycles): the GEMM engine's job."""
    p = _check(params)
    for name, value in (("n_tokens", n_tokens), ("in_features", in_features), ("out_features", out_features)):
        check_count(name, value, zero=True, numpy=False)
    for name, value, limit, what in (("in_features", in_features, p.in_max, "in_max"),
                                     ("out_features", out_features, p.out_max, "out_max"),
                                     ("n_tokens", n_tokens, p.max_tokens, "max_tokens")):
        if value > limit:
            raise ValueError(f"{name} {value} exceeds the linear engine's {what} {limit}")
    if n_tokens == 0 or out_features == 0 or in_features == 0:
        return 0
    return _job_cycles(p, int(n_tokens), int(in_features), int(out_features))


@lru_cache(maxsize=1 << 16)
def _job_cycles(p: LinearParams, n: int, k: int, m: int) -> int:
    # the co-optimizer asks for the same jobs over and over (every keep point of every hardware point)
    from tokensift.hw.gemm.cycles import cycles

    return int(cycles(p.gemm, n, k, m, weight_bytes_per_cycle=p.weight_rate, weight_latency=p.weight_latency))


def linear_resources(params: LinearParams, family: str) -> Resources:
    """The GEMM engine's resources (:mod:`tokensift.hw.gemm.resources`)."""
    from tokensift.hw.gemm.resources import resources

    return resources(_check(params).gemm, family)
