"""The accelerator's Python flow, in the shape hls4ml users know: **configure** a calibrated integer model for a
design shape, **estimate** its cycles with the cost model, **generate** the Verilog, **simulate** real images
through Verilator bit-exact.

>>> project = configure(int_model, banks=2, lanes=8, gemm_cols=64)          # doctest: +SKIP
>>> project.estimate(images)["cycles"]                                       # doctest: +SKIP
>>> project.generate("build/accel")                                          # doctest: +SKIP
>>> report = project.simulate(images, register_sets=[project.registers(), project.registers(method="dense")])
...                                                                          # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tokensift.hw.accel.config import AccelConfig
from tokensift.hw.axi.config import AxiDmaConfig

__all__ = ["configure", "Project", "TOPLEVEL", "shape_from_choice", "useful_macs"]

TOPLEVEL = "tokensift_accel"


@dataclass
class Project:
    """One model compiled for one design shape: the :class:`AccelConfig`, the compiled memory image and its
    default registers (:class:`tokensift.quant.accel.compiler.Compiled`)."""

    config: AccelConfig
    compiled: object
    int_model: object = None
    #: the decoded memory image, once an estimate needed it
    _decoded: object = field(default=None, init=False, repr=False, compare=False)

    @property
    def image(self) -> bytes:
        return self.compiled.image

    def registers(self, **changes):
        """The compiled default registers with ``changes`` (``Registers.replace``)."""
        return self.compiled.registers.replace(**changes) if changes else self.compiled.registers

    def inputs(self, images) -> list[bytes]:
        """Float images (B, C, H, W) as the bytes of the image's input region, as the host writes them."""
        from tokensift.quant.accel.image import decode_image, input_bytes, quantize_input

        return [input_bytes(codes) for codes in quantize_input(decode_image(self.image), images)]

    def traces(self, images, *, registers=None) -> list:
        """Each image's run in the reference sequencer (:func:`tokensift.hw.accel.cycles.image_trace`): the
        same on every design shape, so :meth:`estimate` of another shape of this model can reuse it."""
        from tokensift.hw.accel.cycles import image_trace

        regs = registers or self.registers()
        return [image_trace(self.image, regs, data) for data in self.inputs(images)]

    def estimate(self, images=None, *, registers=None, latency: int = 8, traces=None) -> dict:
        """The cost model's cycles of each image (:func:`tokensift.hw.accel.cycles.trace_cycles`), from the
        images or from their :meth:`traces` (of this model, under the same run-time registers, on any
        shape)."""
        from tokensift.hw.accel.cycles import trace_cycles

        if (images is None) == (traces is None):
            raise ValueError("estimate needs either images or their traces, not both")
        regs = registers or self.registers()
        traces = traces if traces is not None else self.traces(images, registers=regs)
        if self._decoded is None:
            from tokensift.quant.accel.image import decode_image

            self._decoded = decode_image(self.image)
        per = [trace_cycles(self.config, self.image, regs, tr, latency=latency, decoded=self._decoded)
               for tr in traces]
        return {"cycles": [p["cycles"] for p in per], "images": per}

    def resources(self, family: str = "ecp5"):
        """The design's :class:`~tokensift.hw.common.resources.Resources` on ``family`` (``ecp5``, ``xc7``,
        ``xcup``): DSP and block RAM exact as Yosys counts them, LUT and FF estimated
        (:mod:`tokensift.hw.accel.resources`)."""
        from tokensift.hw.accel.resources import resources

        return resources(self.config, family)

    def generate(self, out_dir) -> dict:
        """``out_dir/tokensift_accel.v`` and its manifest (the design's shape, envelope, opcodes, registers and
        estimated ECP5 resources)."""
        from tokensift.hw.accel.resources import estimate
        from tokensift.hw.accel.top import Accelerator
        from tokensift.hw.common.manifest import write_outputs

        top = Accelerator(config=self.config)
        return write_outputs(top, toplevel=TOPLEVEL, block="accelerator", parameters=self.config.as_dict(),
                             out_dir=out_dir, extra={"opcodes": [op.name for op in top.opcodes],
                                                     "registers": top.regmap.as_dict(),
                                                     "estimated_resources": estimate(self.config)})

    def simulate(self, images, *, register_sets=None, latency: int = 8, pause: float = 0.0, seed: int = 1,
                 build_dir=None, waves=False, max_cycles: int | None = None) -> dict:
        """Every image under every register set through the Verilator model, each run checked against the
        reference sequencer (:func:`tokensift.sim.accel_runs.simulate_model`)."""
        from tokensift.sim.accel_runs import simulate_model

        return simulate_model(self.config, self.image, self.registers(), self.inputs(images),
                              register_sets=register_sets, latency=latency, pause=pause, seed=seed,
                              build_dir=build_dir, waves=waves, max_cycles=max_cycles)

    def measure(self, images, *, register_sets=None, latency: int = 10, pause: float = 0.0, seed: int = 1,
                clock_mhz: float = 100.0, build_dir=None, waves=False, max_cycles: int | None = None) -> dict:
        """:meth:`simulate`, summarised per register set: bit-exactness, predictions, Verilator cycles next to
        the cost model's (equal at ``pause=0``) and the model's engine cycles per opcode, MAC utilization of the design's peak and latency at
        ``clock_mhz``."""
        from tokensift.hw.accel.cycles import image_cycles

        sets = list(register_sets or [self.registers()])
        report = self.simulate(images, register_sets=sets, latency=latency, pause=pause, seed=seed,
                               build_dir=build_dir, waves=waves, max_cycles=max_cycles)
        inputs = self.inputs(images)
        cfg = self.config
        peak = cfg.peak_macs_per_cycle
        per_set = []
        for i, regs in enumerate(sets):
            runs = report["runs"][i * len(inputs):(i + 1) * len(inputs)]
            cycles = [r["cycles"] for r in runs]
            models = [image_cycles(cfg, self.image, regs, data, latency=latency) for data in inputs]
            expected = [mdl["cycles"] for mdl in models]
            by_op: dict[str, int] = {}
            for _, op, c in models[0]["ops"]:
                by_op[op] = by_op.get(op, 0) + c
            macs = [useful_macs(r["trace"], cfg.envelope.head_dim) for r in runs]
            per_set.append({
                "registers": regs.to_json(), "bit_exact": all(r["bit_exact"] for r in runs),
                "predictions": [max(range(len(r["logits"])), key=r["logits"].__getitem__) for r in runs],
                "faults": [r["fault"] for r in runs], "cycles": cycles, "expected_cycles": expected,
                "cycles_equal_model": cycles == expected, "macs": macs,
                "model_cycles_by_op": dict(sorted(by_op.items(), key=lambda kv: -kv[1])),  # the first image's
                "mac_utilization": [round(u / (peak * c), 4) for u, c in zip(macs, cycles, strict=True)],
                "sim_seconds": [r.get("sim_seconds") for r in runs],
                "latency_ms": [round(c / (clock_mhz * 1e3), 4) for c in cycles]})
        return {"bit_exact": report["bit_exact"], "sets": per_set, "peak_macs_per_cycle": peak,
                "clock_mhz": clock_mhz, "dram_latency": latency, "build_dir": report["build_dir"],
                "wall_s": report.get("wall_s")}


