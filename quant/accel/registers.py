"""The run-time registers the host writes before each image, and their AXI-Lite register map.

One compiled memory image serves every setting here: the method (``dense`` skips every selection stage and
the ops gated on it), each stage's rule (top-k count, threshold or SaiT's attention mass), keep counts,
thresholds in the selector's key format and SaiT's density, and where in DRAM the memory image, the program,
the input and the logits are.

Register map (32-bit registers, byte offsets; the control block owns ``0x00``-``0x0C``: control, status,
cycle and overflow counters). Unused bits read 0 and must be written 0:

==========================  ========  ======  =====================================================
register                    offset    bits    meaning
==========================  ========  ======  =====================================================
``METHOD``                  ``0x10``  2:0     :data:`METHODS` index
``DENSITY``                 ``0x14``  15:0    SaiT's mass ``max(1, floor(r 2**15 + 1/2))``, 1..32768;
                                              32768 (``r = 1``) skips SaiT's stages (the dense model)
``MEMORY_BASE``             ``0x18``  31:0    DRAM byte address of the memory image (64-byte aligned)
``PROGRAM_BASE``            ``0x1C``  31:0    DRAM byte address of the program
``INPUT_BASE``              ``0x20``  31:0    DRAM byte address of the input patches
``LOGITS_BASE``             ``0x24``  31:0    DRAM byte address the logits are written to
``STAGE_KEEP[s]``           ``0x40 + 4s``  15:0  stage ``s``'s top-k count (patch tokens kept)
``STAGE_THRESHOLD[s]``      ``0x60 + 4s``  15:0  stage ``s``'s threshold (keep keys ``> t``)
``STAGE_RULE[s]``           ``0x80 + 4s``  1:0   :data:`RULES` index
==========================  ========  ======  =====================================================

``s`` counts the program's selection stages from 0 (at most :data:`MAX_STAGES`). Values out of range raise
ValueError here; the hardware flags them in its status register instead of running.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from tokensift.checks import check_int

__all__ = ["METHODS", "RULES", "METHOD_RULES", "MAX_STAGES", "ALIGN", "REGISTER_MAP", "Registers"]

#: method register values, in order
METHODS = ("dense", "evit", "dynamicvit", "spvit", "asvit", "sait")
#: selector rules, in order
RULES = ("topk", "threshold", "mass")
#: which rules each method's stages may run
METHOD_RULES = {"dense": RULES, "evit": ("topk",), "dynamicvit": ("topk",), "spvit": ("topk", "threshold"),
                "asvit": ("threshold",), "sait": ("mass",)}
MAX_STAGES = 8
#: DRAM addresses are aligned to AXI bursts of 64 bytes
ALIGN = 64
#: the largest SaiT mass (density 1.0, 15 fractional bits)
MASS_ONE = 1 << 15

#: register name -> (byte offset, width in bits)
REGISTER_MAP: dict[str, tuple[int, int]] = {
    "METHOD": (0x10, 3), "DENSITY": (0x14, 16), "MEMORY_BASE": (0x18, 32), "PROGRAM_BASE": (0x1C, 32),
    "INPUT_BASE": (0x20, 32), "LOGITS_BASE": (0x24, 32),
    **{f"STAGE_KEEP[{s}]": (0x40 + 4 * s, 16) for s in range(MAX_STAGES)},
    **{f"STAGE_THRESHOLD[{s}]": (0x60 + 4 * s, 16) for s in range(MAX_STAGES)},
    **{f"STAGE_RULE[{s}]": (0x80 + 4 * s, 2) for s in range(MAX_STAGES)},
}


def _addr(name: str, value) -> int:
    v = check_int(name, value, low=0, high=(1 << 32) - 1)
    if v % ALIGN:
        raise ValueError(f"{name} must be a multiple of {ALIGN} (an AXI burst boundary), not {v}")
    return v


@dataclass(frozen=True)
class Registers:
    """The run-time settings of one image (validated; out-of-range values raise ValueError).

    ``keep``, ``threshold`` and ``rule`` have one entry per selection stage of the program (at most
    :data:`MAX_STAGES`); ``density`` is SaiT's mass code (:func:`tokensift.quant.stages.sait.mass_code`).
    """

    method: str = "dense"
    keep: tuple[int, ...] = ()
    threshold: tuple[int, ...] = ()
    rule: tuple[str, ...] = ()
    density: int = MASS_ONE
    memory_base: int = 0
    program_base: int = 0
    input_base: int = 0
    logits_base: int = 0
    stages: int = field(init=False, default=0)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, not {self.method!r}")
        for name in ("keep", "threshold", "rule"):
            value = getattr(self, name)
            if not isinstance(value, (tuple, list)):
                raise TypeError(f"{name} must be a tuple with one entry per stage, not {type(value).__name__}")
            object.__setattr__(self, name, tuple(value))
        n = len(self.keep)
        if len(self.threshold) != n or len(self.rule) != n:
            raise ValueError(f"keep, threshold and rule need one entry per stage each, not {n}, "
                             f"{len(self.threshold)} and {len(self.rule)}")
        if n > MAX_STAGES:
            raise ValueError(f"at most {MAX_STAGES} selection stages have registers, not {n}")
        object.__setattr__(self, "stages", n)
        for s, (k, t, r) in enumerate(zip(self.keep, self.threshold, self.rule, strict=True)):
            check_int(f"keep[{s}]", k, low=0, high=(1 << 16) - 1)
            check_int(f"threshold[{s}]", t, low=0, high=(1 << 16) - 1)
            if r not in RULES:
                raise ValueError(f"rule[{s}] must be one of {', '.join(RULES)}, not {r!r}")
            if r not in METHOD_RULES[self.method]:
                raise ValueError(f"rule[{s}] {r!r} is not a rule of {self.method} (its stages run "
                                 f"{' or '.join(METHOD_RULES[self.method])})")
            if r == "topk" and k < 1 and self.method != "dense":
                raise ValueError(f"keep[{s}] must be at least 1 for a top-k stage, not {k}")
        check_int("density", self.density, low=1, high=MASS_ONE)
        for name in ("memory_base", "program_base", "input_base", "logits_base"):
            _addr(name, getattr(self, name))

    def replace(self, **changes) -> Registers:
        values = {k: v for k, v in asdict(self).items() if k != "stages"}
        values.update(changes)
        return Registers(**values)

    # -- the AXI-Lite view ----------------------------------------------------------------------------
    def encode(self) -> dict[int, int]:
        """``byte offset -> 32-bit value`` of every register (stages past the program's read 0)."""
        words = {off: 0 for off, _ in REGISTER_MAP.values()}
        words[0x10] = METHODS.index(self.method)
        words[0x14] = self.density
        words[0x18], words[0x1C] = self.memory_base, self.program_base
        words[0x20], words[0x24] = self.input_base, self.logits_base
        for s in range(self.stages):
            words[0x40 + 4 * s] = self.keep[s]
            words[0x60 + 4 * s] = self.threshold[s]
            words[0x80 + 4 * s] = RULES.index(self.rule[s])
        return words

    @classmethod
    def decode(cls, words: dict[int, int], stages: int) -> Registers:
        """The settings in ``words`` (offset -> value) for a program of ``stages`` selection stages;
        a value wider than its register or an unknown offset raises ValueError."""
        check_int("stages", stages, low=0, high=MAX_STAGES)
        widths = {off: bits for off, bits in REGISTER_MAP.values()}
        for off, value in words.items():
            if off not in widths:
                raise ValueError(f"no run-time register at offset {off:#x}")
            check_int(f"register {off:#x}", value, low=0, high=(1 << 32) - 1)
            if value >> widths[off]:
                raise ValueError(f"register {off:#x} is {widths[off]} bits wide; {value:#x} sets bits above them")
        w = {off: words.get(off, 0) for off in widths}
        if w[0x10] >= len(METHODS):
            raise ValueError(f"METHOD {w[0x10]} is not a method (0..{len(METHODS) - 1})")
        rules = []
        for s in range(stages):
            if w[0x80 + 4 * s] >= len(RULES):
                raise ValueError(f"STAGE_RULE[{s}] {w[0x80 + 4 * s]} is not a rule (0..{len(RULES) - 1})")
            rules.append(RULES[w[0x80 + 4 * s]])
        return cls(method=METHODS[w[0x10]], keep=tuple(w[0x40 + 4 * s] for s in range(stages)),
                   threshold=tuple(w[0x60 + 4 * s] for s in range(stages)), rule=tuple(rules),
                   density=w[0x14], memory_base=w[0x18], program_base=w[0x1C], input_base=w[0x20],
                   logits_base=w[0x24])

    # -- JSON (registers.json) --------------------------------------------------------------------------
    def to_json(self) -> dict:
        values = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}
        values["words"] = {f"{off:#04x}": value for off, value in sorted(self.encode().items())}
        return values

    @classmethod
    def from_json(cls, obj: dict | str) -> Registers:
        """From :meth:`to_json`'s object (its ``words`` and ``stages`` are derived, and ignored)."""
        values = json.loads(obj) if isinstance(obj, str) else dict(obj)
        if not isinstance(values, dict):
            raise TypeError(f"registers must be a JSON object, not {type(values).__name__}")
        values.pop("words", None)
        values.pop("stages", None)
        known = {"method", "keep", "threshold", "rule", "density", "memory_base", "program_base", "input_base",
                 "logits_base"}
        if set(values) - known:
            raise ValueError(f"unknown register settings: {', '.join(sorted(set(values) - known))}")
        for name in ("keep", "threshold", "rule"):
            if name in values and isinstance(values[name], list):
                values[name] = tuple(values[name])
        return cls(**values)
