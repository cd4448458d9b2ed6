"""Resources of the whole-model accelerator (:class:`tokensift.hw.accel.top.Accelerator`), next to its generator.
Cycles are :mod:`tokensift.hw.accel.cycles`.

The design is the sum of its parts (:func:`parts`), each counted by the rules of
:mod:`tokensift.hw.common.resources` (exact for DSP and block RAM):

* the engines that wrap a block take that block's own model with the parameters the engine builds it with:
  the GEMM engine (:mod:`tokensift.hw.gemm.resources` of :func:`~tokensift.hw.accel.op_gemm.gemm_config`),
  the attention core, the LayerNorm, GELU, residual-add (also in the position embedding), token-mean units,
  the token selector and the score combiner, the AXI4 reader and writer and the AXI4-Lite register file;
* each engine's own memories (:func:`memories`): its :class:`~tokensift.hw.accel.rows.RowReader` FIFOs, the
  patch-embedding transposers and activation FIFO of the GEMM engine, the LayerNorm gamma words, the token
  means, the AS-ViT head weights;
* each engine's own multipliers: the AS-ViT squares of the selection engine (``lanes`` signed 8 x 8) and the
  position embedding's record size ``k x m`` (16 x 16 unsigned); the token buffers' word addresses
  ``tile x words`` are shifts and adds (no DSP);
* the token buffers: one memory per buffer and bank with a write enable per element (``granularity``), the
  buffers the residual add reads twice (:data:`~tokensift.hw.accel.buffers.SECOND_READ`) once per read port,
  and a register behind each memory's read word (:func:`read_register_bits`). These are the behavioural
  buffers the Yosys baselines synthesize; an ECP5 place-and-route build has the same block RAMs with that
  register inside them (:func:`tokensift.hw.common.ecp5.dp16kd_memory`), so its flip-flop count is lower.

LUT and FF: the parts' own models plus the ``accelerator`` fit (``tokensift/data/lut_ff_fit.json``) over
:func:`features`, the engines' control and the multiplexers that hand the shared ports to one engine at a time
(the glue that no block model sees), fitted from the whole top's Yosys baselines
(``bench/synth_baselines.py --block accelerator``, then ``bench/fit_cost_model.py``).

>>> from tokensift.commands.block_accelerator import model_envelope
>>> cfg = AccelConfig(envelope=model_envelope("vit_mnist_patch4_28"), banks=2, lanes=8, gemm_cols=64)
>>> sorted(parts(cfg, "ecp5"))[:4]
['attention', 'axi_lite', 'axi_read', 'axi_write']
>>> exact(cfg, "ecp5").dsp == sum(p.dsp for p in parts(cfg, "ecp5", fitted_lut_ff=False).values())
True
"""

from __future__ import annotations

from tokensift.hw.accel.buffers import SECOND_READ
from tokensift.hw.accel.config import AccelConfig
from tokensift.hw.accel.rows import DEPTH as READER_DEPTH
from tokensift.hw.common.resources import (
    MemoryMap,
    MissingFitError,
    Resources,
    check_family,
    fitted,
    map_memory,
    multiplier_dsps,
)
from tokensift.quant.accel.isa import Buffer

__all__ = ["BLOCK", "AccelConfig", "memories", "read_register_bits", "attention_copy_bits", "features", "parts", "exact", "fit_base",
           "resources", "estimate", "build", "params_to_dict", "params_from_dict", "baseline_grid", "grid_config", "GRID_FAMILIES",
           "QUICK_CONFIGS", "MODEL"]

BLOCK = "accelerator"

#: the selection engine's AS-ViT squares: int8 head outputs (``op_select``'s ``x_q``), 15-bit products
_SQUARE_BITS = 8
#: each engine's row readers (:class:`~tokensift.hw.accel.rows.RowReader`)
_READERS = {"gemm": 0, "pos_embed": 1, "layernorm": 1, "token_mean": 1, "attention": 1, "residual": 2, "gelu": 1,
            "select": 1, "logits": 1}


def _check(cfg) -> AccelConfig:
    if not isinstance(cfg, AccelConfig):
        raise TypeError(f"config must be an AccelConfig, not {type(cfg).__name__}")
    return cfg


def _reader_width(cfg: AccelConfig) -> int:
    from tokensift.hw.accel.rows import word_layout

    return word_layout(cfg).size


