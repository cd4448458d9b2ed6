"""Exact cycle model of the GEMM engine (:mod:`tokensift.hw.gemm.core`) fed by :class:`WeightMemory` or
:class:`WeightBursts`.

The engine's control follows a handful of rules (all timed by the RTL's registers), and this module
replays them tile by tile and weight beat by weight beat, so it matches Verilator to the cycle when the
weight memory has a fixed latency and neither the memory nor the output stalls at random:

- A job beat accepted in cycle ``J`` commits its job (and its token-buffer half) in ``J + JOB_TO_COMMIT``.
- The loader takes the weight beats of column tile ``g`` (``k * cols / weight_bytes`` row beats, then
  ``cols * record_beats`` record beats) one per cycle at most, when the memory has one and its buffer half
  is free: the rows once tile ``g - 2`` has issued its last ``k`` (and, when ``k < cols``, ``cols - k``
  cycles more: weight bank ``c`` reads ``c`` cycles behind the issue), the records once tile ``g - 2``'s
  last drain has ended. The tile can be computed two cycles after its last beat.
- The array issues one ``k`` per cycle: ``ceil(n / rows)`` token tiles of ``k`` cycles per column tile;
  the last ``k`` of a tile waits until the previous tile's drain has started.
- A drain starts ``ISSUE_TO_DRAIN`` cycles after its tile's last ``k`` and ``cols + 1`` cycles after the
  previous drain started, and writes one beat per output channel (``min(cols, m - col0)``) per cycle into
  the output FIFO ``epilogue_latency(cols) + 1`` cycles after it started; a beat leaves the FIFO
  ``FIFO_LATENCY`` cycles after it was written.

So back-to-back tiles cost ``max(k, cols + 1)`` cycles, and column tiles whose weights load slower than
they compute (or the first of a stream, which has nothing to hide behind) cost their load time. The
weight stream is either a memory of a fixed rate and latency (:class:`WeightMemory`) or an AXI read DMA's
bursts with a fixed gap before each (:class:`WeightBursts`): cycles in which the stream has no beat to
offer delay the loader exactly as the source's own rule says, in the model as in the RTL.

>>> from tokensift.hw.gemm.config import GemmConfig
>>> cfg = GemmConfig(rows=8, cols=128, max_tokens=197, max_in=1536, max_out=1536, weight_bytes=16)
>>> c = cycles(cfg, 197, 384, 384, weight_bytes_per_cycle=16, weight_latency=100)
>>> c > 3 * 25 * 384
True
"""

from __future__ import annotations

from dataclasses import dataclass

from tokensift.checks import check_int
from tokensift.hw.gemm.config import GemmConfig
from tokensift.hw.gemm.core import FIFO_LATENCY, ISSUE_TO_DRAIN, JOB_TO_COMMIT, epilogue_latency

__all__ = ["WeightMemory", "WeightBursts", "JobTiming", "schedule", "cycles", "FIFO_LATENCY"]

#: cycles from a tile's last weight beat to the first cycle it can be computed
_LOADED = 2


class WeightMemory:
    """The testbench's weight memory: ``bytes_per_cycle`` into a two-beat buffer, first beat ``latency``
    cycles after it is started.

    Step it once per cycle: :attr:`valid` says whether a beat is offered in the current cycle, then
    :meth:`step` with whether it was taken. Credit (bytes buffered) starts at one beat in the start cycle,
    grows by ``bytes_per_cycle`` per cycle and is capped at two beats.
    """

    def __init__(self, *, beat_bytes: int, bytes_per_cycle: int, latency: int):
        self.beat = check_int("beat_bytes", beat_bytes, low=1, numpy=False)
        self.rate = check_int("weight_bytes_per_cycle", bytes_per_cycle, low=1, numpy=False)
        self.wait = check_int("weight_latency", latency, low=0, numpy=False)
        self.credit = self.beat

    @property
    def valid(self) -> bool:
        return self.wait == 0 and self.credit >= self.beat

    def step(self, taken: bool) -> None:
        if self.wait:
            self.wait -= 1
            return
        self.credit = min(self.credit - self.beat * bool(taken) + self.rate, 2 * self.beat)


