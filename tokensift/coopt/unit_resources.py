"""Resources of the accelerator's units: the validated model, or its hard-block part while it is incomplete.

:meth:`tokensift.hw.layer_cost.ModelCost.units` is the source of truth. It needs every unit's resource
model (``tokensift.hw.attention_resources``) and the fitted LUT/FF coefficients
(``tokensift/data/lut_ff_fit.json``, written by ``bench/fit_cost_model.py``). When one of them is missing
in this checkout, :func:`unit_resources` falls back to the **hard blocks only**: DSPs and block RAM by the
same primitive rules (:func:`tokensift.hw.resources.multiplier_dsps`, :func:`~tokensift.hw.resources.map_memory`
and the blocks' ``exact`` functions), with LUT and FF left out (reported as not estimated, and left out of
the fit check). For the attention unit the fallback counts the structure of
:class:`tokensift.hw.attention_engine.AttentionEngine` per core: the MAC array, the Q and K/V row buffers,
the softmax unit (its scale multiplier, the exponent ROM or the two polynomial multipliers, the score and
exponential buffers, the normalizer's multiplier) and the output requantizer, plus the front end's beat
counter (a constant multiplication); the exponent ROM and the output FIFOs (read asynchronously) stay in
LUTs. Checked against Yosys (``tests/tokensift/test_coopt.py``, marker ``synth``).
"""

from __future__ import annotations

from tokensift.hw.resources import Resources, map_memory, multiplier_dsps

__all__ = ["unit_resources", "attention_hard_blocks", "HARD_BLOCKS_ONLY", "FULL_MODEL"]

FULL_MODEL = "full"
HARD_BLOCKS_ONLY = "hard-blocks-only"


def _hard(r: Resources) -> Resources:
    """Only the hard blocks of ``r`` (DSP, block RAM, URAM, EBR)."""
    return Resources(dsp=r.dsp, bram18=r.bram18, bram36=r.bram36, uram=r.uram, ebr=r.ebr)


def _memory(width: int, depth: int, family: str, sync_read: bool = True) -> Resources:
    return _hard(map_memory(width, depth, family=family, sync_read=sync_read).resources)


def attention_hard_blocks(params, family: str) -> Resources:
    """DSPs and block RAM of the attention unit of :class:`~tokensift.quant.attention.AttentionParams`."""
    from tokensift.hw.mac_array_resources import MacArrayParams
    from tokensift.hw.mac_array_resources import exact as mac_exact
    from tokensift.hw.requant_resources import RequantParams
    from tokensift.hw.requant_resources import exact as requant_exact
    from tokensift.quant.softmax import SoftmaxVariant

    p = params
    sm = p.softmax
    n, c, lanes = p.n_max, p.chunks, p.lanes
    core = mac_exact(MacArrayParams(lanes=lanes, a_bits=max(p.data_bits, sm.prob_frac + 2), b_bits=p.data_bits,
                                    dot_bits=2 * p.data_bits, acc_bits=p.acc_bits, tag_bits=1), family)
    core += _memory(lanes * p.data_bits, n * c, family)          # Q rows
    core += _memory(lanes * p.data_bits, 2 * n * c, family)      # K and V rows
    # softmax: diff * M (diff is score_bits + 1 signed, M a constant), exponent table or polynomial
    core += Resources(dsp=multiplier_dsps(p.score_bits + 1, p.scale_multiplier.bit_length() + 1, family=family))
    if sm.variant is not SoftmaxVariant.EXP2_LUT:  # (the exponent table is a ROM: Yosys keeps it in LUTs)
        a, b = sm.poly_coefficients
        core += Resources(dsp=multiplier_dsps(sm.log2_frac, b.bit_length(), family=family, signed=False))
        core += Resources(dsp=multiplier_dsps(sm.log2_frac, sm.exp_frac + 2, family=family, signed=False))
    core += _memory(p.score_bits, 2 * n, family)                 # scores, two banks
    core += _memory(sm.exp_frac + 1, 2 * n, family)              # exponentials, two banks
    core += Resources(dsp=multiplier_dsps(sm.exp_frac + 1, sm.prob_frac + 2, family=family, signed=False))
    core += requant_exact(RequantParams(acc_bits=p.acc_bits, out=p.data_format, multiplier=p.out_multiplier,
                                        shift=p.out_shift), family)
    # the front end counts a frame's beats: header * (3 chunks), a constant multiplication
    from tokensift.hw.attention_layout import HEADER_BITS

    beats = 3 * c
    remaining_bits = (3 * ((1 << HEADER_BITS) - 1) * c).bit_length()
    front = 0 if beats & (beats - 1) == 0 else multiplier_dsps(HEADER_BITS, beats.bit_length(), family=family,
                                                               signed=False, y_bits=remaining_bits)
    return core * p.heads_parallel + Resources(dsp=front)


def unit_resources(cost, family: str) -> tuple[dict[str, Resources], str]:
    """(resources of each unit of ``cost`` (a ModelCost) on ``family``, which model gave them)."""
    try:
        return cost.units(family), FULL_MODEL
    except ModuleNotFoundError as exc:
        if exc.name != "tokensift.hw.attention_resources":
            raise
    except LookupError:  # no fitted LUT/FF coefficients in this checkout
        pass
    from tokensift.hw.linear_cost import REQUANT_MULTIPLIER, REQUANT_SHIFT
    from tokensift.hw.mac_array_resources import exact as mac_exact
    from tokensift.hw.requant_resources import RequantParams
    from tokensift.hw.requant_resources import exact as requant_exact
    from tokensift.hw.selector_resources import exact as selector_exact
    from tokensift.quant.fixed import INT8

    lp = cost.linear
    linear = (mac_exact(lp.mac_array, family) + _memory(lp.lanes * lp.data_bits, -(-lp.in_max // lp.lanes), family)
              + requant_exact(RequantParams(acc_bits=lp.acc_bits, out=INT8, multiplier=REQUANT_MULTIPLIER,
                                            shift=REQUANT_SHIFT), family))
    out = {"attention": attention_hard_blocks(cost.attention, family), "linear": _hard(linear)}
    if cost.selector is not None:
        out["selector"] = _hard(selector_exact(cost.selector, family))
    return out, HARD_BLOCKS_ONLY