def memories(cfg: AccelConfig, family: str) -> dict[str, tuple[MemoryMap, int]]:
    """The memories the accelerator's own modules declare (the wrapped blocks' are in their models), by
    name: ``(map of one memory, how many)``."""
    from tokensift.hw.accel.op_gemm import _depth as act_depth
    from tokensift.hw.accel.op_layernorm import layernorm_config
    from tokensift.hw.accel.op_token_mean import token_mean_params
    from tokensift.quant.stages.evit import HEAD_WEIGHT_FRAC

    cfg = _check(cfg)
    check_family(family)
    env = cfg.envelope
    R, L, W = cfg.banks, cfg.lanes, cfg.axi.data_bytes
    out: dict[str, tuple[MemoryMap, int]] = {}
    for b in Buffer:
        g = cfg.geometry(b)
        reads = 2 if b in SECOND_READ else 1  # memory_libmap replicates the memory per read port
        out[f"buffer_{b.name.lower()}"] = (map_memory(g.bits * L, g.depth, family=family, granularity=g.bits),
                                           R * reads)
    # each row reader's FIFO (a SyncFIFOBuffered: a memory one entry shallower), by engine
    fifo = map_memory(_reader_width(cfg), READER_DEPTH - 1, family=family)
    out.update({f"{engine}_row_readers": (fifo, n) for engine, n in _READERS.items() if n})
    # the GEMM engine: the patch embedding's transposer (two halves of a token tile's patches per bank) and
    # the activation path's FIFO (a SyncFIFOBuffered: a memory one entry shallower)
    pdw = env.patch_dim // W
    out["gemm_transposer"] = (map_memory(8 * W, 2 * pdw, family=family), R)
    out["gemm_act_fifo"] = (map_memory(8 * R * max(L, W), act_depth(cfg) - 1, family=family), 1)
    unit = layernorm_config(cfg)
    out["layernorm_gamma"] = (map_memory(unit.lanes * unit.gamma_bits, unit.beats_max, family=family), 1)
    tm = token_mean_params(cfg)
    out["token_mean_means"] = (map_memory(tm.in_layout.size, -(-tm.c_max // L), family=family), 1)
    wmax = -(-env.max_tokens // L)
    out["select_head_weights"] = (map_memory((HEAD_WEIGHT_FRAC + 1) * L, env.heads * wmax, family=family,
                                             granularity=HEAD_WEIGHT_FRAC + 1), 1)
    return out


def read_register_bits(cfg: AccelConfig) -> int:
    """Flip-flops behind the token buffers' block RAMs: every memory's whole read word, once per read port
    (:class:`~tokensift.hw.accel.buffers.TokenBuffers`)."""
    cfg = _check(cfg)
    return sum(cfg.banks * (2 if b in SECOND_READ else 1) * cfg.lanes * cfg.geometry(b).bits for b in Buffer)


def attention_copy_bits(cfg: AccelConfig) -> int:
    """Flip-flops the attention engine adds per core copy beyond the first (the fit's shapes have one): two
    frame descriptors (destination, head word, rows, class row), the frame counts sent and written (O rows,
    class row) and the copy's output row, chunk and class column counters
    (:class:`~tokensift.hw.accel.op_attention.AttentionOpEngine`)."""
    cfg = _check(cfg)
    desc = 4 + cfg.word_bits + cfg.row_bits + cfg.tile_bits + max(1, (cfg.banks - 1).bit_length())
    chunks = cfg.envelope.head_dim // cfg.lanes
    per_copy = 2 * desc + 3 * 2 + 2 * cfg.row_bits + max(1, (chunks - 1).bit_length())
    return (cfg.attention_cores - 1) * per_copy


def _dsps(cfg: AccelConfig, family: str) -> dict[str, int]:
    """DSPs of the accelerator's own multipliers, by part."""
    squares = cfg.lanes * multiplier_dsps(_SQUARE_BITS, _SQUARE_BITS, family=family,
                                          y_bits=2 * _SQUARE_BITS - 1)
    record = multiplier_dsps(16, 16, family=family, signed=False)  # POS_EMBED's k x m
    return {"select": squares, "pos_embed": record}


def _blocks(cfg: AccelConfig, family: str, fitted_lut_ff: bool) -> dict[str, Resources]:
    """The wrapped blocks' own models, by part."""
    from tokensift.hw.accel import op_attention, op_gelu, op_gemm, op_layernorm, op_select, op_token_mean
    from tokensift.hw.accel.regmap import accel_regmap
    from tokensift.hw.attention import resources as attention
    from tokensift.hw.axi import lite_resources, reader_resources, writer_resources
    from tokensift.hw.gemm import resources as gemm
    from tokensift.hw.score_combiner import resources as combiner
    from tokensift.hw.selector import resources as selector
    from tokensift.hw.vector import (
        gelu_resources,
        layernorm_resources,
        residual_resources,
        token_mean_resources,
    )
    from tokensift.hw.vector.residual import ResidualParams
    from tokensift.quant.fixed import FixedFormat

    def model(mod, params):
        return mod.resources(params, family) if fitted_lut_ff else mod.exact(params, family)

    add = ResidualParams(lanes=cfg.lanes, res=FixedFormat(bits=cfg.envelope.res_bits))
    return {
        "gemm": model(gemm, op_gemm.gemm_config(cfg)),
        "attention": model(attention, op_attention.core_params(cfg)),
        "layernorm": model(layernorm_resources, op_layernorm.layernorm_config(cfg)),
        "gelu": model(gelu_resources, op_gelu.unit_params(cfg)),
        "residual": model(residual_resources, add),
        "pos_embed": model(residual_resources, add),
        "token_mean": model(token_mean_resources, op_token_mean.token_mean_params(cfg)),
        "select": (model(selector, op_select._selector_params(cfg))
                   + model(combiner, op_select._combiner_params(cfg))),
        "axi_read": model(reader_resources, cfg.axi),
        "axi_write": model(writer_resources, cfg.axi),
        "axi_lite": model(lite_resources, accel_regmap()),
    }


def _part_of(memory: str) -> str:
    """The part one of :func:`memories` belongs to: ``buffer_*`` the token buffers, the others their engine."""
    if memory.startswith("buffer_"):
        return "buffers"
    return next(engine for engine in _READERS if memory.startswith(f"{engine}_"))


def features(cfg: AccelConfig, family: str) -> dict[str, float]:
    """Structural sizes of the glue no block model covers, the ``accelerator`` LUT/FF fit is linear in:
    ``port_bits`` (``banks x lanes`` elements of :data:`~tokensift.hw.accel.config.ELEMENT_BITS`: the buffers'
    registered read data selected over the buffers, the write data and masks multiplexed over the engines, the
    engines' element datapaths around their units: the GEMM engine's activation rotation, the selection
    engine's squares) and ``control`` (the sequencer, each engine's op latch, record checks and counters, the
    DMA words multiplexed over the engines: a constant)."""
    from tokensift.hw.accel.config import ELEMENT_BITS

    cfg = _check(cfg)
    check_family(family)
    return {"port_bits": float(cfg.banks * cfg.lanes * ELEMENT_BITS), "control": 1.0}


def parts(cfg: AccelConfig, family: str, *, fitted_lut_ff: bool = True, glue: bool = True) -> dict[str, Resources]:
    """Resources by part: every engine (its wrapped block, its own memories, row-reader FIFOs and multipliers),
    the token buffers, the AXI DMAs, the register file and (with ``fitted_lut_ff``) the ``glue`` LUT/FF fit.
    Without ``fitted_lut_ff`` only the rule-based counts (DSP, block RAM, LUT RAM, the memories' soft logic)."""
    cfg = _check(cfg)
    check_family(family)
    out = {name: Resources() for name in (*_READERS, "buffers", "axi_read", "axi_write", "axi_lite")}
    for name, res in _blocks(cfg, family, fitted_lut_ff).items():
        out[name] = out[name] + res
    for name, (mem, count) in memories(cfg, family).items():
        part = _part_of(name)
        out[part] = out[part] + mem.resources * count
    for name, dsp in _dsps(cfg, family).items():
        out[name] = out[name] + Resources(dsp=dsp)
    out["buffers"] = out["buffers"] + Resources(ff=read_register_bits(cfg))
    out["attention"] = out["attention"] + Resources(ff=attention_copy_bits(cfg))
    if fitted_lut_ff and glue:
        lut, ff = fitted(BLOCK, family, features(cfg, family))
        out["glue"] = Resources(lut=lut, ff=ff)
    return out


def exact(cfg: AccelConfig, family: str) -> Resources:
    """The rule-based part: DSPs, block RAM, LUT RAM and the memories' soft logic."""
    return sum(parts(cfg, family, fitted_lut_ff=False).values(), Resources())


def fit_base(cfg: AccelConfig, family: str) -> Resources:
    """What the ``accelerator`` LUT/FF fit adds the glue to: every part with its own fitted model, no glue."""
    return sum(parts(cfg, family, glue=False).values(), Resources())


def resources(cfg: AccelConfig, family: str) -> Resources:
    """DSP and block RAM (exact), LUT and FF (the parts' models plus the fitted glue) of the accelerator."""
    return sum(parts(cfg, family).values(), Resources())


def build(cfg: AccelConfig):
    from tokensift.hw.accel.top import Accelerator

    return Accelerator(config=_check(cfg))


def params_to_dict(cfg: AccelConfig) -> dict:
    return _check(cfg).as_dict()


def params_from_dict(d: dict) -> AccelConfig:
    from tokensift.hw.axi.config import AxiDmaConfig
    from tokensift.quant.accel.image import Envelope

    d = dict(d)
    return AccelConfig(envelope=Envelope(**d.pop("envelope")), axi=AxiDmaConfig(**d.pop("axi")), **d)


#: the model whose envelope the baselines are synthesized for (``tokensift generate accelerator --model``)
MODEL = "vit_mnist_patch4_28"
#: the configurations synthesized for the baselines: (name, shape as the CLI's options, families); a synthesis
#: of the whole top takes minutes, so the other families only for the demo's shape
_GRID = [
    # the demo's (README): --banks 4 --gemm-cols 32 --lanes 16 --axi-bytes 16
    ("demo", dict(banks=4, gemm_cols=32, lanes=16, axi_bytes=16), ("ecp5", "xc7", "xcup")),
    # the CLI's defaults: --banks 2 --gemm-cols 64 --lanes 8 --axi-bytes 8
    ("default", dict(banks=2, gemm_cols=64, lanes=8, axi_bytes=8), ("ecp5",)),
    ("b2_c16_l4_w8", dict(banks=2, gemm_cols=16, lanes=4, axi_bytes=8), ("ecp5",)),
    # the smallest shape the envelope allows (the live synthesis test's)
    ("b1_c8_l2_w8", dict(banks=1, gemm_cols=8, lanes=2, axi_bytes=8), ("ecp5",)),
    # the demo's planned design for PYNQ-Z2 (the shape its Verilator run has): a second Xilinx shape for the glue fit
    ("pynq_z2", dict(banks=4, gemm_cols=16, lanes=8, axi_bytes=8), ("xc7",)),
    # ... and the one it plans with two GEMM products per DSP48 (the xc7 glue fit's third shape)
    ("pynq_z2_packed", dict(banks=4, gemm_cols=32, lanes=8, axi_bytes=16, pack_pairs=True), ("xc7",)),
]
#: name -> the families it is synthesized for
GRID_FAMILIES = {name: families for name, _, families in _GRID}
#: the configuration tests/hw/test_accel_resources.py synthesizes live
QUICK_CONFIGS = ["b1_c8_l2_w8"]


def grid_config(shape: dict) -> AccelConfig:
    from tokensift.commands.block_accelerator import model_envelope
    from tokensift.hw.axi.config import AxiDmaConfig

    shape = dict(shape)
    return AccelConfig(envelope=model_envelope(MODEL), axi=AxiDmaConfig(data_bytes=shape.pop("axi_bytes")), **shape)


def baseline_grid() -> list[tuple[str, dict]]:
    return [(name, params_to_dict(grid_config(shape))) for name, shape, _ in _GRID]


def estimate(cfg: AccelConfig, *, device=None) -> dict:
    """The manifest's ``estimated_resources``: the model's counts on ECP5 and on the family of ``device`` (a
    :class:`tokensift.devices.Device` or None), and for a device its capacity, the utilization of each kind and
    whether the design fits.

    >>> from tokensift.commands.block_accelerator import model_envelope
    >>> from tokensift.devices import get_device
    >>> cfg = AccelConfig(envelope=model_envelope("vit_mnist_patch4_28"), banks=1, lanes=2, gemm_cols=8)
    >>> e = estimate(cfg, device=get_device("ecp5-85f"))
    >>> sorted(e["families"]), e["device"]["fits"]
    (['ecp5'], True)
    """
    cfg = _check(cfg)
    families = ["ecp5"] + ([device.family] if device is not None and device.family != "ecp5" else [])
    out = {"model": "tokensift.hw.accel.resources: DSP and block RAM exact as Yosys counts them, LUT and FF "
                    "estimated (within 10% of Yosys on tests/hw/baselines/accelerator.json)",
           "families": {}}
    for f in families:
        try:
            out["families"][f] = resources(cfg, f).as_dict(f)
        except MissingFitError:  # the hard blocks still count exactly; LUT and FF are said to be unknown
            out["families"][f] = {**exact(cfg, f).as_dict(f), "lut": None, "ff": None,
                                  "note": f"LUT and FF not estimated: no {f} synthesis baseline of the accelerator"}
    if device is not None:
        used = out["families"][device.family]
        capacity = device.capacity()
        util = {k: round(used[k] / capacity[k], 4) for k in capacity if capacity[k] and used.get(k) is not None}
        missing = any(used.get(k) and not capacity[k] for k in capacity)  # a kind the device does not have
        over = missing or any(u > 1 for u in util.values())
        known = all(used.get(k) is not None for k in capacity)
        out["device"] = {"name": device.name, "part": device.part, "capacity": capacity, "utilization": util,
                         "fits": False if over else (True if known else None)}
    return out