class WeightBursts:
    """An AXI read DMA feeding the weight stream straight from DRAM: bursts of ``burst_beats`` beats, one
    burst at a time; burst ``b``'s first beat is offered ``gaps[b % len(gaps)]`` cycles after the previous
    burst's last beat was taken (burst 0's after the source is started), then one beat per cycle, each
    held while the engine does not take it (an R channel under back-pressure).

    Step it once per cycle like :class:`WeightMemory`; :func:`schedule` reads only ``burst_beats`` and
    ``gaps``, so one object describes the source to both.

    >>> src = WeightBursts(burst_beats=2, gaps=[3, 1])
    >>> offered = []
    >>> for t in range(9):
    ...     offered.append(int(src.valid))
    ...     src.step(src.valid and t != 5)
    >>> offered
    [0, 0, 0, 1, 1, 1, 1, 1, 0]
    """

    def __init__(self, *, burst_beats: int, gaps):
        self.burst_beats = check_int("burst_beats", burst_beats, low=1, numpy=False)
        if isinstance(gaps, (str, bytes)) or not hasattr(gaps, "__iter__"):
            raise TypeError(f"gaps must be a sequence of integers, not {type(gaps).__name__}")
        self.gaps = tuple(check_int("gap", g, low=1) for g in gaps)
        if not self.gaps:
            raise ValueError("gaps must hold at least one gap")
        self._burst = 0
        self._left = self.burst_beats
        self.wait = self.gaps[0]

    @property
    def valid(self) -> bool:
        return self.wait == 0

    def step(self, taken: bool) -> None:
        if self.wait:
            self.wait -= 1
            return
        if taken:
            self._left -= 1
            if not self._left:
                self._burst += 1
                self._left = self.burst_beats
                self.wait = self.gaps[self._burst % len(self.gaps)] - 1


@dataclass
class JobTiming:
    """When a job's output beats leave the engine: the first and the last, in cycles."""

    first_out: int
    last_out: int


