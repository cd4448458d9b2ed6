"""The clock of the cost model: measured Fmax on ECP5, labelled assumptions on the Xilinx families."""

from __future__ import annotations

import json
import re

import pytest

from tokensift.devices import get_device
from tokensift.hw.cost import clock


def _baseline(tmp_path, attention=(60.0, 75.0), selector=(90.0, 120.0), selector_package=(55.0, 70.0)):
    """A baseline file: per block (speed 6, speed 8) in MHz; two attention configurations, the slower counts."""
    def cfg(block, name, fmax, **params):
        return {"block": block, "name": name, "params": params, "fmax_mhz": {"6": fmax[0], "8": fmax[1]}}

    data = {"configs": [
        cfg("attention", "a", attention),
        cfg("attention", "b", (attention[0] + 10, attention[1] + 10)),
        cfg("selector", "s", selector, package=False),
        cfg("selector", "sp", selector_package, package=True),
        cfg("requant", "r", (190.0, 250.0)),
        # the linear engine and the vector units, faster than the rest here
        cfg("gemm", "g", (110.0, 130.0)),
        cfg("layernorm", "l", (91.0, 118.0)),
        cfg("gelu", "e", (101.0, 119.0)),
        cfg("residual", "r", (180.0, 235.0)),
    ]}
    path = tmp_path / "fmax.json"
    path.write_text(json.dumps(data))
    return path


def test_speed_grade_of_a_part():
    assert clock.speed_grade("LFE5UM-85F-8BG381") == 8
    assert clock.speed_grade("LFE5U-85F-6BG381C") == 6
    with pytest.raises(ValueError, match=r"^'XC7Z020-1CLG400' is not an ECP5 part number with a speed grade"):
        clock.speed_grade("XC7Z020-1CLG400")


def test_ecp5_clock_is_the_slowest_measured_unit(tmp_path):
    path = _baseline(tmp_path)
    ecp5 = get_device("ecp5-85f")  # LFE5UM-85F-8: speed grade 8
    c = clock.model_clock(ecp5, units=("attention", "selector", "linear"), package=True, path=path)
    assert (c.mhz, c.source, c.limited_by) == (70.0, "measured", "selector")
    assert c.fmax == {"attention": 75.0, "selector": 70.0, "linear": 130.0}  # the linear unit is the GEMM engine
    assert re.match(r"^measured: selector Fmax after nextpnr P&R at speed 8 \(attention 75 MHz, selector 70 MHz, "
                    r"linear 130 MHz\) is below the device's 100 MHz$", c.note)
    # a unit with no Fmax baseline leaves the clock assumed, and says which
    c = clock.model_clock(ecp5, units=("attention", "token_mixer"), path=path)
    assert c.note.endswith("; token_mixer not generated, not measured")
    # without the package token the selector's other configuration counts
    c = clock.model_clock(ecp5, units=("attention", "selector", "linear"), package=False, path=path)
    assert (c.mhz, c.limited_by) == (75.0, "attention")


def test_ecp5_clock_is_capped_by_the_device_clock(tmp_path):
    path = _baseline(tmp_path, attention=(150.0, 180.0), selector_package=(140.0, 160.0))
    c = clock.model_clock("ecp5", units=("attention", "selector"), package=True, path=path)
    assert (c.mhz, c.source, c.limited_by) == (100.0, "measured", None)
    assert c.note.startswith("measured: every unit's Fmax after nextpnr P&R at speed 8")


def test_xilinx_clocks_are_assumed():
    for name, mhz in (("zcu102", 300.0), ("pynq-z2", 100.0)):
        c = clock.model_clock(name, units=("attention", "selector"))
        assert (c.mhz, c.source) == (mhz, "assumed")
        assert c.note.startswith("assumed, not measured: no open place and route exists for")


def test_missing_baseline_falls_back_to_an_assumed_clock(tmp_path):
    c = clock.model_clock("ecp5", units=("attention",), path=tmp_path / "absent.json")
    assert (c.mhz, c.source) == (100.0, "assumed")
    assert c.note == "assumed, not measured: no Fmax baseline of attention at speed 8 (run bench/bench_timing.py --write)"


def test_given_clock_is_labelled_and_flagged_above_the_measured_one(tmp_path, monkeypatch):
    path = _baseline(tmp_path)
    c = clock.model_clock("ecp5", units=("attention",), clock_mhz=90, path=path)
    assert (c.mhz, c.source, c.note) == (90.0, "given", "given; above the 75 MHz this design is measured to reach")
    assert clock.model_clock("zcu102", clock_mhz=250).note == "given"
    with pytest.raises(ValueError, match=r"^clock_mhz must be a positive number, not -5$"):
        clock.model_clock("zcu102", clock_mhz=-5)


@pytest.fixture
def measured(tmp_path, monkeypatch):
    """The cost model reads a baseline with known figures: ECP5 (speed 8) at 70 MHz, set by the selector."""
    monkeypatch.setattr(clock, "FMAX_BASELINE", _baseline(tmp_path))
    return 70.0


