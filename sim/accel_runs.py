"""One call per Verilator run of the whole accelerator (tests, the CLI and the benchmarks share it)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from tokensift.hw.accel.config import AccelConfig
from tokensift.sim.runner import run_cocotb

__all__ = ["run_accelerator"]


def run_accelerator(cfg: AccelConfig, dram: bytes, runs: list[dict], *, latency: int = 8, pause: float = 0.0,
                    seed: int = 1, build_dir=None, waves=False) -> dict:
    """Load ``dram`` at address 0, do each run (see :mod:`tokensift.sim.tb_accel`), return the report."""
    from tokensift.hw.accel.top import Accelerator

    with tempfile.TemporaryDirectory(prefix="tokensift-accel-") as tmp:
        image = Path(tmp) / "dram.bin"
        image.write_bytes(bytes(dram))
        params = {"image": str(image), "dram_bytes": max(1 << 20, 1 << (len(dram) + 4096).bit_length()),
                  "latency": latency, "pause": pause, "seed": seed,
                  "runs": [{**r, "registers": {str(k): v for k, v in r["registers"].items()}} for r in runs]}
        res = run_cocotb(Accelerator(config=cfg), toplevel="tokensift_accel", test_module="tokensift.sim.tb_accel",
                         params=params, build_dir=build_dir, waves=waves, seed=seed)
    return {**res.report, "build_dir": str(res.build_dir), "wall_s": res.wall_s}
