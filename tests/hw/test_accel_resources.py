"""The whole accelerator's resource model against its Yosys baselines (``tests/hw/baselines/accelerator.json``):
DSP and block RAM equal, LUT and FF within 10%; the parts reuse the wrapped blocks' models; one small
configuration synthesized live (``synth``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tokensift.hw.accel import op_gemm
from tokensift.hw.accel import resources as A
from tokensift.hw.common.resources import Resources, map_memory
from tokensift.hw.cost.validation import _within, compare, load_baselines
from tokensift.hw.gemm import resources as gemm_resources

ROOT = Path(__file__).resolve().parents[2]
HARD = ("dsp", "bram18", "bram36", "ebr")


def _bench(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _baselines() -> dict:
    data = load_baselines("accelerator")
    assert data is not None, "no tests/hw/baselines/accelerator.json: run bench/synth_baselines.py --block accelerator"
    return data


def test_baselines_cover_the_grid_and_the_issue():
    """Three shapes on ECP5 (the demo's, the CLI's default and another), the demo's on every family, each with
    the command that made it and the 10% LUT/FF tolerance."""
    data = _baselines()
    stored = {(e["name"], e["family"]) for e in data["entries"]}
    expected = {(n, f) for n, fams in A.GRID_FAMILIES.items() for f in fams}
    assert stored == expected
    assert len({n for n, f in stored if f == "ecp5"}) >= 3
    assert {f for n, f in stored if n == "demo"} == {"ecp5", "xc7", "xcup"}
    assert data["tolerances"]["lut"] == {"rel": 0.10} and data["tolerances"]["ff"] == {"rel": 0.10}
    grid = dict(A.baseline_grid())
    for e in data["entries"]:
        assert e["params"] == grid[e["name"]]
        assert e["command"] == f"python bench/synth_baselines.py --block accelerator --family {e['family']}"


def test_demo_and_default_shapes_are_the_clis():
    demo, default = A.grid_config(dict(A._GRID[0][1])), A.grid_config(dict(A._GRID[1][1]))
    assert (demo.banks, demo.gemm_cols, demo.lanes, demo.axi.data_bytes) == (4, 32, 16, 16)
    assert (default.banks, default.gemm_cols, default.lanes, default.axi.data_bytes) == (2, 64, 8, 8)


@pytest.mark.parametrize("entry", _baselines()["entries"] if load_baselines("accelerator") else [{}],
                         ids=lambda e: f"{e.get('name')}-{e.get('family')}")
def test_model_equals_yosys(entry):
    assert entry, "no accelerator baselines"
    cfg = A.params_from_dict(entry["params"])
    res = A.resources(cfg, entry["family"])
    got = {k: getattr(res, k) for k in HARD}
    assert got == {k: entry["synth"][k] for k in HARD}
    for metric in ("lut", "ff"):
        err, ok = _within(float(getattr(res, metric)), float(entry["synth"][metric]), {"rel": 0.10})
        assert ok, f"{metric}: model {getattr(res, metric):.0f} synth {entry['synth'][metric]} ({err:.1%})"


def test_validation_rows_are_within_tolerance():
    rows = compare(["accelerator"])
    assert rows and all(r.ok for r in rows), [r for r in rows if not r.ok]


def test_parts_add_up_and_reuse_the_block_models():
    cfg = A.grid_config(dict(A._GRID[0][1]))
    for family in ("ecp5", "xc7", "xcup"):
        parts = A.parts(cfg, family)
        assert {"gemm", "attention", "layernorm", "select", "gelu", "residual", "token_mean", "pos_embed", "logits",
                "buffers", "axi_read", "axi_write", "axi_lite", "glue"} == set(parts)
        assert sum(parts.values(), Resources()) == A.resources(cfg, family)
        # the GEMM part is the GEMM engine's own model plus the op engine's transposers and act FIFO
        own = gemm_resources.resources(op_gemm.gemm_config(cfg), family)
        mems = A.memories(cfg, family)
        extra = sum((m.resources * n for k, (m, n) in mems.items() if k.startswith("gemm_")), Resources())
        assert parts["gemm"] == own + extra
        # exact() is the rule-based part: the same hard blocks, no fitted glue
        hard = A.exact(cfg, family)
        assert all(getattr(hard, k) == getattr(A.resources(cfg, family), k) for k in HARD)


def test_buffers_with_two_read_ports_are_replicated_and_granular():
    cfg = A.grid_config(dict(A._GRID[0][1]))
    mems = A.memories(cfg, "ecp5")
    t, x = mems["buffer_t"], mems["buffer_x"]
    assert t[0] == x[0] and t[1] == 2 * x[1] == 2 * cfg.banks
    # 16 lanes of 16 bits with a write enable each: every lane on two 9-bit byte lanes -> 288 bits, 8 x 36
    assert (x[0].primitive, x[0].count) == ("PDPW16KD", 8)


def test_memory_granularity():
    # memory_libmap's swizzle starts every enable group on a 9-bit byte lane of the block RAM: eight 10-bit
    # groups take 8 x 18 = 144 bits (four 36-bit EBR ports), one enable 81 bits (three)
    assert map_memory(80, 512, family="ecp5", granularity=10).blocks.ebr == 4
    assert map_memory(80, 512, family="ecp5").blocks.ebr == 3
    assert map_memory(64, 512, family="ecp5", granularity=64) == map_memory(64, 512, family="ecp5")
    with pytest.raises(ValueError, match=r"^write granularity must be a positive integer, not 0$"):
        map_memory(16, 64, family="ecp5", granularity=0)
    with pytest.raises(ValueError, match=r"^a ROM has no write port to give a granularity$"):
        map_memory(16, 64, family="ecp5", rom=True, granularity=8)


def _multiplications(component) -> int:
    from amaranth.hdl import _ast, _ir, _nir
    from amaranth.lib import wiring

    ports = {}
    for path, member, value in component.signature.flatten(component):
        value = value.as_value() if isinstance(value, _ast.ValueCastable) else value
        ports["__".join(map(str, path))] = (value, _ir.PortDirection.Input if member.flow == wiring.In
                                            else _ir.PortDirection.Output)
    netlist = _ir.build_netlist(_ir.Fragment.get(component, None), ports=ports, name="top")
    return sum(isinstance(c, _nir.Operator) and c.operator == "*" for c in netlist.cells)


def test_buffers_have_no_multiplier():
    """The model gives the token buffers no DSP: their word addresses ``tile x words`` (12, 24, 48 words a row
    in the grid) are shifts and adds in the RTL, not products Yosys maps (and shares) unpredictably."""
    from tokensift.hw.accel.buffers import TokenBuffers

    for name in ("demo", "b2_c16_l4_w8"):
        cfg = A.params_from_dict(dict(A.baseline_grid())[name])
        assert any(cfg.geometry(b).words & (cfg.geometry(b).words - 1) for b in A.Buffer)
        assert _multiplications(TokenBuffers(config=cfg)) == 0
        assert A.parts(cfg, "ecp5", fitted_lut_ff=False)["buffers"].dsp == 0


def test_wrong_config_is_a_type_error():
    with pytest.raises(TypeError, match=r"^config must be an AccelConfig, not dict$"):
        A.resources({}, "ecp5")
    with pytest.raises(ValueError, match=r"^family must be one of xcup, xc7, ecp5, not 'ice40'$"):
        A.resources(A.grid_config(dict(A._GRID[0][1])), "ice40")


def test_estimate_for_a_device():
    from tokensift.devices import get_device

    cfg = A.grid_config(dict(A._GRID[0][1]))
    e = A.estimate(cfg, device=get_device("zcu102"))
    assert set(e["families"]) == {"ecp5", "xcup"}
    assert e["families"]["xcup"] == A.resources(cfg, "xcup").as_dict("xcup")
    assert e["device"]["utilization"]["dsp"] == round(A.resources(cfg, "xcup").dsp / 2520, 4)
    assert e["device"]["fits"] is True


@pytest.mark.synth
@pytest.mark.slow  # the whole top even in its smallest shape: 3 to 6 minutes of Yosys on a 2-core machine
def test_live_synthesis_matches_baseline_and_model(tmp_path):
    """The smallest shape through Yosys for real (a fresh cache): the stored baseline is today's synthesis and
    the model is within tolerance of it."""
    from tokensift.hw.cost.synth import synthesize

    gen = _bench("synth_baselines")
    name = A.QUICK_CONFIGS[0]
    entry = next(e for e in _baselines()["entries"] if e["name"] == name and e["family"] == "ecp5")
    cfg = A.params_from_dict(dict(gen.grid("accelerator"))[name])
    got = synthesize(A.build(cfg), family="ecp5", top=f"accelerator_{name}", cache_dir=tmp_path, use_cache=False)
    assert got["cached"] is False
    metrics = ("dsp", "ebr", "lut", "ff")
    assert {k: got[k] for k in metrics} == {k: entry["synth"][k] for k in metrics}
    res = A.resources(cfg, "ecp5")
    assert (res.dsp, res.ebr) == (got["dsp"], got["ebr"])
    for metric in ("lut", "ff"):
        assert _within(float(getattr(res, metric)), float(got[metric]), {"rel": 0.10})[1], metric


def test_estimate_without_a_family_fit_counts_the_hard_blocks_and_says_so():
    import copy
    import json

    from tokensift.devices import get_device
    from tokensift.hw.common.resources import use_fit_table

    table = copy.deepcopy(json.loads((ROOT / "tokensift" / "data" / "lut_ff_fit.json").read_text()))
    table["blocks"]["accelerator"].pop("xc7", None)
    cfg = A.grid_config(dict(A._GRID[3][1]))
    use_fit_table(table)
    try:
        e = A.estimate(cfg, device=get_device("pynq-z2"))
    finally:
        use_fit_table(None)
    xc7 = e["families"]["xc7"]
    assert (xc7["lut"], xc7["ff"]) == (None, None) and "no xc7 synthesis baseline" in xc7["note"]
    assert xc7["dsp"] == A.exact(cfg, "xc7").dsp and xc7["bram36"] == A.exact(cfg, "xc7").bram36_equiv
    assert e["device"]["fits"] is None and set(e["device"]["utilization"]) == {"dsp", "bram36"}


def test_project_resources_are_the_models():
    from tokensift.hw.accel.project import Project

    cfg = A.grid_config(dict(A._GRID[1][1]))
    project = Project(config=cfg, compiled=None)
    assert project.resources() == A.resources(cfg, "ecp5")
    assert project.resources("xcup") == A.resources(cfg, "xcup")
