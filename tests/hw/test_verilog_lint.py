"""`verilator --lint-only -Wall` on every block's generated Verilog, in the configurations of the timing grid
(DeiT-S and the demo's, bench/bench_timing.py's ``GRID``).

Fails on any ALWNEVER (an ``always @*`` that never runs: event-driven simulators leave its outputs X) or
UNDRIVEN (bits nobody drives), and on WIDTHTRUNC in the project's own logic. Amaranth's back end writes two
truncating idioms itself, always into one of its temporaries (a wire named ``\\$<n>``), and they lose no
information:

- ``assign \\$n = ! x;`` -- a multi-bit operand of ``!`` (Yosys's ``$logic_not``): how ``x == 0`` and
  ``~x.any()`` are written;
- ``assign \\$n = x >> y;`` into a narrower temporary -- how a part-select at a variable offset
  (``bit_select``, ``word_select``, an ``Array`` index) is written: the wanted bits are the low ones.

Any other WIDTHTRUNC -- into a named signal, or of another shape -- is the project's and fails. The rest of
``-Wall`` (Amaranth's UNUSEDSIGNAL, PROCASSINIT, WIDTHEXPAND, CASEINCOMPLETE noise) is out of scope.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_timing.py"
#: always fatal, wherever they come from
FATAL = ("ALWNEVER", "UNDRIVEN")
#: the back end's truncating idioms (see the module docstring); a WIDTHTRUNC on any other line is the project's
BACKEND_IDIOMS = (
    re.compile(r"^assign \\\$\d+\s+=\s+!\s*\S.*;$"),
    re.compile(r"^assign \\\$\d+\s+=\s+[\w\\$.\[\]:]+\s*>>\s*[\w\\$.\[\]:]+\s*;$"),
)
_WARNING = re.compile(r"^%Warning-([A-Z]+): [^:]+:(\d+):\d+: (.*)$", re.M)


def _grid():
    spec = importlib.util.spec_from_file_location("bench_timing", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def findings(verilog: str, top: str, workdir: Path) -> list[str]:
    """The lint findings this test fails on, one line each: ``KIND line N: message | source line``."""
    from tokensift.toolchain import find_verilator

    path = workdir / f"{top}.v"
    path.write_text(verilog)
    proc = subprocess.run([find_verilator().executable, "--lint-only", "-Wall", "-Wno-fatal", "--top-module", top,
                           path.name], cwd=workdir, capture_output=True, text=True, timeout=600)
    if "%Error" in proc.stderr:
        raise AssertionError(f"Verilator could not read the Verilog: {proc.stderr.strip()[:2000]}")
    lines = verilog.splitlines()
    out = []
    for m in _WARNING.finditer(proc.stderr):
        kind, line, message = m.group(1), int(m.group(2)), m.group(3)
        source = lines[line - 1].strip()
        if kind in FATAL or (kind == "WIDTHTRUNC" and not any(rx.match(source) for rx in BACKEND_IDIOMS)):
            out.append(f"{kind} line {line}: {message} | {source}")
    return out


def test_the_classifier_tells_the_back_end_from_project_logic(tmp_path):
    verilog = "\n".join([
        "module t(input [7:0] a, input [2:0] i, input [15:0] w, output z, output y, output [3:0] n, output [3:0] q);",
        "  wire \\$1 ;",
        "  wire \\$2 ;",
        "  wire [3:0] \\$3 ;",
        "  assign \\$1  = ! a;",           # back end: a == 0
        "  assign \\$2  = a >> i;",        # back end: a.bit_select(i, 1)
        "  assign \\$3  = w >> i;",        # back end: w.word_select(i, 4)
        "  assign z = \\$1  ^ \\$2  ^ \\$3 [0];",
        "  assign n = a + \\$3 ;",         # project: an 8-bit sum into a 4-bit named signal
        "  reg [3:0] h;",
        "  always @*",
        "    h[3:2] = 2'h0;",              # never runs, and h[1:0] is never driven
        "  assign q = h;",
        "  assign y = ^\\$3 ;",
        "endmodule",
    ])
    found = findings(verilog, "t", tmp_path)
    kinds = sorted(f.split(" ")[0] for f in found)
    assert kinds == ["ALWNEVER", "UNDRIVEN", "WIDTHTRUNC"], found
    assert any(f.startswith("WIDTHTRUNC") and f.endswith("| assign n = a + \\$3 ;") for f in found), found


@pytest.mark.sim
@pytest.mark.parametrize(("block", "name"), [(g[0], g[1]) for g in _grid().GRID])
def test_generated_verilog_lints_clean(block, name, tmp_path):
    from amaranth.back import verilog

    grid = _grid()
    argv = next(g[3] for g in grid.GRID if (g[0], g[1]) == (block, name))
    component, top, _ = grid.build(block, argv)
    found = findings(verilog.convert(component, name=top, emit_src=False), top, tmp_path)
    assert not found, f"{block} {name}: " + "\n".join(found)
