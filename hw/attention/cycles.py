"""Cycle model of the attention accelerator: exact for stall-free streams, checked against simulation.

The engine's schedule (see :mod:`tokensift.hw.attention.engine`) gives, for one frame of ``N`` tokens,
``C = head_dim / lanes`` chunks per row, ``L = lanes``, cycles counted from the header's transfer (cycle
0) with the input always valid, each frame's constants beat on ``k_stream`` taken before its header (the
constants port holds one beat, taken while the previous frame loads, so it never delays a header when it
is always valid) and the outputs always ready:

- load: ``3 N C`` beats, the first ``QK(0)`` operation issues at ``X0 = 3 N C + 1``;
- ``QK(i)`` takes ``N C`` cycles, ``PV(i)`` takes ``T_pv = C max(N, L)``; one step ``QK(i+1), PV(i)`` is
  ``W = N C + T_pv``;
- the softmax of row ``i`` can start ``front + 1 + dot_latency`` cycles after the last ``QK(i)``
  operation and, ``T_sm = N + exp_latency + prob_frac + 7`` cycles later, ``PV(i)`` may issue
  (``G = front + 1 + dot_latency + T_sm`` after ``QK(i)`` ended);
- the last output beat leaves ``(C - 1) max(N, L) + N + L + front + vec_latency + requant + 1`` cycles
  after ``PV(N-1)`` began.

The pipeline latencies (:func:`latencies`): ``front = 4`` (memory read, the normalizer's operand,
product and rounding registers), ``dot_latency = 3 + ceil(log2 L)`` and ``vec_latency = 3`` (operand,
product, adder tree, accumulator registers), ``exp_latency`` 9 (``exp2_lut``) or 12 (``exp2_poly``: the
run-time scale's operand register, two product stages and three rounding-shift stages, then the split,
the table and the final shift), ``requant = 6`` (the run-time output scale: two product stages, three
rounding-shift stages, the saturation register); the softmax reads each score into a register before the
exponent pipeline (``score_read = 2``).

When the array never waits for the softmax in steady state (``N >= 3`` and ``G <= W``, the usual case)
the frame takes the closed form::

    B0     = X0 + 2 N C + max(0, G - N C)          # PV(0) waits only if the first softmax is slow
    B_last = B0 + (N - 2) W + max(T_pv, G)          # PV(N-1) has no QK(N) in front of it
    cycles = B_last + (C - 1) max(N, L) + N + L + front + vec_latency + requant + 1

Otherwise (few tokens, or ``head_dim == lanes`` with small ``N``) :func:`frame_schedule` evaluates the
same dependency rules row by row (``O(N)``), which is what :func:`cycles` does then. Back-to-back frames
overlap: the next header is accepted the cycle after ``PV(N-1)`` ends (:func:`frame_interval`), while
the tail drains.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.utils import ceil_log2

from tokensift.checks import check_int
from tokensift.hw.attention.scaling import PRODUCT_STAGES, SHIFT_STAGES
from tokensift.quant.attention import AttentionParams, macs
from tokensift.quant.softmax import SoftmaxVariant

__all__ = ["FrameSchedule", "frame_schedule", "cycles", "frame_interval", "mac_utilization", "latencies"]


def latencies(params: AttentionParams) -> dict:
    """Fixed pipeline latencies of the hardware, from its structure (the unit classes say the same; the
    tests hold them to it)."""
    # operand, product, rounding shift, split, table (ROM and its register, or four polynomial stages), shift
    table = 1 if params.softmax.variant is SoftmaxVariant.EXP2_LUT else 4
    return {
        "front": 4,                                  # memory read, three normalizer stages
        "dot": 3 + ceil_log2(params.lanes),          # operands, product, adder tree, chunk accumulator
        "vec": 3,                                    # operands, product, lane accumulator
        "score_read": 2,                             # score buffer read, its register
        "exp": 1 + PRODUCT_STAGES + SHIFT_STAGES + 1 + table + 1,
        "recip": params.softmax.prob_frac + 5,       # load, quotient bits, rounding
        "requant": PRODUCT_STAGES + SHIFT_STAGES + 1,  # run-time product, rounding shift, saturation
    }


def _softmax_row(lat: dict, n: int) -> int:
    """Cycles from the softmax unit's ``start`` to its ``done`` (``SoftmaxUnit.row_cycles``)."""
    return n + lat["score_read"] + lat["exp"] + lat["recip"]


