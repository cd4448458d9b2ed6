"""cocotb testbenches that run *real* frames -- a trained integer model's Q/K/V and token scores -- through
the attention core (:class:`tokensift.sim.attention_harness.AttentionHarness`, bulk mode) and the token
selector (:class:`tokensift.hw.selector.core.Selector`), checked bit for bit against :mod:`tokensift.quant`.

Parameters (``tb_params()``): ``params`` (the block's parameters as a dict) and ``frames_file``, an ``.npz``
written by :mod:`tokensift.sim.real_images`:

* ``attention_frames``: arrays ``q``, ``k``, ``v`` of shape (images, heads, N, head_dim); each image's
  heads go back to back as one bulk run; the report holds each run's mismatches, measured cycles and the
  cycle model's.
* ``combiner_steps`` / ``selector_steps``: a selection step (EViT's in the demo; every method's from
  :func:`tokensift.sim.real_images.capture_stage`), per image ``i``: ``values_i``, ``head_weights_i``,
  ``keys_i`` (the score combiner) and ``scores_i``, ``features_i``, ``weights_i`` (the selector's frame);
  the command in the ``step`` parameter. Frames go back to back; the report holds each frame's period next
  to the cycle formula.
"""

from __future__ import annotations

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, FallingEdge

from tokensift.sim.runner import tb_params, tb_report


def _load():
    t = tb_params()
    with np.load(t["frames_file"]) as f:
        data = {k: f[k] for k in f.files}
    return t, data


@cocotb.test()
async def attention_frames(dut):
    from tokensift.hw.attention.constants import encode_constants
    from tokensift.hw.attention.cycles import cycles as expected_cycles
    from tokensift.hw.attention.layout import encode_frame
    from tokensift.quant.attention import AttentionParams
    from tokensift.sim.tb_attention import Scoreboard, bulk_run

    t, data = _load()
    p = AttentionParams.from_dict(t["params"])
    for name in ("clk_sel", "bulk", "start", "k_beats", "in_beats", "o_expected", "s_expected", "k_stream__valid",
                 "i_stream__valid", "o_stream__ready", "s_stream__ready"):
        getattr(dut, name).value = 0
    dut.clk_sel.value = 1  # the harness's Verilog clock generator, as tokensift.sim.tb_attention's bulk test
    dut.rst.value = 1
    await ClockCycles(dut.gen_clk, 2)
    await FallingEdge(dut.gen_clk)
    dut.rst.value = 0
    q, k, v = data["q"], data["k"], data["v"]
    runs, core = [], 0
    for img in range(q.shape[0]):
        sb = Scoreboard(p, first_core=core)
        frames = []
        for h in range(q.shape[1]):
            sb.add(q[img, h], k[img, h], v[img, h])
            frames.append(encode_frame(q[img, h], k[img, h], v[img, h], p))
        dut.o_expected.value = sb.o_beats
        dut.s_expected.value = sb.s_beats
        ns = [int(q.shape[2])] * q.shape[1]
        expected = expected_cycles(p, n_tokens=ns)
        # every head of the block carries the block's constants (the integer model's own)
        r = await bulk_run(dut, p, frames, [encode_constants(p)] * len(frames), timeout_cycles=4 * expected + 1000)
        check = sb.check(r["o_words"], r["s_words"])
        core = sb.next_core
        runs.append({"image": img, "frames": len(frames), "tokens": ns[0], **check, "cycles": r["cycles"],
                     "expected_cycles": expected, "overflows_ref": sb.counter.total})
        tb_report(runs=runs)
    bad = [r for r in runs if r["o_mismatches"] or r["s_mismatches"] or r["flag_mismatches"]]
    assert not bad, f"attention outputs differ from quant.attention_head: {bad}"


def _step_arrays(data: dict, i: int, name: str):
    return data.get(f"{name}_{i}")


