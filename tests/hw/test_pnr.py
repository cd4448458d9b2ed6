"""Place and route with nextpnr-ecp5: the report parser, the argument checks and one real run."""

from __future__ import annotations

import re

import pytest

from tokensift.hw.cost import pnr


def _step(kind, delay, net=None, sources=(), cell="c", port="Q"):
    step = {"type": kind, "delay": delay, "from": {"cell": cell, "port": "Q"}, "to": {"cell": cell, "port": port}}
    if net is not None:
        step["net"], step["sources"] = net, list(sources)
    return step


REPORT = {
    "fmax": {"clk": {"achieved": 87.5, "constraint": 100}},
    "critical_paths": [{"from": "posedge clk", "to": "posedge clk", "path": [
        _step("clk-to-q", 0.5, cell="a_reg"),
        _step("routing", 1.0, net="a[3]", sources=["hw/x.py:10"]),
        _step("logic", 0.3),
        _step("routing", 0.2, net="$carry_1", sources=["hw/x.py:12", "/share/lattice/arith_map_ccu2c.v:74"]),
        _step("logic", 0.1),
        _step("routing", 0.2, net="$carry_2", sources=["hw/x.py:12", "/share/lattice/arith_map_ccu2c.v:74"]),
        _step("routing", 0.4, net="lut_z", sources=["/share/lattice/cells_map_trellis.v:108"]),
        _step("setup", 0.2, cell="b_reg", port="DI"),
    ]}],
    "utilization": {"TRELLIS_COMB": {"used": 40, "available": 83640}, "TRELLIS_FF": {"used": 9, "available": 83640},
                    "MULT18X18D": {"used": 2, "available": 156}, "DP16KD": {"used": 1, "available": 208}},
}


def test_parse_report_splits_logic_and_routing_and_names_the_hops():
    r = pnr.parse_report(REPORT)
    assert r["fmax_mhz"] == 87.5 and r["constraint_mhz"] == 100 and r["meets_constraint"] is False
    cp = r["critical_path"]
    assert cp["logic_ns"] == pytest.approx(0.5 + 0.3 + 0.1 + 0.2)
    assert cp["routing_ns"] == pytest.approx(1.0 + 0.2 + 0.2 + 0.4)
    assert cp["total_ns"] == pytest.approx(2.9)
    assert cp["from"] == "a[3]" and cp["from_source"] == "hw/x.py:10" and cp["to"] == "b_reg.DI"
    # the two carry nets of one source line are one hop; the technology-mapping net is none
    assert [(h["source"], h["at_ns"]) for h in cp["hops"]] == [("hw/x.py:10", 1.5), ("hw/x.py:12", 2.3)]
    assert r["utilization"] == {"lut": 40, "ff": 9, "dsp": 2, "ebr": 1, "lutram": 0, "alu54": 0}


def test_parse_report_without_a_clock_fails():
    with pytest.raises(pnr.PnrError, match=r"^nextpnr's report has no clock"):
        pnr.parse_report({"fmax": {}, "critical_paths": [], "utilization": {}})


@pytest.mark.parametrize(("kwargs", "exc", "message"), [
    ({"speed": 5}, ValueError, r"^speed must be one of 6, 7, 8, not 5$"),
    ({"speed": "6"}, TypeError, r"^speed must be an integer, not str$"),
    ({"constraint_mhz": 0}, ValueError, r"^constraint_mhz must be between 0 and 1000 MHz, not 0$"),
    ({"top": "my top"}, ValueError, r"^top must be a Verilog module name, not 'my top'$"),
    ({"seed": 0}, ValueError, r"^seed must be between 1 and 2147483647, not 0$"),
    ({"seed": 1.5}, TypeError, r"^seed must be an integer or None, not float$"),
])
def test_bad_arguments(kwargs, exc, message):
    with pytest.raises(exc, match=message):
        pnr.place_and_route_verilog("module top(); endmodule", **{"top": "top", **kwargs})


