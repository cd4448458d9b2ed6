"""The resource and latency model: stored synthesis baselines, primitive rules, devices, latency, errors.

Fast: nothing here runs Yosys or Verilator (tests/hw/test_synth.py and tests/sim/test_cost_cycles_sim.py do).
"""

import importlib.util
import json
import math
import re
from pathlib import Path

import pytest
import torch

from tokensift.devices import UnknownDeviceError, get_device, list_devices
from tokensift.hw.common import resources as R
from tokensift.hw.common.requant_resources import RequantParams
from tokensift.hw.common.requant_resources import cycles as requant_cycles
from tokensift.hw.common.resources import Resources, map_memory, multiplier_dsps
from tokensift.hw.cost.latency import LatencyBudget, latency_ms
from tokensift.hw.cost.layer import HwConfig, ModelCost, ModelDesc
from tokensift.hw.cost.linear import (
    DEFAULT_WEIGHT_LATENCY,
    LinearParams,
    device_weight_rate,
    linear_cycles,
)
from tokensift.hw.cost.registry import BLOCKS, FITTED_BLOCKS, block_cost
from tokensift.hw.cost.synth import SynthesisError, parse_stat
from tokensift.hw.cost.validation import BASELINE_DIR, compare, load_baselines
from tokensift.quant.fixed import INT8

ROOT = Path(__file__).resolve().parents[2]