@cocotb.test()
async def combiner_steps(dut):
    """Each image's combiner input (``values_i`` (H, N), ``head_weights_i`` (H,) or (H, N)) back to back, no
    stalls; every score against the step's keys (``keys_i``, what the integer model ranked) and every
    frame's period against :func:`tokensift.hw.score_combiner.core.combiner_cycles`."""
    from tokensift.hw.score_combiner.core import HEAD_FIELD_BITS, combiner_cycles
    from tokensift.quant.select import FIELD_BITS
    from tokensift.sim.streams import StreamSink, StreamSource, reset, start_clock
    from tokensift.sim.tb_score_combiner import _accepts, _pack, _row_beats, combiner_params

    t, data = _load()
    p = combiner_params(t)
    start_clock(dut)
    cmd = StreamSource(dut, "i_cmd", idle=0.0, seed=0)
    wgt = StreamSource(dut, "i_weight", idle=0.0, seed=1)
    attn = StreamSource(dut, "i_attn", idle=0.0, seed=2)
    sink = StreamSink(dut, "o_score", stall=0.0, seed=3, signed=False)
    await reset(dut)
    log: list[int] = []
    cocotb.start_soon(_accepts(dut, log))
    expected, sizes = [], []
    zero = lambda k: np.zeros(k, np.int64)  # noqa: E731
    for i in range(t["images"]):
        values, weights = _step_arrays(data, i, "values"), _step_arrays(data, i, "head_weights")
        h, n = values.shape
        per_token = weights.ndim == 2
        if per_token:
            w_beats = [b for row in weights for b in _row_beats(row, p.lanes, p.importance_bits, zero)]
        elif p.per_token_weights:
            w_beats = [_pack([w] + [0] * (p.lanes - 1), p.importance_bits) for w in weights]
        else:
            w_beats = [int(w) for w in weights]
        cmd.send([n | (h << FIELD_BITS) | (int(per_token) << (FIELD_BITS + HEAD_FIELD_BITS))])
        wgt.send(w_beats)
        attn.send([b for row in values for b in _row_beats(row, p.lanes, p.attn_bits, zero)])
        expected += _step_arrays(data, i, "keys").tolist()
        sizes.append((n, h, per_token))
    got = await sink.wait_for(len(expected))
    await ClockCycles(dut.clk, 8)
    mismatches = int(np.count_nonzero(np.asarray(got) != np.asarray(expected)))
    measured = [b - a for a, b in zip(log, log[1:], strict=False)]
    want = [combiner_cycles(p, n_tokens=n, heads=h, per_token=pt) for n, h, pt in sizes[:len(measured)]]
    tb_report(mismatches=mismatches, scores=len(got), cycles=measured, expected_cycles=want)
    assert mismatches == 0, f"{mismatches} scores differ from the integer model's"


@cocotb.test()
async def selector_steps(dut):
    """Each image's selector step (``scores_i``, ``features_i``, ``weights_i``; the command in
    ``step``) back to back; outputs against :func:`tokensift.quant.select.select_frame` (which
    :func:`tokensift.sim.real_images.check_stage_reference` ties to the integer model), periods against
    :func:`tokensift.hw.selector.core.cycles`."""
    from tokensift.quant.select import Mode, SelectorParams
    from tokensift.sim.streams import reset, start_clock
    from tokensift.sim.tb_selector import Harness, expected_cycles, make_frame

    t, data = _load()
    p = SelectorParams(**t["params"])
    step = t["step"]
    mode = {"topk": Mode.TOPK, "threshold": Mode.THRESHOLD, "mass": Mode.MASS}[step["mode"]]
    rng = np.random.default_rng(0)  # unused: every frame carries its own data
    frames = [make_frame(p, rng, n=int(_step_arrays(data, i, "scores").shape[0]), mode=mode, k=int(step["k"][i]),
                         t=int(step["threshold"]), mass=int(step["mass"]), package=step["package"] is not None,
                         rule=step["package"] or "mean", scores=_step_arrays(data, i, "scores"),
                         features=_step_arrays(data, i, "features"), weights=_step_arrays(data, i, "weights"))
              for i in range(t["images"])]
    start_clock(dut)
    h = Harness(dut, p, seed=0)
    await reset(dut)
    h.send(frames)
    error = None
    try:
        await h.check(frames)
    except AssertionError as exc:
        error = str(exc)
    await ClockCycles(dut.clk, 4)
    measured = h.periods(len(frames)) if error is None else []
    tb_report(error=error, cycles=measured, expected_cycles=[expected_cycles(p, f) for f in frames],
              kept=[int(f["ref"].n_kept) for f in frames])
    assert error is None, error