def schedule(cfg: GemmConfig, jobs, *, weight_bytes_per_cycle: int | None = None,
             weight_latency: int | None = None, bursts: WeightBursts | None = None) -> list[JobTiming]:
    """Replay the engine on committed ``jobs``, ``(n, k, m, accepted)``: sizes and the cycle the job beat
    was accepted (non-decreasing). The weight source, a memory of ``weight_bytes_per_cycle`` and
    ``weight_latency`` or the DMA ``bursts``, is started in the first job's accept cycle. Assumes the
    output is always ready and the source offers its beats by its own rule (no random gaps)."""
    if not isinstance(cfg, GemmConfig):
        raise TypeError(f"cfg must be a GemmConfig, not {type(cfg).__name__}")
    if bursts is not None:
        if not isinstance(bursts, WeightBursts):
            raise TypeError(f"bursts must be a WeightBursts, not {type(bursts).__name__}")
        if weight_bytes_per_cycle is not None or weight_latency is not None:
            raise ValueError("give either weight_bytes_per_cycle and weight_latency, or bursts, not both")
        rate = latency = 0
    else:
        rate = check_int("weight_bytes_per_cycle", weight_bytes_per_cycle, low=1, numpy=False)
        latency = check_int("weight_latency", weight_latency, low=0, numpy=False)
    W, C = cfg.weight_bytes, cfg.cols
    jobs = [tuple(int(v) for v in job) for job in jobs]
    for n, k, m, _ in jobs:
        check_int("n", n, low=1, high=cfg.max_tokens, numpy=False)
        check_int("k", k, low=1, high=cfg.max_in, numpy=False)
        check_int("m", m, low=1, high=cfg.max_out, numpy=False)
    if not jobs:
        return []
    start = jobs[0][3] + latency

    # memory: (cycle of the previous handshake, credit at it)
    prev_beat, credit = None, None

    def take(ready: int) -> int:
        """Cycle of the next beat's handshake, the loader being ready from cycle ``ready``."""
        nonlocal prev_beat, credit
        if prev_beat is None:
            t = max(start, ready)
            c_t = min(W + (t - start) * rate, 2 * W)
        else:
            c1 = min(credit - W + rate, 2 * W)
            t = prev_beat + 1 if c1 >= W else prev_beat + 1 + -(-(W - c1) // rate)
            t = max(t, ready)
            c_t = min(c1 + (t - prev_beat - 1) * rate, 2 * W)
        prev_beat, credit = t, c_t
        return t

    def take_run(count: int, ready: int) -> int:
        """Cycle of the last of ``count`` beats, the loader ready for them from ``ready`` on. After the
        first beat only the memory limits them: beat ``i`` comes ``max(i, ceil(((i + 1) W - c0) / rate))``
        cycles after the first (credit ``c0`` then), and the two-beat cap binds only when ``rate >= W``."""
        nonlocal prev_beat, credit
        t0 = take(ready)
        if count == 1:
            return t0
        c0, i = credit, count - 1
        if rate >= W:
            t, c = t0 + i, min(c0 + i * (rate - W), 2 * W)
        else:
            t = t0 + max(i, -(-((i + 1) * W - c0) // rate))
            c = c0 + (t - t0) * rate - i * W
        prev_beat, credit = t, c
        return t

    taken = 0  # beats the burst source has delivered

    def take_burst(ready: int) -> int:
        """Cycle of the next beat's handshake from :class:`WeightBursts`, the loader ready from ``ready``."""
        nonlocal prev_beat, taken
        if prev_beat is None:
            offered = jobs[0][3] + bursts.gaps[0]
        elif taken % bursts.burst_beats == 0:
            offered = prev_beat + bursts.gaps[(taken // bursts.burst_beats) % len(bursts.gaps)]
        else:
            offered = prev_beat + 1
        prev_beat, taken = max(offered, ready), taken + 1
        return prev_beat

    def take_burst_run(count: int, ready: int) -> int:
        t = take_burst(ready)
        for _ in range(count - 1):
            t = take_burst(t + 1)
        return t

    load_run = take_run if bursts is None else take_burst_run

    half_rows_free = [0, 0]     # first cycle the loader may write a half's rows
    half_consts_free = [0, 0]   # ... its records
    next_issue = 0              # first cycle the array may issue
    shadow_free = 0             # first cycle a tile's last k may issue
    drain_free = 0              # first cycle a drain may start
    out_delay = epilogue_latency(C) + 1 + FIFO_LATENCY
    timings = []
    g = 0
    for n, k, m, accepted in jobs:
        committed = accepted + JOB_TO_COMMIT
        first_out = None
        last_out = None
        token_tiles = -(-n // cfg.rows)
        for col0 in range(0, m, C):
            half = g % 2
            t = load_run(k * cfg.row_beats, max(committed, half_rows_free[half]))
            t = load_run(C * cfg.record_beats, max(t + 1, half_consts_free[half]))
            loaded = t + _LOADED
            emit = min(C, m - col0)
            for i in range(token_tiles):
                first = max(next_issue, loaded, committed)
                last = max(first + k - 1, shadow_free)
                drain = max(last + ISSUE_TO_DRAIN, drain_free)
                shadow_free = drain + 1
                drain_free = drain + C + 1
                next_issue = last + 1
                if first_out is None:
                    first_out = drain + out_delay
                last_out = drain + out_delay + emit - 1
                if i == token_tiles - 1:
                    half_rows_free[half] = last + 1 + max(0, C - k)
                    half_consts_free[half] = drain + C + 1
            g += 1
        timings.append(JobTiming(first_out=first_out, last_out=last_out))
    return timings


def cycles(cfg: GemmConfig, n: int, k: int, m: int, *, weight_bytes_per_cycle: int, weight_latency: int) -> int:
    """Cycles of one job on an idle engine: from the cycle its job beat is accepted (activations already
    loaded, the weight memory started in that cycle) to the cycle its last output beat is taken."""
    (timing,) = schedule(cfg, [(n, k, m, 0)], weight_bytes_per_cycle=weight_bytes_per_cycle,
                         weight_latency=weight_latency)
    return timing.last_out