def _bench(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# -- baselines -------------------------------------------------------------------------------------------
def _entries(blocks):
    out = []
    for block in blocks:
        data = load_baselines(block)
        # a missing file yields one entry that fails, rather than no test at all
        out += [(block, e) for e in data["entries"]] if data else [(block, {"name": "missing", "family": "-"})]
    return out


BASELINE_BLOCKS = [b for b in BLOCKS if (BASELINE_DIR / f"{b}.json").exists()]


def test_every_block_with_a_cost_model_has_baselines_for_three_families():
    for block in ["memory", "multiplier", "requant", "selector", "mac_array", "attention", "score_combiner",
                  "layernorm", "gelu", "residual", "token_mean"]:
        data = load_baselines(block)
        assert data is not None, block
        assert data["generated_by"] == "bench/synth_baselines.py"
        assert {e["family"] for e in data["entries"]} == {"xcup", "xc7", "ecp5"}, block
        assert data["tolerances"]["dsp"] == {"abs": 0}


def test_baselines_cover_the_generator_grid():
    """The stored entries are exactly the grid of bench/synth_baselines.py (no stale or hand-added ones)."""
    gen = _bench("synth_baselines")
    for block in BASELINE_BLOCKS:
        names = {n for n, _ in gen.grid(block)}
        data = load_baselines(block)
        stored = {(e["name"], e["family"]) for e in data["entries"]}
        assert stored == {(n, f) for n in names for f in gen.families_of(block, n)}, block
        params = dict(gen.grid(block))
        for e in data["entries"]:
            assert e["params"] == block_cost(block).normalize(params[e["name"]]), (block, e["name"])


@pytest.mark.parametrize("block,entry", _entries(["memory"]), ids=lambda v: v if isinstance(v, str) else
                         f"{v['name']}-{v['family']}")
def test_memory_rule_matches_synthesis_exactly(block, entry):
    assert "synth" in entry, f"missing baseline {BASELINE_DIR / (block + '.json')}"
    p, s = entry["params"], entry["synth"]
    m = map_memory(p["width"], p["depth"], family=entry["family"], sync_read=p.get("sync_read", True),
                   rom=p.get("rom", False))
    assert (m.blocks.bram18, m.blocks.bram36, m.blocks.ebr, m.blocks.lut) == (
        s["bram18"], s["bram36"], s["ebr"], s["lutram"])


@pytest.mark.parametrize("block,entry", _entries(["multiplier"]), ids=lambda v: v if isinstance(v, str) else
                         f"{v['name']}-{v['family']}")
def test_multiplier_rule_matches_synthesis_exactly(block, entry):
    assert "synth" in entry, f"missing baseline {BASELINE_DIR / (block + '.json')}"
    p = entry["params"]
    assert multiplier_dsps(p["a_bits"], p["b_bits"], family=entry["family"], signed=p["signed"]) == \
        entry["synth"]["dsp"]


@pytest.mark.parametrize("block", [b for b in FITTED_BLOCKS if b in BASELINE_BLOCKS])
def test_block_models_within_tolerance(block):
    rows = compare([block])
    assert rows, block
    bad = [f"{r.name}/{r.family}/{r.metric}: model {r.model:.0f} synth {r.synth:.0f}" for r in rows if not r.ok]
    assert not bad, "; ".join(bad)
    # DSP and block RAM exactly, per configuration
    for r in rows:
        if r.metric in ("dsp", "bram18", "bram36", "ebr"):
            assert r.model == r.synth, (r.name, r.family, r.metric)


def test_lut_ff_fit_is_the_scripts_output():
    """The coefficients in tokensift/data/lut_ff_fit.json are what bench/fit_cost_model.py fits now."""
    fit = _bench("fit_cost_model")
    fresh = json.loads(json.dumps(fit.fit_all()["blocks"]))
    stored = json.loads((ROOT / "tokensift" / "data" / "lut_ff_fit.json").read_text())["blocks"]

    def close(a, b, path="fit"):
        if isinstance(a, dict):
            assert isinstance(b, dict) and set(a) == set(b), f"{path}: {sorted(set(a) ^ set(b))}"
            for k in a:
                close(a[k], b[k], f"{path}.{k}")
        elif isinstance(a, float) or isinstance(b, float):
            assert a == pytest.approx(b, rel=1e-6, abs=1e-9), path
        else:
            assert a == b, path

    close(stored, fresh)


def test_fit_table_prints_every_stored_fit():
    """bench/bench_cost_model.py's fit table renders every block and family, a fit on one shape (no
    leave-one-out error) included."""
    from rich.console import Console

    table = _bench("bench_cost_model").loo_table()
    console = Console(width=200, record=True)
    console.print(table)
    text = console.export_text()
    stored = json.loads((ROOT / "tokensift" / "data" / "lut_ff_fit.json").read_text())["blocks"]
    assert table.row_count == sum(len(fams) for fams in stored.values())
    assert "accelerator" in text


def test_validation_catches_a_wrong_model(tmp_path):
    data = load_baselines("requant")
    data["entries"][0]["synth"]["dsp"] += 1
    data["entries"][1]["synth"]["lut"] *= 2
    (tmp_path / "requant.json").write_text(json.dumps(data))
    bad = [r for r in compare(["requant"], directory=tmp_path) if not r.ok]
    assert {(r.name, r.metric) for r in bad} == {(data["entries"][0]["name"], "dsp"),
                                                 (data["entries"][1]["name"], "lut")}


# -- primitive rules -------------------------------------------------------------------------------------
def test_multiplier_tiling_by_family():
    assert [multiplier_dsps(27, 18, family=f) for f in ("xcup", "xc7", "ecp5")] == [1, 2, 2]
    assert multiplier_dsps(18, 18, family="ecp5", signed=False) == 1
    assert multiplier_dsps(18, 18, family="xcup", signed=False) == 2  # signed-only: 19 x 19
    assert multiplier_dsps(3, 3, family="xcup") == 0  # 6-bit product stays in LUTs
    assert multiplier_dsps(3, 3, family="ecp5") == 1
    assert multiplier_dsps(1, 16, family="xcup") == 0


def test_memory_aspect_ratios():
    assert map_memory(36, 512, family="xcup").blocks.bram18 == 1
    assert map_memory(72, 512, family="xc7").blocks.bram36 == 1
    assert map_memory(18, 1024, family="ecp5").blocks.ebr == 1
    assert map_memory(36, 1024, family="ecp5").blocks.ebr == 2
    small = map_memory(8, 16, family="xcup", sync_read=False)
    assert small.kind == "distributed" and small.blocks.bram18 == 0


def test_resources_arithmetic_and_errors():
    r = Resources(dsp=2, bram18=3, lut=10.5, ff=4) * 2 + Resources(bram36=1)
    assert (r.dsp, r.bram18, r.bram36, r.bram36_equiv, r.lut) == (4, 6, 1, 4.0, 21.0)
    assert sum([Resources(dsp=1), Resources(dsp=2)]).dsp == 3
    assert r.as_dict("ecp5") == {"dsp": 4, "ebr": 0, "lut": 21, "ff": 8}
    with pytest.raises(TypeError, match=r"^resources scale by a non-negative integer \(copies\), not 1\.5$"):
        Resources() * 1.5
    with pytest.raises(ValueError, match=r"^family must be one of xcup, xc7, ecp5, not 'xc9'$"):
        map_memory(8, 8, family="xc9")
    with pytest.raises(ValueError, match=r"^memory depth must be a positive integer, not 0$"):
        map_memory(8, 0, family="xcup")
    with pytest.raises(ValueError, match=r"^a_bits must be a positive integer, not 0$"):
        multiplier_dsps(0, 8, family="xcup")


def test_missing_fit_is_an_error_not_zero(monkeypatch):
    monkeypatch.setattr(R, "_fit_table", lambda: {"blocks": {}})
    p = RequantParams(acc_bits=32, out=INT8, multiplier=12345, shift=20)
    from tokensift.hw.common.requant_resources import resources

    with pytest.raises(R.MissingFitError, match=r"^no fitted LUT/FF coefficients for block 'requant' on xcup; run "):
        resources(p, "xcup")


def test_parse_stat_maps_cells_per_family():
    xil = {"design": {"num_cells_by_type": {"LUT2": 3, "LUT6": 2, "INV": 1, "FDRE": 5, "FDSE": 1, "DSP48E2": 2,
                                            "RAMB18E2": 1, "RAMB36E2": 2, "RAM64M8": 1, "CARRY8": 1, "$scopeinfo": 4}}}
    r = parse_stat(xil, "xcup")
    assert (r["lut"], r["lut_logic"], r["lutram"], r["ff"], r["dsp"], r["bram18"], r["bram36"]) == (14, 6, 8, 6, 2, 1, 2)
    ecp = {"design": {"num_cells_by_type": {"LUT4": 10, "CCU2C": 2, "TRELLIS_FF": 7, "MULT18X18D": 3,
                                            "DP16KD": 1, "PDPW16KD": 1, "TRELLIS_DPR16X4": 1}}}
    r = parse_stat(ecp, "ecp5")
    assert (r["lut"], r["ff"], r["dsp"], r["ebr"]) == (10 + 4 + 6, 7, 3, 2)
    with pytest.raises(SynthesisError, match=r"^the netlist still holds generic cells \$mul; synthesis did not finish$"):
        parse_stat({"design": {"num_cells_by_type": {"$mul": 1}}}, "xc7")


# -- devices ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,canonical", [("zcu102", "ZCU102"), ("ZCU104", "ZCU104"), ("kv260", "KV260"),
                                            ("pynq-z2", "PYNQ-Z2"), ("PYNQ_Z2", "PYNQ-Z2"),
                                            ("alveo-u250", "Alveo-U250"), ("u250", "Alveo-U250"),
                                            ("ecp5-85f", "ECP5-85F"), ("Ecp5 85F", "ECP5-85F")])
