"""Verilator: the cycles the cost model adds up equal the simulated ones.

For the configurations the blocks' own simulation tests run, the cycles of ``tokensift estimate --block``
(the numbers the whole-model estimate sums) are compared with ``tokensift simulate`` (Verilator), and
the requantizer's cycle count with a stall-free stream.
"""

import json

import pytest

from tokensift.cli import main
from tokensift.hw.common.requant_resources import RequantParams
from tokensift.hw.common.requant_resources import cycles as requant_cycles
from tokensift.quant.fixed import INT8
from tokensift.sim.runner import run_cocotb

pytestmark = pytest.mark.sim

#: tests/sim/test_selector_sim.py's configurations (n_max, dim, lanes, score_bits, feature_bits, package)
SELECTOR_CONFIGS = {
    "beat3-pkg": (13, 12, 4, 10, 6, True),
    "lane1-wide": (20, 4, 1, 16, 12, False),
}
#: (tokens, rule, value): top-k keeps ``value`` patch tokens, threshold keeps scores above ``value``
SELECTOR_FRAMES = [(11, "keep", 4), (13, "threshold", 600), (7, "keep", 6)]


def _cli_json(capsys, argv) -> dict:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("name", list(SELECTOR_CONFIGS))
@pytest.mark.parametrize("frame", SELECTOR_FRAMES, ids=lambda f: f"{f[1]}{f[2]}-n{f[0]}")
def test_selector_estimate_cycles_equal_verilator(name, frame, capsys):
    n_max, dim, lanes, sb, fb, package = SELECTOR_CONFIGS[name]
    tokens, rule, value = frame
    if tokens > n_max:
        pytest.skip("frame larger than this configuration")
    common = ["--n-max", str(n_max), "--dim", str(dim), "--lanes", str(lanes)]
    hw = [*common, "--score-bits", str(sb), "--feature-bits", str(fb)] + (["--package"] if package else [])
    sim = _cli_json(capsys, ["simulate", "selector", *hw, "--tokens", str(tokens), f"--{rule}", str(value),
                             "--seed", "5", "--json"])
    assert sim["bit_exact"] is True
    est = _cli_json(capsys, ["estimate", "--block", "selector", *common, "--n-tokens", str(tokens),
                             "--kept", str(sim["kept"]), "--mode", "topk" if rule == "keep" else "threshold",
                             "--family", "xcup", "--score-bits", str(sb), "--feature-bits", str(fb), "--json"]
                    + (["--package"] if package else []))
    assert est["cycles"] == sim["cycles"]


@pytest.mark.parametrize("count", [1, 37, 500])
def test_requant_cycles_equal_verilator(count):
    p = RequantParams(acc_bits=24, out=INT8, multiplier=12345, shift=20)
    res = run_cocotb(p.component(), toplevel="requant_cycles", test_module="tokensift.sim.tb_requant_cycles",
                     params={"count": count})
    assert res.report["outputs"] == count
    assert res.report["cycles"] == requant_cycles(p, n_values=count)


#: tests/sim/test_attention_sim.py's configurations, as CLI arguments, with (tokens, heads) frames
ATTENTION_CONFIGS = {
    "lut-c2": (["--n-max", "8", "--head-dim", "8", "--lanes", "4"], [(8, 1), (3, 2)]),
    "poly-c1-x2": (["--n-max", "10", "--head-dim", "8", "--lanes", "8", "--softmax", "exp2_poly",
                    "--heads-parallel", "2"], [(10, 3), (1, 1)]),
}


@pytest.mark.parametrize("name", list(ATTENTION_CONFIGS))
def test_attention_estimate_cycles_equal_verilator(name, capsys):
    args, frames = ATTENTION_CONFIGS[name]
    for tokens, heads in frames:
        sim = _cli_json(capsys, ["simulate", "attention", *args, "--tokens", str(tokens), "--heads", str(heads),
                                 "--seed", "2", "--json"])
        assert sim["bit_exact"] is True
        est = _cli_json(capsys, ["estimate", "--block", "attention", *args, "--n-tokens", str(tokens),
                                 "--heads", str(heads), "--family", "xc7", "--json"])
        assert est["cycles"] == sim["cycles"], (tokens, heads)
