"""One call per Verilator run of the whole accelerator (tests, the CLI and the benchmarks share it)."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from tokensift.hw.accel.config import AccelConfig
from tokensift.sim.runner import run_cocotb

__all__ = ["run_accelerator"]


def _ports_only(top) -> list[str]:
    """Verilator options that undo cocotb's ``--public-flat-rw`` for all but the top level's ports (the clock,
    the reset and each member of ``top``'s signature). Every signal public means every signal may be written
    from outside, so Verilator re-evaluates all of the design's combinational logic at each evaluation; a
    large design then simulates many times slower. The runs that read the sequencer's internal ports
    (``op_timing``) keep everything public."""
    from tokensift.hw.accel.project import TOPLEVEL
    from tokensift.sim.runner import default_build_root

    names = ["clk", "rst"] + [f"{name}__*" if member.is_signature else name
                              for name, member in top.signature.members.items()]
    text = "`verilator_config\n" + "".join(f'public_flat_rw -module "{TOPLEVEL}" -var "{n}"\n' for n in names)
    # named by its content: the path is part of the build's recipe, so other lines get their own build
    path = default_build_root() / f"{TOPLEVEL}_ports-{hashlib.sha1(text.encode()).hexdigest()[:10]}.vlt"
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return ["--no-public-flat-rw", str(path)]


def run_accelerator(cfg: AccelConfig, dram: bytes, runs: list[dict], *, latency: int = 8, pause: float = 0.0,
                    seed: int = 1, op_timing: bool = False, build_dir=None, waves=False) -> dict:
    """Load ``dram`` at address 0, do each run (see :mod:`tokensift.sim.tb_accel`), return the report."""
    from tokensift.hw.accel.top import Accelerator

    with tempfile.TemporaryDirectory(prefix="tokensift-accel-") as tmp:
        image = Path(tmp) / "dram.bin"
        image.write_bytes(bytes(dram))
        params = {"image": str(image), "dram_bytes": max(1 << 20, 1 << (len(dram) + 4096).bit_length()),
                  "latency": latency, "pause": pause, "seed": seed, "op_timing": op_timing,
                  "runs": [{**r, "registers": {str(k): v for k, v in r["registers"].items()}} for r in runs]}
        top = Accelerator(config=cfg)
        res = run_cocotb(top, toplevel="tokensift_accel", test_module="tokensift.sim.tb_accel",
                         params=params, build_dir=build_dir, waves=waves, seed=seed,
                         build_args=[] if op_timing else _ports_only(top))
    return {**res.report, "build_dir": str(res.build_dir), "wall_s": res.wall_s}


def simulate_model(cfg: AccelConfig, image: bytes, registers, inputs: list[bytes], *, register_sets=None,
                   latency: int = 8, pause: float = 0.0, seed: int = 1, op_timing: bool = False, build_dir=None,
                   waves=False, max_cycles: int | None = None) -> dict:
    """Real images through the generated design, one run per (input, register set), each checked against the
    reference sequencer (:func:`tokensift.quant.accel.executor.run`) on the same DRAM bytes and registers.

    ``inputs`` are the images' input-region bytes (:func:`tokensift.quant.accel.image.input_bytes`);
    ``register_sets`` (default ``[registers]``) are :class:`~tokensift.quant.accel.registers.Registers`, every
    input runs under each; ``max_cycles`` raises the testbench's hang guard for long runs (a DeiT-S image).
    Returns the report plus per run ``expected_logits``, ``bit_exact``, ``expected_overflows`` (the reference's
    saturation count, which the design's OVERFLOWS register must equal) and the reference ``trace``."""
    from tokensift.quant.accel.executor import run

    sets = [registers] if register_sets is None else list(register_sets)
    end = max(max(r.memory_base + len(image), r.input_base + max(map(len, inputs)), r.logits_base + 64)
              for r in sets)
    dram = bytearray(end + (-end % 64))
    base = sets[0].memory_base
    if any(r.memory_base != base for r in sets):
        raise ValueError("every register set must place the image at the same MEMORY_BASE")
    dram[base:base + len(image)] = image
    runs, expected = [], []
    for regs in sets:
        classes = None
        for data in inputs:
            ref = bytearray(dram)
            ref[regs.input_base:regs.input_base + len(data)] = data
            result = run(ref, regs)
            classes = len(result.logits)
            expected.append(result)
            runs.append({"registers": regs.encode(), "input": data.hex(), "logits_base": regs.logits_base,
                         "classes": classes, "max_cycles": max_cycles})
    report = run_accelerator(cfg, dram, runs, latency=latency, pause=pause, seed=seed, op_timing=op_timing,
                             build_dir=build_dir, waves=waves)
    for got, want in zip(report["runs"], expected, strict=True):
        got["expected_logits"] = [int(v) for v in want.logits]
        got["bit_exact"] = got["logits"] == got["expected_logits"] and got["fault"] == 0
        got["expected_overflows"] = want.counter.total
        got["trace"] = want.trace
    report["bit_exact"] = all(r["bit_exact"] for r in report["runs"])
    return report