def test_device_lookup_is_case_insensitive(name, canonical):
    assert get_device(name).name == canonical


def test_device_table():
    assert list_devices() == ["ZCU102", "ZCU104", "KV260", "PYNQ-Z2", "Alveo-U250", "ECP5-85F"]
    for name in list_devices():
        d = get_device(name)
        assert d.family in R.FAMILIES and d.dsp > 0 and d.lut > 0 and d.ff > 0 and d.clock_mhz > 0
        assert (d.ebr > 0) == (d.family == "ecp5") and (d.bram36 > 0) == (d.family != "ecp5")
    z = get_device("zcu102")
    assert (z.dsp, z.bram36, z.lut) == (2520, 912, 274080)
    assert get_device("pynq-z2").family == "xc7"


def test_device_dram_bandwidth_has_a_source():
    for name in list_devices():
        d = get_device(name)
        assert 0 < d.dram_efficiency <= 1 and d.dram_peak_gbps > 0 and len(d.dram_source) > 20
        assert d.dram_gbps == pytest.approx(d.dram_peak_gbps * d.dram_efficiency)
        assert d.as_dict()["dram_gbps"] == d.dram_gbps
    # 64-bit DDR4 at 2400 MT/s = 19.2 GB/s peak; PYNQ-Z2's 16-bit DDR3 at 1050 Mb/s = 2.1 GB/s
    assert get_device("zcu102").dram_peak_gbps == 19.2 and get_device("pynq-z2").dram_peak_gbps == 2.1
    assert get_device("pynq-z2").dram_bytes_per_cycle(100) == pytest.approx(2.1 * 0.75 * 10)
    with pytest.raises(ValueError, match=r"^clock_mhz must be positive, not 0$"):
        get_device("zcu102").dram_bytes_per_cycle(0)


