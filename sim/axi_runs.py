"""One call per Verilator run of the AXI blocks (tests, the CLI and the benchmarks share them).

:func:`run_dma` builds an :class:`~tokensift.hw.axi.reader.AxiReader` or :class:`~tokensift.hw.axi.writer.AxiWriter`
and runs :mod:`tokensift.sim.tb_axi_dma` on it, adding the cycle model's figures next to the measured ones;
:func:`run_registers` runs :mod:`tokensift.sim.tb_axi_lite` on an
:class:`~tokensift.hw.axi.registers.AxiLiteRegisters`.
"""

from __future__ import annotations

from tokensift.hw.axi.config import AxiDmaConfig, RegisterMap
from tokensift.sim.runner import run_cocotb

__all__ = ["run_dma", "run_registers", "DMA_TESTS"]

#: the DMA testbench's tests
DMA_TESTS = ("random_traffic", "timed", "errors", "reset_mid_transfer")


def run_dma(kind: str, cfg: AxiDmaConfig, *, latency: int, timed: list[tuple[int, int]], seed: int = 1,
            pause: float = 0.3, stall: float = 0.3, commands: int = 30, max_length: int = 600,
            tests: tuple[str, ...] = DMA_TESTS, build_dir=None, waves=False) -> dict:
    """Run the DMA testbench; its report plus ``expected`` (the cycle model of each ``timed`` command)."""
    from tokensift.hw.axi.cycles import read_cycles, write_cycles
    from tokensift.hw.axi.reader import AxiReader
    from tokensift.hw.axi.writer import AxiWriter

    if kind not in ("reader", "writer"):
        raise ValueError(f"kind must be 'reader' or 'writer', not {kind!r}")
    model = read_cycles if kind == "reader" else write_cycles
    expected = [model(cfg, a, n, latency=latency) for a, n in timed]  # checks the commands before the build
    component = (AxiReader if kind == "reader" else AxiWriter)(config=cfg)
    params = {"config": cfg.as_dict(), "kind": kind, "seed": seed, "latency": latency, "pause": pause,
              "stall": stall, "commands": commands, "max_length": max_length, "timed": [list(t) for t in timed]}
    res = run_cocotb(component, toplevel=f"tokensift_axi_{kind}", test_module="tokensift.sim.tb_axi_dma",
                     params=params, testcase=list(tests), build_dir=build_dir, waves=waves, seed=seed)
    return {**res.report, "expected": expected if "timed" in tests else [], "build_dir": str(res.build_dir),
            "waves": str(res.waves) if res.waves else None, "wall_s": res.wall_s}


def run_registers(regmap: RegisterMap, *, seed: int = 1, pause: float = 0.3, accesses: int = 300,
                  build_dir=None, waves=False) -> dict:
    """Run the register bank's testbench; its report."""
    from tokensift.hw.axi.registers import AxiLiteRegisters

    component = AxiLiteRegisters(regmap=regmap)
    params = {"regmap": regmap.as_dict(), "seed": seed, "pause": pause, "accesses": accesses}
    res = run_cocotb(component, toplevel="tokensift_axi_lite", test_module="tokensift.sim.tb_axi_lite",
                     params=params, build_dir=build_dir, waves=waves, seed=seed)
    return {**res.report, "build_dir": str(res.build_dir), "waves": str(res.waves) if res.waves else None,
            "wall_s": res.wall_s}