def test_latency_budget_uses_the_measured_clock(measured):
    import torch

    from tokensift.hw.cost.latency import LatencyBudget
    from tokensift.hw.cost.layer import HwConfig, ModelCost

    budget = LatencyBudget("vit_mnist_patch4_28", HwConfig(lanes=16), "ecp5", method="evit")
    assert budget.clock_mhz == measured and budget.clock.source == "measured"
    cost = ModelCost.from_name("vit_mnist_patch4_28", method="evit", hw=HwConfig(lanes=16))
    assert float(budget(torch.tensor([float(st.n_out) for st in cost.schedule().stages]))) == pytest.approx(
        cost.cycles() / (measured * 1e3))
    # dense: no selector, so the attention core alone sets the clock
    dense = LatencyBudget("vit_mnist_patch4_28", HwConfig(lanes=16), "ecp5")
    assert dense.clock_mhz == 75.0 and dense.clock.limited_by == "attention"
    assert LatencyBudget("vit_mnist_patch4_28", HwConfig(lanes=16), "pynq-z2").clock.source == "assumed"


def test_estimate_reports_where_its_clock_comes_from(measured, capsys):
    from tokensift.cli import main

    assert main(["estimate", "--device", "ecp5", "--model", "vit_mnist_patch4_28", "--method", "evit",
                 "--lanes", "16", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["clock_mhz"] == measured and d["clock"]["source"] == "measured"
    assert d["latency_ms"] == pytest.approx(d["cycles"] / (measured * 1e3))
    assert main(["estimate", "--device", "pynq-z2", "--model", "vit_mnist_patch4_28", "--lanes", "16"]) == 0
    text = capsys.readouterr().out
    assert re.search(r"^clock 100 MHz: assumed, not measured: no open place and route exists for PYNQ-Z2", text,
                     re.M)


def test_coopt_answers_say_measured_on_ecp5_and_assumed_elsewhere(measured, capsys):
    from tokensift.cli import main

    argv = ["co-opt", "--no-progress", "--model", "vit_mnist_patch4_28", "--method", "evit", "--target-fps", "50"]
    assert main([*argv, "--device", "ecp5", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["clock"]["source"] == "measured" and s["clock"]["mhz"] == measured
    assert s["chosen"]["hw"]["clock_mhz"] == measured and s["chosen"]["clock"] == s["clock"]
    assert s["chosen"]["latency_ms"] == pytest.approx(s["chosen"]["cycles"] / (measured * 1e3))
    assert main([*argv, "--device", "pynq-z2"]) == 0
    text = capsys.readouterr().out
    assert re.search(r"^clock: 100 MHz, assumed, not measured: no open place and route exists for PYNQ-Z2", text,
                     re.M)


def test_whole_accelerator_clock_is_its_own_measured_fmax(tmp_path):
    # the whole design's figure only: no block's Fmax stands in for it, and another shape is not credited
    shape = {"banks": 4, "lanes": 4, "gemm_cols": 16, "axi_bytes": 16}
    row = {"block": "accelerator", "name": "a", "fmax_mhz": {"6": 88.0, "8": 97.5},
           "params": {"model": "vit_mnist_patch4_28", **shape}}
    path = _baseline(tmp_path)
    data = json.loads(path.read_text())
    data["configs"].append(row)
    path.write_text(json.dumps(data))
    c = clock.accelerator_clock("ecp5-85f", shape, model="vit_mnist_patch4_28", path=path)
    assert (c.mhz, c.source, c.limited_by, c.fmax) == (97.5, "measured", "accelerator", {"accelerator": 97.5})
    assert c.note == ("measured: the whole design's Fmax after nextpnr P&R at speed 8 is 97.5 MHz, below the "
                      "device's 100 MHz")
    row["fmax_mhz"]["8"] = 120.0
    faster = tmp_path / "faster.json"  # the baselines are read once per path
    faster.write_text(json.dumps(data))
    c = clock.accelerator_clock("ecp5-85f", shape, model="vit_mnist_patch4_28", path=faster)
    assert (c.mhz, c.source, c.limited_by) == (100.0, "measured", None)
    # another shape, another model, more attention cores: another design
    for other, model in (({**shape, "lanes": 8}, "vit_mnist_patch4_28"), (shape, "deit_small_patch16_224"),
                         ({**shape, "attention_cores": 4}, "vit_mnist_patch4_28")):
        c = clock.accelerator_clock("ecp5-85f", other, model=model, path=path)
        assert (c.mhz, c.source) == (100.0, "assumed")
        assert c.note.startswith("assumed, not measured: this design (model ") and "was not placed and routed" in c.note
    c = clock.accelerator_clock("zcu102", shape, model="vit_mnist_patch4_28", path=path)
    assert (c.mhz, c.source) == (300.0, "assumed") and "no open place and route" in c.note