def test_unknown_device_lists_the_known_ones():
    with pytest.raises(UnknownDeviceError, match=r"^unknown device 'zcu111'; choose one of ZCU102, ZCU104, KV260, "
                                                 r"PYNQ-Z2, Alveo-U250, ECP5-85F$"):
        get_device("zcu111")
    with pytest.raises(TypeError, match=r"^device must be a name \(string\), not int$"):
        get_device(102)


# -- cycles: the linear engine, requantizer ----------------------------------------------------------------
def test_linear_cycles_are_the_gemm_engines():
    from tokensift.hw.gemm.cycles import cycles

    p = LinearParams(rows=8, cols=128, max_tokens=197, in_max=1536, out_max=1536, weight_rate=16)
    assert (p.macs, p.weight_bytes, p.gemm.weight_bytes) == (1024, 16, 16)
    want = cycles(p.gemm, 197, 384, 1152, weight_bytes_per_cycle=16, weight_latency=DEFAULT_WEIGHT_LATENCY)
    assert linear_cycles(p, n_tokens=197, in_features=384, out_features=1152) == want
    # the array's peak is rows x cols MACs per cycle: no layer beats it, and a large one comes within 6%
    assert 197 * 384 * 1152 / 1024 < want < 1.06 * 197 * 384 * 1152 / 1024
    # fewer tokens: fewer token tiles (8 rows each), the same weight loads
    assert linear_cycles(p, n_tokens=68, in_features=384, out_features=1152) < 0.4 * want
    assert linear_cycles(p, n_tokens=0, in_features=384, out_features=10) == 0
    with pytest.raises(ValueError, match=r"^in_features 2000 exceeds the linear engine's in_max 1536$"):
        linear_cycles(p, n_tokens=1, in_features=2000, out_features=1)
    with pytest.raises(ValueError, match=r"^n_tokens 198 exceeds the linear engine's max_tokens 197$"):
        linear_cycles(p, n_tokens=198, in_features=8, out_features=1)
    with pytest.raises(ValueError, match=r"^rows must be at least 1, not 0$"):
        LinearParams(rows=0, cols=8, max_tokens=8, in_max=8, out_max=8)
    with pytest.raises(ValueError, match=r"^rows must be a power of two, not 3$"):
        LinearParams(rows=3, cols=8, max_tokens=8, in_max=8, out_max=8)