@pytest.mark.synth
def test_requantizer_closes_100_mhz_at_speed_6(tmp_path):
    """The one real P&R run of the default suite (a few seconds): the requantizer at speed 6."""
    from tokensift.hw.common.requant import Requantizer
    from tokensift.quant.fixed import INT8

    comp = Requantizer(acc_bits=32, out=INT8, multiplier=12345, shift=20)
    r = pnr.place_and_route(comp, top="tokensift_requant", speed=6, cache_dir=tmp_path)
    assert r["cached"] is False and r["part"] == "LFE5U-85F" and r["speed"] == 6
    assert r["fmax_mhz"] >= 100, r["critical_path"]
    assert r["meets_constraint"] is True
    cp = r["critical_path"]
    assert cp["logic_ns"] > 0 and cp["routing_ns"] > 0
    assert cp["total_ns"] == pytest.approx(1e3 / r["fmax_mhz"], rel=0.02)
    # the hops name the Python lines the path runs through (the component is elaborated with its sources)
    assert cp["hops"] and all(re.match(r"^hw/common/\w+\.py:\d+", h["source"]) for h in cp["hops"])
    assert r["utilization"]["dsp"] == 2 and r["utilization"]["ff"] > 0 and r["utilization"]["lut"] > 0
    again = pnr.place_and_route(comp, top="tokensift_requant", speed=6, cache_dir=tmp_path)
    assert again["cached"] is True and again["fmax_mhz"] == r["fmax_mhz"]
    assert again["critical_path"] == cp and again["seed"] == "default"
    # another seed is another placement, cached apart from the default's
    seeded = pnr.place_and_route(comp, top="tokensift_requant", speed=6, cache_dir=tmp_path, seed=7)
    assert seeded["cached"] is False and seeded["seed"] == 7 and seeded["fmax_mhz"] >= 100
    assert pnr.place_and_route(comp, top="tokensift_requant", speed=6, cache_dir=tmp_path, seed=7)["cached"] is True
    assert r["synth_flow"] == "default" and again["synth_flow"] == "default"


#: two flip-flops on bits 1 and 2 of ``x`` and two on a wire called ``x[1]`` (the names Amaranth gives the
#: aliases of an array's elements): abc9 names bit 1 of ``x`` and bit 0 of ``\x[1]`` alike and its
#: ``abc_ops_reintegrate`` step fails an assertion on them
NAME_CLASH = r"""
module top(input clk, input [3:0] d, output reg [1:0] y);
  wire [2:0] x;
  wire [1:0] \x[1] ;
  TRELLIS_FF f0(.CLK(clk), .DI(d[0]), .Q(x[1]));
  TRELLIS_FF f1(.CLK(clk), .DI(d[1]), .Q(x[2]));
  TRELLIS_FF f2(.CLK(clk), .DI(d[2]), .Q(\x[1] [0]));
  TRELLIS_FF f3(.CLK(clk), .DI(d[3]), .Q(\x[1] [1]));
  always @(posedge clk) y <= {x[2] & \x[1] [1], x[1] ^ \x[1] [0]};
endmodule
"""


@pytest.mark.synth
def test_abc9_name_clash_is_synthesized_with_the_wires_renamed(tmp_path):
    """The default flow fails on the clash (so the fallback is not a no-op); the design is placed and routed
    through the renamed flow, and a cached run says so too."""
    import subprocess

    from tokensift.toolchain import find_yosys

    (tmp_path / "design.v").write_text(NAME_CLASH)
    default = subprocess.run([find_yosys().executable, "-q", "-l", "yosys.log", "-p", pnr._synth_script("top")],
                             cwd=tmp_path, capture_output=True, text=True)
    assert default.returncode != 0 and pnr._reintegrate_failed(tmp_path / "yosys.log")
    r = pnr.place_and_route_verilog(NAME_CLASH, top="top", cache_dir=tmp_path / "cache")
    assert r["synth_flow"] == "renamed" and r["cached"] is False and r["utilization"]["ff"] == 6
    again = pnr.place_and_route_verilog(NAME_CLASH, top="top", cache_dir=tmp_path / "cache")
    assert again["synth_flow"] == "renamed" and again["cached"] is True


@pytest.mark.synth
def test_a_yosys_error_is_reported_from_its_log(tmp_path):
    """Yosys's own error line reaches the exception (YoWASP's stdout ends where ABC starts)."""
    with pytest.raises(pnr.PnrError, match=r"failed on top .*ERROR"):
        pnr.place_and_route_verilog("module top(input a, output b); assign b = a endmodule", top="top",
                                    cache_dir=tmp_path)