def _to_softmax(lat: dict) -> int:
    """Cycles from the last ``QK(i)`` issue to the first cycle the softmax of row ``i`` may start."""
    return lat["front"] + 1 + lat["dot"]


def _drain(lat: dict, lanes: int) -> int:
    """Cycles from the frame's last issue to its last output beat: front, MAC array, the serial
    requantizer (``lanes`` values, its pipeline), the output FIFO."""
    return lat["front"] + lat["vec"] + lanes + lat["requant"] + 2


@dataclass(frozen=True)
class FrameSchedule:
    """Cycle numbers of one frame (header transfer = 0)."""

    n_tokens: int
    compute_start: int     # first QK(0) operation
    pv0_start: int         # first PV(0) operation
    last_pv_start: int     # first PV(N-1) operation
    last_issue: int        # last operation of the frame
    next_header: int       # earliest header of the next frame on the same core
    last_output: int       # transfer of the last output beat: the frame's latency in cycles
    closed_form: bool      # True when the closed form applies


def _params(params, kwargs) -> AttentionParams:
    if params is not None:
        if kwargs:
            raise TypeError("give either params or parameter keywords, not both")
        if not isinstance(params, AttentionParams):
            raise TypeError(f"params must be an AttentionParams, not {type(params).__name__}")
        return params
    return AttentionParams(**kwargs)


def _check_n(n_tokens, p: AttentionParams) -> int:
    check_int("n_tokens", n_tokens, numpy=False)
    if not 1 <= n_tokens <= p.n_max:
        raise ValueError(f"n_tokens must be between 1 and n_max {p.n_max}, not {n_tokens}")
    return n_tokens


def frame_schedule(params: AttentionParams | None = None, *, n_tokens: int, **kwargs) -> FrameSchedule:
    """The stall-free schedule of one frame, by the engine's dependency rules (row by row)."""
    p = _params(params, kwargs)
    n = _check_n(n_tokens, p)
    lat = latencies(p)
    c, lanes = p.chunks, p.lanes
    chunk_len = max(n, lanes)
    t_qk, t_pv = n * c, c * chunk_len
    t_done = _softmax_row(lat, n)                     # softmax start -> ``done`` visible
    to_softmax = _to_softmax(lat)                     # last QK op -> softmax may start (+ 1)
    x0 = 3 * n * c + 1

    a = [0] * n                                       # QK(i) start
    b = [0] * n                                       # PV(i) start
    sm_free = 0                                       # when the softmax unit can take the next row
    ready = [0] * n                                   # when PV(i) may issue
    a[0] = x0
    for i in range(n):
        if i == 1:
            a[1] = a[0] + t_qk
        elif i >= 2:
            a[i] = b[i - 2] + t_pv
        start = max(a[i] + t_qk - 1 + to_softmax, sm_free)
        sm_free = start + t_done
        ready[i] = start + t_done + 1
        if i >= 1:
            b[i - 1] = max(a[i] + t_qk, ready[i - 1])  # PV(i-1) follows QK(i)
    last_prev = b[n - 2] + t_pv if n >= 2 else a[0] + t_qk
    b[n - 1] = max(last_prev, ready[n - 1])
    last_issue = b[n - 1] + (c - 1) * chunk_len + n - 1
    last_output = last_issue + _drain(lat, lanes)
    g = to_softmax + t_done
    closed = n >= 3 and g <= t_qk + t_pv
    return FrameSchedule(n_tokens=n, compute_start=x0, pv0_start=b[0], last_pv_start=b[n - 1],
                         last_issue=last_issue, next_header=b[n - 1] + t_pv, last_output=last_output,
                         closed_form=closed)