def test_linear_engine_shape_and_weight_beats():
    p = LinearParams.for_macs(128, max_tokens=50, in_max=128, out_max=192, weight_rate=15)
    assert (p.rows, p.cols, p.weight_bytes) == (2, 64, 16)  # a 16-byte beat, the memory delivering 15 per cycle
    assert LinearParams.for_macs(16, rows=4, max_tokens=8, in_max=8, out_max=8, weight_rate=64).weight_bytes == 4
    with pytest.raises(ValueError, match=r"^the linear array's 96 MACs are not a multiple of its 64 rows$"):
        LinearParams.for_macs(96, rows=64, max_tokens=8, in_max=8, out_max=8)
    # the device's DRAM in bytes per cycle at the clock, rounded down
    assert device_weight_rate(get_device("pynq-z2"), 100) == 15
    assert device_weight_rate(get_device("zcu102"), 300) == 48


def test_requant_cycles():
    p = RequantParams(acc_bits=32, out=INT8, multiplier=3, shift=2)
    assert requant_cycles(p, n_values=100) == 101 and requant_cycles(p, n_values=0) == 0
    with pytest.raises(ValueError, match=r"^n_values must be a non-negative integer, not -1$"):
        requant_cycles(p, n_values=-1)


# -- whole model ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def deit_s():
    return ModelCost.from_name("deit_small_patch16_224", method="dynamicvit", keep_ratio=0.7,
                               hw=HwConfig(lanes=16))


def test_schedule_is_the_flops_counters(deit_s):
    from tokensift.sw import create_model
    from tokensift.sw.flops import static_schedule

    attn, mlp = static_schedule(create_model("vit_mnist_patch4_28", method="dynamicvit", keep_ratio=0.6))
    s = ModelCost.from_name("vit_mnist_patch4_28", method="dynamicvit", keep_ratio=0.6).schedule()
    assert (s.attn_tokens, s.mlp_tokens) == (attn, mlp)
    s = deit_s.schedule()
    assert [(st.block, st.n_in, st.n_out) for st in s.stages] == [(3, 197, 138), (6, 138, 97), (9, 97, 68)]


def test_model_desc_from_name_equals_from_model():
    from tokensift.sw import create_model

    for method in ("evit", "dynamicvit"):
        a = ModelCost.from_name("vit_mnist_patch4_28", method=method, keep_ratio=0.5)
        b = ModelCost(create_model("vit_mnist_patch4_28", method=method, keep_ratio=0.5))
        assert a.cycles() == b.cycles() and a.schedule().attn_tokens == b.schedule().attn_tokens


def test_model_cycles_add_up(deit_s):
    rows = deit_s.per_block()
    assert len(rows) == 12
    assert deit_s.cycles() == sum(r["total"] for r in rows) + sum(deit_s.fixed_cycles().values())
    assert rows[3]["cycles"]["selector"] > 0 and "selector" not in rows[2]["cycles"]
    # attention of a layer is the block's own closed form: heads frames of N tokens
    from tokensift.hw.attention.cycles import cycles

    assert rows[5]["cycles"]["attention"] == cycles(deit_s.attention, n_tokens=138, heads=6)
    dense = ModelCost.from_name("deit_small_patch16_224", hw=HwConfig(lanes=16))
    assert dense.cycles() > deit_s.cycles() and dense.selector is None


def test_model_config_errors():
    with pytest.raises(ValueError, match=r"^head_dim must be a multiple of lanes 24, not 64$"):
        ModelCost.from_name("deit_small_patch16_224", hw=HwConfig(lanes=24))
    with pytest.raises(ValueError, match=r"^lanes must be at least 1, not 0$"):
        HwConfig(lanes=0)
    with pytest.raises(ValueError, match=r"^the dense model \(method 'none'\) keeps every token; keep ratio must "
                                         r"be 1, not 0\.5$"):
        ModelDesc.from_name("deit_tiny_patch16_224", keep_ratio=0.5)
    with pytest.raises(ValueError, match=r"^the hardware cost model describes ViT/DeiT backbones \(one-convolution "
                                         r"patch embedding, one head\), not lvvit_s's convolutional stem and "
                                         r"auxiliary head$"):
        ModelDesc.from_name("lvvit_s")