def useful_macs(trace, head_dim: int) -> int:
    """The multiply-accumulates an image's program needs (the reference sequencer's ``trace``): every GEMM
    and patch embedding ``n x k x m``, every attention head ``2 n^2 head_dim``; skipped ops count nothing."""
    total = 0
    for e in trace:
        if e.get("skipped"):
            continue
        if e["op"] in ("GEMM", "PATCH_EMBED"):
            total += e["n"] * e["k"] * e["m"]
        elif e["op"] == "ATTENTION":
            total += 2 * e["n"] * e["n"] * head_dim
    return total


def shape_from_choice(hw: dict, *, head_dim: int) -> dict:
    """The accelerator shape closest to a co-optimizer choice (``CostEvaluator``'s ``hw`` dict): the GEMM
    engine ``linear_rows x linear_lanes / linear_rows`` (rows rounded up to a power of two, the token banks),
    weights streamed on an AXI word of at least ``weight_rate`` bytes, and the choice's attention cores: its
    ``heads_parallel`` as ``attention_cores`` (at most 16), each with the largest power of two of lanes that
    is at most the choice's ``lanes`` and divides the head dimension."""
    rows = int(hw.get("linear_rows") or 1)
    banks = 1 << max(0, (rows - 1).bit_length())
    axi_bytes = 8 if int(hw.get("weight_rate") or 8) <= 8 else 16
    cols = max(axi_bytes, -(-int(hw["linear_lanes"]) // banks))
    cols += -cols % axi_bytes
    lanes = min(1 << (int(hw["lanes"]).bit_length() - 1), head_dim & -head_dim)
    cores = min(16, int(hw.get("heads_parallel") or 1))
    return {"banks": banks, "lanes": lanes, "gemm_cols": cols, "axi": AxiDmaConfig(data_bytes=axi_bytes),
            "attention_cores": cores}


def configure(int_model, *, banks: int = 2, lanes: int = 8, gemm_cols: int = 64,
              axi: AxiDmaConfig | None = None, pack_pairs: bool = False, attention_cores: int = 1) -> Project:
    """Compile a calibrated :class:`~tokensift.quant.integer_model.IntegerViT` for a design of ``banks`` token
    banks (the GEMM engine's rows), ``lanes`` elements per buffer word and ``gemm_cols`` GEMM columns, with
    weights streamed one AXI word (``axi.data_bytes``) per beat (``pack_pairs``: two GEMM products per DSP48;
    the image does not change; ``attention_cores``: copies of the attention core, nor does it)."""
    from tokensift.quant.accel import compile_model
    from tokensift.quant.accel.image import decode_image

    axi = axi or AxiDmaConfig()
    compiled = compile_model(int_model, gemm_cols=gemm_cols, stream_bytes=axi.data_bytes)
    env = decode_image(compiled.image).envelope
    return Project(AccelConfig(envelope=env, banks=banks, lanes=lanes, gemm_cols=gemm_cols, axi=axi,
                               pack_pairs=pack_pairs, attention_cores=attention_cores), compiled, int_model)