def _closed_form(p: AttentionParams, n: int) -> int | None:
    lat = latencies(p)
    c, lanes = p.chunks, p.lanes
    chunk_len = max(n, lanes)
    t_qk, t_pv = n * c, c * chunk_len
    w = t_qk + t_pv
    t_sm = _softmax_row(lat, n)
    g = _to_softmax(lat) + t_sm
    if n < 3 or g > w:
        return None
    x0 = 3 * n * c + 1
    b0 = x0 + 2 * t_qk + max(0, g - t_qk)
    b_last = b0 + (n - 2) * w + max(t_pv, g)
    return b_last + (c - 1) * chunk_len + n - 1 + _drain(lat, lanes)


def frame_interval(params: AttentionParams | None = None, *, n_tokens: int, **kwargs) -> int:
    """Cycles between the headers of back-to-back frames on one core: the next header is taken the cycle
    after ``PV(N-1)`` ends (its last chunk padded to ``lanes`` cycles when ``N < lanes``), while the
    previous frame's outputs drain."""
    p = _params(params, kwargs)
    return frame_schedule(p, n_tokens=n_tokens).next_header


def cycles(params: AttentionParams | None = None, *, n_tokens, heads: int = 1, **kwargs) -> int:
    """Cycles from the first header's transfer to the last output beat's, for frames sent back to back
    (input always valid, outputs always ready).

    ``n_tokens`` is one count (``heads`` frames of it) or a sequence of counts, one per frame. Frames go
    round-robin to the ``heads_parallel`` cores; the shared input stream takes a frame's ``1 + 3 N C``
    beats at a time, and a core takes its next header :func:`frame_interval` cycles after its previous
    one; each frame then has the latency of one frame alone. For ``heads`` frames of equal ``N`` this is
    ``max(f b, (f // P) I + (f % P) b) + latency`` with ``f = heads - 1``, ``b = 1 + 3 N C``,
    ``I`` the interval and ``P = heads_parallel``. Parameters are an :class:`AttentionParams` or its
    keywords::

        cycles(n_max=197, head_dim=64, lanes=16, n_tokens=197)
    """
    p = _params(params, kwargs)
    check_int("heads", heads, low=1, numpy=False)
    if isinstance(n_tokens, (list, tuple)):
        if heads != 1:
            raise ValueError("give heads only with a single n_tokens, not with a sequence")
        if not n_tokens:
            raise ValueError("n_tokens must not be an empty sequence")
        counts = [_check_n(n, p) for n in n_tokens]
    else:
        counts = [_check_n(n_tokens, p)] * heads
    cache: dict[int, tuple[int, int]] = {}
    input_free, end = 0, 0
    core_free = [0] * p.heads_parallel
    for f, n in enumerate(counts):
        if n not in cache:
            closed = _closed_form(p, n)
            sched = frame_schedule(p, n_tokens=n)
            cache[n] = (closed if closed is not None else sched.last_output, sched.next_header)
        latency, interval = cache[n]
        core = f % p.heads_parallel
        header = max(input_free, core_free[core])
        input_free = header + 1 + 3 * n * p.chunks
        core_free[core] = header + interval
        end = max(end, header + latency)
    return end


def mac_utilization(params: AttentionParams | None = None, *, n_tokens: int, heads: int = 1, **kwargs) -> float:
    """Useful MACs over ``lanes x heads_parallel x cycles``."""
    p = _params(params, kwargs)
    total = cycles(p, n_tokens=n_tokens, heads=heads)
    return heads * macs(n_tokens, p.head_dim) / (p.lanes * p.heads_parallel * total)
