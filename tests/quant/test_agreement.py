"""The integer-vs-float decision agreement measure on hand-made decisions."""

import numpy as np
import pytest

from tokensift.quant.stages import StageRecord
from tokensift.quant.stages.agreement import decision_agreement


def record(stage, index, keep):
    return StageRecord(stage, stage + 1, np.array(index), np.array(keep, dtype=bool), np.zeros(len(index)), 1)


def test_counts_common_patch_tokens_per_stage():
    ints = [[record(0, [0, 1, 2, 3], [1, 1, 0, 1]), record(1, [0, -1, 1, 3], [1, 1, 0, 1])]]
    floats = [{0: (np.array([0, 1, 2, 3]), np.array([1, 1, 1, 1], bool)),
               1: (np.array([0, 1, 2, -1]), np.array([1, 0, 1, 1], bool)),
               2: (np.array([0, 2]), np.array([1, 1], bool))}]  # a float-only stage is not compared
    a = decision_agreement(ints, floats)
    # stage 0: tokens 1, 2, 3 -> 2 agree; stage 1: tokens 1 (3 is integer-only, 2 float-only) -> 1 agrees
    assert a["per_stage"] == {0: (2, 3), 1: (1, 1)}
    assert a["fraction"] == 3 / 4
    assert a["kept"] == {0: (3, 2), 1: (1, 1)}


def test_empty_and_mismatched():
    assert decision_agreement([[]], [{}])["fraction"] is None
    with pytest.raises(ValueError, match=r"^the integer model ran stages \[0\], the float model only \[\]$"):
        decision_agreement([[record(0, [0, 1], [1, 1])]], [{}])
