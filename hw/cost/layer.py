"""Cost of a whole encoder layer and of a whole model for a token schedule (device independent).

The accelerator is one attention unit (:class:`tokensift.hw.attention.core.Attention` with
``heads_parallel`` cores), one token selector (:class:`tokensift.hw.selector.core.Selector`, present when the
model prunes), the linear engine (:mod:`tokensift.hw.cost.linear`: the GEMM engine of
:mod:`tokensift.hw.gemm`, weights streamed from DRAM) and the streaming vector units of :mod:`tokensift.hw.vector`
(LayerNorm, GELU, residual add; ``rows`` lanes each, the engine's output beat). They run one after the other, layer by layer; the resources are those of the three units
(each instantiated once and reused by every layer). Per encoder layer ``b`` with ``N`` tokens in attention
and ``M`` in the MLP::

    norm1      N tokens of dim          LayerNorm unit, a pass over the residual stream (its output is the
                                        next job's activations, loaded as it is produced)
    qkv        N x dim -> 3 dim         linear engine
    attention  heads frames of N        attention unit (heads_parallel cores)
    proj       N x dim -> dim           linear engine
    residual1                           residual adder on proj's output beats: its pipeline latency
    selector   where a stage prunes     token selector + its predictor's steps on the linear engine and the
                                        vector units (:mod:`tokensift.hw.cost.predictor`)
    norm2      M tokens of dim          LayerNorm unit
    fc1        M x dim -> hidden        linear engine
    gelu                                GELU unit on fc1's output beats (the activations of fc2): its latency
    fc2        M x hidden -> dim        linear engine
    residual2                           residual adder on fc2's output beats: its latency

plus the patch embedding, the final LayerNorm (the class token) and the classifier head. The token schedule (how many tokens each layer sees,
where the selectors sit and what they keep) comes from :mod:`tokensift.sw` (:func:`model_schedule`), the
same one its FLOPs counter uses.

>>> cost = ModelCost.from_name("deit_small_patch16_224", method="dynamicvit", keep_ratio=0.7,
...                            hw=HwConfig(lanes=16))
>>> s = cost.schedule()
>>> s.attn_tokens[:4], [(st.block, st.n_in, st.n_out) for st in s.stages]
([197, 197, 197, 138], [(3, 197, 138), (6, 138, 97), (9, 97, 68)])
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tokensift.checks import check_int
from tokensift.hw.common.resources import Resources, check_family
from tokensift.hw.cost.linear import (
    DEFAULT_WEIGHT_RATE,
    LinearParams,
    linear_cycles,
    linear_resources,
)
from tokensift.quant.select import Mode, SelectorParams

__all__ = ["HwConfig", "ModelDesc", "Stage", "Schedule", "ModelCost", "model_schedule", "VectorUnits",
           "vector_units", "LINEAR_GROUP"]

#: the units that scale with the linear engine's shape (the co-optimizer's "linear" unit is their sum)
LINEAR_GROUP = ("linear", "layernorm", "gelu", "residual", "token_mean")


@dataclass(frozen=True)
class VectorUnits:
    """The streaming units next to the linear engine (one of each, reused by every layer)."""

    layernorm: object
    gelu: object
    residual: object
    #: the token-mean unit of DynamicViT's (and SPViT's per-head) predictors; None when no predictor needs one
    token_mean: object = None


def vector_units(dim: int, *, rows: int, res_bits: int = 16, token_mean: tuple[int, int] | None = None
                 ) -> VectorUnits:
    """The vector units of a model of width ``dim`` next to an engine of ``rows`` rows: each takes ``rows``
    values per cycle (the engine's output beat is one channel of ``rows`` tokens, and a LayerNorm of
    ``rows`` lanes produces a token tile's activations as fast as the engine loads them); the LayerNorm
    and the residual adder work on the ``res_bits`` residual stream, the GELU on fc1's int8 outputs.
    ``token_mean``: ``(n_max, c_max)`` of the predictors' token means (none when None); ``rows`` lanes, at
    most 64."""
    from tokensift.hw.vector.gelu import GeluUnitParams
    from tokensift.hw.vector.layernorm_layout import LayerNormConfig
    from tokensift.hw.vector.residual import ResidualParams
    from tokensift.hw.vector.token_mean import TokenMeanParams
    from tokensift.quant.fixed import FixedFormat

    mean = None
    if token_mean is not None:
        n_max, c_max = token_mean
        mean = TokenMeanParams(lanes=min(64, rows), n_max=n_max, c_max=c_max)
    return VectorUnits(layernorm=LayerNormConfig(c_max=dim, lanes=rows, in_bits=res_bits),
                       gelu=GeluUnitParams(lanes=rows), residual=ResidualParams(lanes=rows, res=FixedFormat(bits=res_bits)),
                       token_mean=mean)


@dataclass(frozen=True, kw_only=True)
class HwConfig:
    """Hardware parameters of a whole-model accelerator.

    ``lanes``: multipliers of the attention core and of the linear engine, and features per beat of the
    selector (``linear_lanes`` / ``selector_lanes`` override the last two); ``heads_parallel``: attention
    cores; ``softmax``: the attention's softmax variant (its default when None). The linear engine is a
    ``linear_rows x (linear_lanes / linear_rows)`` GEMM array (rows default:
    :func:`tokensift.hw.cost.linear.default_rows`) fed ``weight_rate`` weight bytes per cycle from DRAM
    (default :data:`tokensift.hw.cost.linear.DEFAULT_WEIGHT_RATE`; the device's realistic bandwidth where
    a device is known).
    """

    lanes: int = 16
    heads_parallel: int = 1
    linear_lanes: int | None = None
    selector_lanes: int | None = None
    softmax: str | None = None
    linear_rows: int | None = None
    weight_rate: int | None = None

    def __post_init__(self):
        for name in ("lanes", "heads_parallel", "linear_lanes", "selector_lanes", "linear_rows", "weight_rate"):
            value = getattr(self, name)
            if value is None and name != "lanes" and name != "heads_parallel":
                continue
            check_int(name, value, low=1, numpy=False)


@dataclass(frozen=True)
class Stage:
    """One pruning stage: before (``pre``) or inside (``mid``) ``block``; ``n_in`` tokens enter, ``n_out``
    leave (class token and added tokens included); the hardware keeps ``kept`` and adds a package token
    when ``package``, by ``package_rule`` (``"sum"``: EViT's fused token and SPViT's released package token;
    ``"mean"``: SPViT's normalised option)."""

    index: int
    block: int
    site: str
    n_in: int
    n_out: int
    package: bool
    mode: Mode
    selector: object = field(repr=False, compare=False)
    package_rule: str = "sum"

    @property
    def kept(self) -> int:
        return self.n_out - int(self.package)


@dataclass(frozen=True)
class Schedule:
    attn_tokens: list[int]
    mlp_tokens: list[int]
    stages: list[Stage]


def _adds_token(sel) -> bool:
    if hasattr(sel, "adds_package"):
        return bool(sel.adds_package())
    return bool(getattr(sel, "fuse_token", False)) and getattr(sel, "keep_ratio", 1.0) < 1.0


def package_rule(sel) -> str:
    """The selector's package rule for a stage's package token: SPViT's ``package`` option, else ``"sum"``."""
    rule = getattr(sel, "package", "sum")
    return rule if rule in ("sum", "mean") else "sum"


def _mode(sel) -> Mode:
    return Mode.THRESHOLD if hasattr(sel, "log_threshold") else Mode.TOPK


def _stage_inputs(attn: list, mlp: list, num_tokens, block: int, site: str):
    if site == "pre":
        return mlp[block - 1] if block > 0 else num_tokens
    return attn[block]


def _check_modelled(cfg) -> None:
    """The cost model describes ViT/DeiT backbones: one-convolution patch embedding, one head."""
    if cfg.embed_layer != "patch" or cfg.aux_head or cfg.residual_scale != 1.0:
        raise ValueError(f"the hardware cost model describes ViT/DeiT backbones (one-convolution patch "
                         f"embedding, one head), not {cfg.name}'s convolutional stem and auxiliary head")


@dataclass(frozen=True)
class ModelDesc:
    """What the cost needs to know about a ViT: sizes and its token selectors ``[(block, selector)]`` in
    stage order (a :mod:`tokensift.sw` model, or a registered configuration without its weights)."""

    name: str
    dim: int
    hidden: int
    depth: int
    heads: int
    num_patches: int
    patch_in: int
    num_classes: int
    selectors: tuple = ()

    @classmethod
    def from_model(cls, model) -> ModelDesc:
        from tokensift.sw.flops import FlopsSpec

        model = getattr(model, "module", model)
        cfg = getattr(model, "config", None)
        if cfg is not None:
            _check_modelled(cfg)
        spec = FlopsSpec.from_model(model)
        num_patches = spec.num_tokens - 1
        return cls(name=getattr(cfg, "name", type(model).__name__), dim=spec.dim, hidden=spec.hidden,
                   depth=spec.depth, heads=model.blocks[0].attn.num_heads, num_patches=num_patches,
                   patch_in=spec.patch_macs // (num_patches * spec.dim), num_classes=spec.head_macs // spec.dim,
                   selectors=tuple(model.stage_selectors()))

    @classmethod
    def from_name(cls, name: str, *, method: str = "none", keep_ratio: float | None = None,
                  **overrides) -> ModelDesc:
        """A registered model with ``method``'s selectors, as :func:`tokensift.sw.create_model` builds it,
        without initializing the backbone's weights when the method allows (methods with a ``prepare``
        step get the real model)."""
        from tokensift.sw.methods import get_method
        from tokensift.sw.registry import get_config

        spec = get_method(method)
        if spec.prepare is not None:
            from tokensift.sw import create_model

            return cls.from_model(create_model(name, method=method, keep_ratio=keep_ratio, **overrides))
        cfg = get_config(name, **overrides)
        _check_modelled(cfg)
        keep_ratio = _keep_ratio(method, keep_ratio)
        for loc in cfg.prune_locs:
            if not isinstance(loc, int) or not 0 < loc < cfg.depth:
                raise ValueError(f"pruning locations must be block indices in [1, {cfg.depth - 1}], "
                                 f"not {list(cfg.prune_locs)}")
        if spec.selectors_from_config is not None:
            built = spec.selectors_from_config(cfg, keep_ratio)
        else:
            built = spec.build_selectors(cfg.embed_dim, cfg.num_patches, keep_ratio, tuple(cfg.prune_locs))
        selectors = sorted(built.items())
        for stage, (_, sel) in enumerate(selectors):
            sel.stage = stage  # stages are numbered in block order, as the model does
        return cls(name=name, dim=cfg.embed_dim, hidden=int(cfg.embed_dim * cfg.mlp_ratio), depth=cfg.depth,
                   heads=cfg.num_heads, num_patches=cfg.num_patches,
                   patch_in=cfg.in_chans * cfg.patch_size**2, num_classes=cfg.num_classes,
                   selectors=tuple(selectors))

    @property
    def num_tokens(self) -> int:
        return self.num_patches + 1

    def flops_spec(self):
        """The :class:`tokensift.sw.flops.FlopsSpec` of this model (same schedule as the FLOPs counter)."""
        from tokensift.sw.flops import FlopsSpec

        return FlopsSpec(dim=self.dim, hidden=self.hidden, depth=self.depth, num_tokens=self.num_tokens,
                         patch_macs=self.num_patches * self.patch_in * self.dim,
                         head_macs=self.dim * self.num_classes,
                         stages=[(b, sel.site, sel) for b, sel in self.selectors])

    def stage_selectors(self):
        return list(self.selectors)

    @property
    def blocks(self):
        return range(self.depth)


def _keep_ratio(method: str, keep_ratio):
    # the same defaults and checks as tokensift.sw.create_model
    from tokensift.sw.registry import DEFAULT_KEEP_RATIO
    from tokensift.sw.selection import check_keep_ratio

    if method == "none":
        if keep_ratio is not None and check_keep_ratio(keep_ratio) != 1.0:
            raise ValueError(f"the dense model (method 'none') keeps every token; keep ratio must be 1, "
                             f"not {keep_ratio}")
        return 1.0
    return check_keep_ratio(DEFAULT_KEEP_RATIO if keep_ratio is None else keep_ratio)


def model_schedule(model) -> Schedule:
    """The static token schedule (the selectors' keep ratios) of a model or :class:`ModelDesc`, by
    :func:`tokensift.sw.flops.static_schedule`."""
    from tokensift.sw.flops import static_schedule

    desc = model if isinstance(model, ModelDesc) else ModelDesc.from_model(model)
    attn, mlp = static_schedule(desc)
    stages = []
    for s, (block, sel) in enumerate(desc.selectors):
        n_in = _stage_inputs(attn, mlp, desc.num_tokens, block, sel.site)
        n_out = attn[block] if sel.site == "pre" else mlp[block]
        stages.append(Stage(s, block, sel.site, int(n_in), int(n_out), _adds_token(sel), _mode(sel), sel,
                            package_rule(sel)))
    return Schedule([int(n) for n in attn], [int(n) for n in mlp], stages)


class ModelCost:
    """Resources and exact cycles of a ViT (a :mod:`tokensift.sw` model or a :class:`ModelDesc`) on the
    accelerator ``hw``."""

    def __init__(self, model, hw: HwConfig | None = None):
        self.hw = hw if hw is not None else HwConfig()
        if not isinstance(self.hw, HwConfig):
            raise TypeError(f"hw must be a HwConfig, not {type(self.hw).__name__}")
        self.desc = model if isinstance(model, ModelDesc) else ModelDesc.from_model(model)
        self.spec = self.desc.flops_spec()
        self.heads = self.desc.heads
        self.head_dim = self.spec.dim // self.heads
        self.num_patches = self.desc.num_patches
        self.patch_in = self.desc.patch_in
        self.num_classes = self.desc.num_classes
        sched = self.schedule()
        self.n_max = max([self.spec.num_tokens, *sched.attn_tokens, *sched.mlp_tokens,
                          *(st.n_in for st in sched.stages)])
        self.attention = self._attention_params(self.n_max)
        self.linear = LinearParams.for_macs(
            self.hw.linear_lanes or self.hw.lanes, rows=self.hw.linear_rows, max_tokens=self.n_max,
            in_max=max(self.spec.dim, self.spec.hidden, self.patch_in),
            out_max=max(3 * self.spec.dim, self.spec.hidden, self.num_classes),
            weight_rate=self.hw.weight_rate or DEFAULT_WEIGHT_RATE)
        from tokensift.hw.cost.predictor import predictor_ops

        means = [op for st in sched.stages for op in predictor_ops(st.selector, st.n_in, self.spec.dim)
                 if op.unit == "token_mean"]
        self.vector = vector_units(self.spec.dim, rows=self.linear.rows, token_mean=(
            (max(st.n_in for st in sched.stages), max(op.in_features for op in means)) if means else None))
        self.selector = None
        if sched.stages:
            self.selector = SelectorParams(n_max=max(st.n_in for st in sched.stages), dim=self.spec.dim,
                                           lanes=self.hw.selector_lanes or self.hw.lanes,
                                           package=any(st.package for st in sched.stages))

    @classmethod
    def from_name(cls, name: str, *, method: str = "none", keep_ratio: float | None = None,
                  hw: HwConfig | None = None, **overrides) -> ModelCost:
        return cls(ModelDesc.from_name(name, method=method, keep_ratio=keep_ratio, **overrides), hw)

    def _attention_params(self, n_max: int):
        from tokensift.quant.attention import AttentionParams

        kwargs = {"n_max": n_max, "head_dim": self.head_dim, "lanes": self.hw.lanes,
                  "heads_parallel": self.hw.heads_parallel}
        if self.hw.softmax is not None:
            kwargs["softmax"] = self.hw.softmax
        return AttentionParams(**kwargs)

    # -- the schedule ----------------------------------------------------------------------------------
    def schedule(self) -> Schedule:
        return model_schedule(self.desc)

    # -- cycles ----------------------------------------------------------------------------------------
    def attention_cycles(self, n_tokens: int) -> int:
        """One layer's attention: ``heads`` frames of ``n_tokens`` on the attention unit."""
        from tokensift.hw.attention.cycles import cycles

        return cycles(self.attention, n_tokens=int(n_tokens), heads=self.heads)

    def norm_cycles(self, n_tokens: int) -> int:
        """A LayerNorm pass over ``n_tokens`` tokens of the residual stream."""
        from tokensift.hw.vector.layernorm_cost import cycles

        return cycles(self.vector.layernorm, dim=self.spec.dim, n_tokens=int(n_tokens)) if n_tokens else 0

    def attn_part_cycles(self, n_tokens: int) -> dict[str, int]:
        parts = self.attn_linear_cycles(n_tokens)
        return {"norm1": parts["norm1"], "qkv": parts["qkv"], "attention": self.attention_cycles(n_tokens),
                "proj": parts["proj"], "residual1": parts["residual1"]}

    def attn_linear_cycles(self, n_tokens: int) -> dict[str, int]:
        """The attention half's parts on the linear engine and the vector units (all but the attention unit)."""
        from tokensift.hw.vector.residual import LATENCY as RESIDUAL_LATENCY

        d = self.spec.dim
        return {
            "norm1": self.norm_cycles(n_tokens),
            "qkv": linear_cycles(self.linear, n_tokens=n_tokens, in_features=d, out_features=3 * d),
            "proj": linear_cycles(self.linear, n_tokens=n_tokens, in_features=d, out_features=d),
            "residual1": RESIDUAL_LATENCY if n_tokens else 0,
        }

    def mlp_part_cycles(self, n_tokens: int) -> dict[str, int]:
        from tokensift.hw.vector.gelu import LATENCY as GELU_LATENCY
        from tokensift.hw.vector.residual import LATENCY as RESIDUAL_LATENCY

        d, h = self.spec.dim, self.spec.hidden
        return {
            "norm2": self.norm_cycles(n_tokens),
            "fc1": linear_cycles(self.linear, n_tokens=n_tokens, in_features=d, out_features=h),
            "gelu": GELU_LATENCY if n_tokens else 0,
            "fc2": linear_cycles(self.linear, n_tokens=n_tokens, in_features=h, out_features=d),
            "residual2": RESIDUAL_LATENCY if n_tokens else 0,
        }

    def stage_cycles(self, stage: Stage, n_in: int | None = None, n_out: int | None = None) -> dict[str, int]:
        """The selector frame and the predictor's steps of one stage (``n_in``/``n_out`` override)."""
        from tokensift.hw.cost.predictor import predictor_ops
        from tokensift.hw.selector.core import cycles

        n_in = stage.n_in if n_in is None else n_in
        n_out = stage.n_out if n_out is None else n_out
        kept = n_out - int(stage.package)
        sel = cycles(self.selector, n_tokens=int(n_in), kept=int(kept), mode=stage.mode, package=stage.package,
                     package_rule=stage.package_rule)
        ops = predictor_ops(stage.selector, int(n_in), self.spec.dim)
        return {"selector": sel, "predictor": self.predictor_cycles(ops)}

    def predictor_cycles(self, ops) -> int:
        """Cycles of a predictor's steps (:func:`tokensift.hw.cost.predictor.predictor_ops`), one after the
        other: GEMM jobs, LayerNorm and token-mean passes by their cycle models, each GELU its pipeline
        latency behind the job whose output beats it takes, the channel sums ``rows`` codes per cycle."""
        from tokensift.hw.vector.gelu import LATENCY as GELU_LATENCY
        from tokensift.hw.vector.layernorm_cost import cycles as layernorm_cycles
        from tokensift.hw.vector.token_mean import cycles as token_mean_cycles

        total = 0
        for op in ops:
            if op.unit == "linear":
                total += linear_cycles(self.linear, n_tokens=op.tokens, in_features=op.in_features,
                                       out_features=op.out_features)
            elif op.unit == "gelu":
                total += GELU_LATENCY
            elif op.unit == "layernorm":
                total += layernorm_cycles(self.vector.layernorm, dim=op.in_features, n_tokens=op.tokens)
            elif op.unit == "token_mean":
                total += token_mean_cycles(self.vector.token_mean, op.tokens, op.in_features)
            elif op.unit == "channel_sum":
                total += op.tokens * -(-op.in_features // self.linear.rows)
            else:
                raise ValueError(f"no unit runs a predictor step on {op.unit!r}")
        return total

    def fixed_cycles(self) -> dict[str, int]:
        """Patch embedding, the final LayerNorm (of the class token) and the classifier head."""
        return {
            "patch_embed": linear_cycles(self.linear, n_tokens=self.num_patches, in_features=self.patch_in,
                                         out_features=self.spec.dim),
            "norm": self.norm_cycles(1),
            "head": linear_cycles(self.linear, n_tokens=1, in_features=self.spec.dim,
                                  out_features=self.num_classes),
        }

    def per_block(self, schedule: Schedule | None = None) -> list[dict]:
        """Cycles of every encoder layer under ``schedule`` (default: the model's static one)."""
        s = schedule or self.schedule()
        by_block = {st.block: st for st in s.stages}
        rows = []
        for b in range(self.spec.depth):
            parts = dict(self.attn_part_cycles(s.attn_tokens[b]))
            st = by_block.get(b)
            if st is not None:
                parts.update(self.stage_cycles(st))
            parts.update(self.mlp_part_cycles(s.mlp_tokens[b]))
            rows.append({"block": b, "tokens": s.attn_tokens[b], "mlp_tokens": s.mlp_tokens[b],
                         "pruning": None if st is None else {"site": st.site, "n_in": st.n_in, "n_out": st.n_out},
                         "cycles": parts, "total": sum(parts.values())})
        return rows

    def cycles(self, schedule: Schedule | None = None) -> int:
        """Total cycles of one image."""
        return sum(r["total"] for r in self.per_block(schedule)) + sum(self.fixed_cycles().values())

    def clock(self, device, *, clock_mhz: float | None = None):
        """The :class:`tokensift.hw.cost.clock.Clock` these units run at on ``device``: measured on ECP5
        (the device clock capped by the units' Fmax after P&R), assumed on the Xilinx families."""
        from tokensift.hw.cost.clock import clock_for_cost

        return clock_for_cost(self, device, clock_mhz=clock_mhz)

    # -- resources -------------------------------------------------------------------------------------
    def units(self, family: str) -> dict[str, Resources]:
        """Resources of each unit on ``family``."""
        from tokensift.hw.attention.resources import resources as attention_resources
        from tokensift.hw.selector.resources import resources as selector_resources

        check_family(family)
        from tokensift.hw.vector.gelu_resources import resources as gelu_resources
        from tokensift.hw.vector.layernorm_resources import resources as layernorm_resources
        from tokensift.hw.vector.residual_resources import resources as residual_resources

        v = self.vector
        out = {"attention": attention_resources(self.attention, family),
               "linear": linear_resources(self.linear, family),
               "layernorm": layernorm_resources(v.layernorm, family),
               "gelu": gelu_resources(v.gelu, family),
               "residual": residual_resources(v.residual, family)}
        if v.token_mean is not None:
            from tokensift.hw.vector.token_mean_resources import resources as token_mean_resources

            out["token_mean"] = token_mean_resources(v.token_mean, family)
        if self.selector is not None:
            out["selector"] = selector_resources(self.selector, family)
        return out

    def resources(self, family: str) -> Resources:
        return sum(self.units(family).values(), Resources())
