"""Cost of the token mean (:class:`tokensift.hw.vector.token_mean.TokenMean`), next to its generator.

Cycles: :func:`tokensift.hw.vector.token_mean.cycles` and :func:`~tokensift.hw.vector.token_mean.burst_cycles`.
Resources, by the rules of :mod:`tokensift.hw.common.resources` (exact for DSP and block RAM):

* No DSP (the divider is a chain of compare-and-subtract stages).
* Memories (:func:`map_memory`): the two sum banks, each ``ceil(c_max / lanes)`` words of ``lanes *
  sum_bits``, read synchronously (with a read enable).
* LUT and FF (the accumulation pipeline and its forwarding, the ``lanes * (bits + 1)`` divider stages, the
  command decode and counters): the fitted linear model over :func:`features`.

>>> p = TokenMeanParams(lanes=16, n_max=197, c_max=192)  # banks of 12 words of 16 x 16-bit sums: LUT RAM
>>> exact(p, "xcup").dsp, memories(p, "xcup")["bank0"].kind, memories(p, "xcup")["bank0"].width
(0, 'distributed', 256)
"""

from __future__ import annotations

from tokensift.hw.common.resources import MemoryMap, Resources, check_family, fitted, map_memory
from tokensift.hw.vector.token_mean import FIELD_BITS, TokenMeanParams

__all__ = ["BLOCK", "TokenMeanParams", "memories", "features", "exact", "resources", "build", "params_to_dict",
           "params_from_dict"]

BLOCK = "token_mean"


def _check(params) -> TokenMeanParams:
    if not isinstance(params, TokenMeanParams):
        raise TypeError(f"params must be TokenMeanParams, not {type(params).__name__}")
    return params


def memories(params: TokenMeanParams, family: str) -> dict[str, MemoryMap]:
    """The two sum banks, by name."""
    p = _check(params)
    bank = map_memory(p.lanes * p.sum_bits, p.chunks_max, family=family)
    return {"bank0": bank, "bank1": bank}


def features(params: TokenMeanParams, family: str) -> dict[str, float]:
    """Structural sizes the LUT/FF fit is linear in: ``sum_bits`` (``lanes * sum_bits``: the adders, the
    forwarding multiplexers and the accumulation stages' registers), ``divider_bits`` (``lanes * (bits + 1) *
    (sum_bits + 1)``: the divider's compare-and-subtract stages), ``code_bits`` (``lanes * bits``: the input
    masking and offset, the output rounding), ``divisor_bits`` (``(bits + 1) * FIELD_BITS``: N travelling
    with the divider) and ``addr_bits`` (the chunk counters and address compares)."""
    p = _check(params)
    check_family(family)
    return {"sum_bits": float(p.lanes * p.sum_bits),
            "divider_bits": float(p.lanes * (p.bits + 1) * (p.sum_bits + 1)),
            "code_bits": float(p.lanes * p.bits),
            "divisor_bits": float((p.bits + 1) * FIELD_BITS),
            "addr_bits": float(max(1, (p.chunks_max - 1).bit_length()))}


def exact(params: TokenMeanParams, family: str) -> Resources:
    """Block RAM, and the LUT RAM and soft logic of the memories."""
    p = _check(params)
    total = Resources()
    for mem in memories(p, family).values():
        total = total + mem.resources
    return total


def resources(params: TokenMeanParams, family: str) -> Resources:
    p = _check(params)
    lut, ff = fitted(BLOCK, family, features(p, family))
    return exact(p, family) + Resources(lut=lut, ff=ff)


def build(params: TokenMeanParams):
    from tokensift.hw.vector.token_mean import TokenMean

    return TokenMean(params=_check(params))


def params_to_dict(params: TokenMeanParams) -> dict:
    p = _check(params)
    return {"lanes": p.lanes, "bits": p.bits, "n_max": p.n_max, "c_max": p.c_max}


def params_from_dict(d: dict) -> TokenMeanParams:
    return TokenMeanParams(**dict(d))