# -- differentiable latency ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def budget():
    return LatencyBudget("vit_mnist_patch4_28", HwConfig(lanes=8), "pynq-z2", method="dynamicvit", keep_ratio=0.6)


def test_latency_is_exact_at_integer_counts(budget):
    cost = budget.cost
    counts = torch.tensor([float(st.n_out) for st in cost.schedule().stages])
    assert float(budget(counts)) == pytest.approx(cost.cycles() / 100e3, rel=1e-12)
    # any integer schedule, not only the static one: a hand-built schedule through ModelCost
    from tokensift.hw.cost.layer import Schedule, Stage

    outs = [40, 31, 12]
    stages, attn, mlp, n = [], [], [], cost.spec.num_tokens
    for b in range(cost.spec.depth):
        st = next((s for s in cost.schedule().stages if s.block == b), None)
        if st is not None:
            stages.append(Stage(st.index, b, st.site, n, outs[st.index], st.package, st.mode, st.selector))
            n = outs[st.index]
        attn.append(n)
        mlp.append(n)
    exact = cost.cycles(Schedule(attn, mlp, stages))
    assert float(budget.cycles(torch.tensor([40.0, 31.0, 12.0]))) == exact


def test_latency_gradient_is_the_finite_difference(budget):
    x = torch.tensor([30.25, 20.5, 10.75], dtype=torch.float64, requires_grad=True)
    ms = budget(x)
    ms.backward()
    assert (x.grad > 0).all()
    for s in range(3):
        lo, hi = x.detach().clone(), x.detach().clone()
        lo[s], hi[s] = math.floor(x[s].item()), math.floor(x[s].item()) + 1
        # piecewise linear: the derivative inside a cell is the difference across it
        assert x.grad[s].item() == pytest.approx(float(budget(hi) - budget(lo)), rel=1e-6)


def test_latency_batches_and_budget_protocol(budget):
    from tokensift.sw.budget import Budget

    assert isinstance(budget, Budget) and budget.num_stages == 3
    out = budget(torch.tensor([[30.0, 20.0, 10.0], [50.0, 50.0, 50.0]]))
    assert out.shape == (2,) and out[0] < out[1] < budget.dense * 1.2
    assert float(latency_ms(torch.tensor([30.0, 20.0, 10.0]), "vit_mnist_patch4_28", HwConfig(lanes=8), "pynq-z2",
                            method="dynamicvit", keep_ratio=0.6)) == pytest.approx(float(out[0]))
    with pytest.raises(ValueError, match=r"^token counts must have 3 entries in the last axis \(one per pruning "
                                         r"stage\), not shape \(2,\)$"):
        budget(torch.tensor([1.0, 2.0]))
    with pytest.raises(TypeError, match=r"^token counts must be a torch tensor, not list$"):
        budget([1.0, 2.0, 3.0])


def test_latency_follows_the_device_clock():
    a = LatencyBudget("vit_mnist_patch4_28", HwConfig(lanes=8), "zcu102")
    b = LatencyBudget("vit_mnist_patch4_28", HwConfig(lanes=8), "pynq-z2")
    assert a.num_stages == 0 and a.dense == pytest.approx(b.dense / 3)
    assert float(a(torch.zeros(0))) == pytest.approx(a.dense)
    with pytest.raises(ValueError, match=re.escape("clock_mhz must be positive, not -1")):
        LatencyBudget("vit_mnist_patch4_28", HwConfig(lanes=8), "zcu102", clock_mhz=-1)


def test_constant_multipliers_lose_their_trailing_zeros():
    from tokensift.hw.common.resources import const_operand_bits

    assert const_operand_bits(94548, signed=True) == 16  # 0b10111000101010100: 23637 << 2
    assert const_operand_bits(12345, signed=False) == 14
    assert const_operand_bits(1 << 20, signed=True) == 2
    with pytest.raises(ValueError, match=r"^a constant multiplier must be a positive integer, not 0$"):
        const_operand_bits(0, signed=True)
