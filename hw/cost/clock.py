"""The clock a latency is computed at, and where it comes from: measured on ECP5, assumed elsewhere.

On ECP5 the blocks are placed and routed by nextpnr (:mod:`tokensift.hw.cost.pnr`) and their Fmax is stored
in ``tests/hw/baselines/fmax.json`` (``bench/bench_timing.py --write``). A whole-model accelerator runs its
units on one clock, so the clock is the lowest of the device's clock and every generated unit's measured
Fmax at the device's speed grade. A unit's Fmax is the **lowest measured over its baseline grid** (the
selector's with or without the package token, as the model uses it), not the one configuration at hand:
every configuration of a block is held to the same bound, so ``tokensift estimate``, the co-optimizer and
the latency budget of training give the same latency for the same design, and a configuration that was
never placed and routed is not credited with a figure nobody measured. The linear unit is the GEMM engine
(``gemm`` in the baselines).

For the Xilinx families no open place and route exists: their clock is the device database's assumption
and every answer labels it ``assumed``. A clock given by the user (``--clock-mhz``) is labelled ``given``.

>>> from tokensift.devices import get_device
>>> clk = model_clock(get_device("zcu102"), units=("attention", "linear"))
>>> clk.mhz, clk.source
(300.0, 'assumed')
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

__all__ = ["Clock", "FMAX_BASELINE", "SOURCES", "load_fmax", "block_fmax", "speed_grade", "model_clock",
           "clock_for_cost", "clock_for_desc", "accelerator_clock"]

#: where the measured Fmax of every block configuration lives (written by bench/bench_timing.py --write)
FMAX_BASELINE = Path(__file__).resolve().parents[2] / "tests" / "hw" / "baselines" / "fmax.json"
#: ``measured``: min(device clock, measured Fmax); ``assumed``: the device database's figure, no P&R behind
#: it; ``given``: the user's
SOURCES = ("measured", "assumed", "given")
#: the block in the Fmax baselines of each unit of :meth:`ModelCost.units`
_MEASURED_UNITS = {"attention": "attention", "selector": "selector", "linear": "gemm", "layernorm": "layernorm",
                   "gelu": "gelu", "residual": "residual", "token_mean": "token_mean"}
#: the units every whole-model accelerator has besides the attention core (the selector when the model prunes)
_ALWAYS = ("attention", "linear", "layernorm", "gelu", "residual")


@dataclass(frozen=True)
class Clock:
    """A clock in MHz, its source (one of :data:`SOURCES`) and one sentence saying where it comes from.

    ``limited_by``: the block whose Fmax sets it (None when the device clock does); ``fmax``: the measured
    Fmax used per block (MHz).
    """

    mhz: float
    source: str
    note: str
    device_mhz: float
    limited_by: str | None = None
    fmax: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"mhz": self.mhz, "source": self.source, "note": self.note, "device_mhz": self.device_mhz,
                "limited_by": self.limited_by, "fmax_mhz": dict(self.fmax)}

    def label(self) -> str:
        """``"54.3 MHz (measured: ...)"``: the clock and its source, for tables."""
        return f"{self.mhz:g} MHz ({self.note})"


def speed_grade(part: str) -> int:
    """The ECP5 speed grade in a part number (``LFE5UM-85F-8BG381`` -> 8)."""
    m = re.fullmatch(r"LFE5UM?5?G?-\d+F-(\d)[A-Z]+\d+[A-Z]?", part)
    if m is None:
        raise ValueError(f"{part!r} is not an ECP5 part number with a speed grade (e.g. LFE5UM-85F-8BG381)")
    return int(m.group(1))


@cache
def _load(path: str) -> dict | None:
    p = Path(path)
    return json.loads(p.read_text()) if p.exists() else None


def load_fmax(path: Path | str | None = None) -> dict | None:
    """The Fmax baselines (None when the file is absent, as in an installed package without the tests)."""
    return _load(str(path or FMAX_BASELINE))


def block_fmax(block: str, speed: int, *, package: bool | None = None, path: Path | str | None = None) -> dict | None:
    """The lowest measured Fmax of ``block`` at ``speed`` over its baseline grid: ``{"fmax_mhz", "config",
    "configs"}`` (the configuration that set it, how many were measured), or None when none was.
    ``package`` filters the selector's configurations by the package token."""
    data = load_fmax(path)
    if data is None:
        return None
    rows = []
    for cfg in data["configs"]:
        if cfg["block"] != block or str(speed) not in cfg["fmax_mhz"]:
            continue
        if package is not None and bool(cfg["params"].get("package", False)) != package:
            continue
        rows.append((cfg["fmax_mhz"][str(speed)], cfg["name"]))
    if not rows:
        return None
    fmax, name = min(rows)
    return {"fmax_mhz": fmax, "config": name, "configs": len(rows)}


def model_clock(device, *, units=("attention", "linear"), package: bool = False, clock_mhz: float | None = None,
                path: Path | str | None = None) -> Clock:
    """The clock of an accelerator made of ``units`` (names of :meth:`ModelCost.units`) on ``device``.

    ``package``: whether its selector builds the package token; ``clock_mhz``: a clock the user gives.
    """
    from tokensift.devices import get_device

    dev = get_device(device)
    if clock_mhz is not None:
        if isinstance(clock_mhz, bool) or not isinstance(clock_mhz, (int, float)) or not clock_mhz > 0:
            raise ValueError(f"clock_mhz must be a positive number, not {clock_mhz!r}")
        own = model_clock(dev, units=units, package=package, path=path)
        if float(clock_mhz) == own.mhz:
            return own  # the design's own clock passed along (the co-optimizer's answer to training)
        note = "given"
        if own.source == "measured" and clock_mhz > own.mhz:
            note = f"given; above the {own.mhz:g} MHz this design is measured to reach"
        return Clock(float(clock_mhz), "given", note, dev.clock_mhz)
    if dev.family != "ecp5":
        return Clock(dev.clock_mhz, "assumed",
                     f"assumed, not measured: no open place and route exists for {dev.name}'s family "
                     f"({dev.family}); the device database's typical clock", dev.clock_mhz)
    speed = speed_grade(dev.part)
    fmax, missing = {}, []
    for unit in units:
        if unit not in _MEASURED_UNITS:
            continue
        found = block_fmax(_MEASURED_UNITS[unit], speed, package=package if unit == "selector" else None, path=path)
        if found is None:
            missing.append(unit)
        else:
            fmax[unit] = found
    if missing or not fmax:
        what = ", ".join(missing) or "the units"
        return Clock(dev.clock_mhz, "assumed", f"assumed, not measured: no Fmax baseline of {what} at speed {speed} "
                                               f"(run bench/bench_timing.py --write)", dev.clock_mhz)
    slowest = min(fmax, key=lambda u: fmax[u]["fmax_mhz"])
    limit = fmax[slowest]["fmax_mhz"]
    parts = ", ".join(f"{u} {v['fmax_mhz']:g} MHz" for u, v in fmax.items())
    unmeasured = [u for u in units if u not in _MEASURED_UNITS]
    tail = f"; {', '.join(unmeasured)} not generated, not measured" if unmeasured else ""
    if limit < dev.clock_mhz:
        return Clock(limit, "measured", f"measured: {slowest} Fmax after nextpnr P&R at speed {speed} "
                                        f"({parts}) is below the device's {dev.clock_mhz:g} MHz{tail}",
                     dev.clock_mhz, slowest, {u: v["fmax_mhz"] for u, v in fmax.items()})
    return Clock(dev.clock_mhz, "measured", f"measured: every unit's Fmax after nextpnr P&R at speed {speed} "
                                            f"({parts}) reaches the device's {dev.clock_mhz:g} MHz{tail}",
                 dev.clock_mhz, None, {u: v["fmax_mhz"] for u, v in fmax.items()})


def clock_for_cost(cost, device, *, clock_mhz: float | None = None) -> Clock:
    """:func:`model_clock` of a :class:`tokensift.hw.cost.layer.ModelCost`'s units."""
    units = (_ALWAYS + (("selector",) if cost.selector is not None else ())
             + (("token_mean",) if cost.vector.token_mean is not None else ()))
    package = bool(cost.selector is not None and cost.selector.package)
    return model_clock(device, units=units, package=package, clock_mhz=clock_mhz)


def clock_for_desc(desc, device, *, clock_mhz: float | None = None) -> Clock:
    """:func:`model_clock` of the accelerator a :class:`tokensift.hw.cost.layer.ModelDesc` runs on (a selector
    when the model prunes, with the package token when a stage adds one), before its lanes are chosen."""
    from tokensift.hw.cost.layer import model_schedule
    from tokensift.hw.cost.predictor import predictor_ops

    stages = model_schedule(desc).stages
    means = any(op.unit == "token_mean" for st in stages for op in predictor_ops(st.selector, st.n_in, desc.dim))
    units = _ALWAYS + (("selector",) if stages else ()) + (("token_mean",) if means else ())
    return model_clock(device, units=units, package=any(st.package for st in stages), clock_mhz=clock_mhz)


#: the parameters that identify a whole-accelerator design in the Fmax baselines
ACCEL_KEYS = ("model", "banks", "lanes", "gemm_cols", "axi_bytes")


def accelerator_clock(device, shape: dict, *, model: str | None = None, path: Path | str | None = None) -> Clock:
    """The clock of the whole generated accelerator (:mod:`tokensift.hw.accel`) of ``shape`` (``banks``,
    ``lanes``, ``gemm_cols``, ``axi_bytes``) for the registered backbone ``model`` on ``device``: on ECP5,
    min(the device's clock, the Fmax that place and route measured for this very design at the device's speed
    grade); otherwise, or for a shape never placed and routed, the device's typical clock, labelled assumed
    and saying why. Unlike :func:`model_clock` no block's figure stands in for the whole design's: its
    critical path may lie in the glue between the blocks."""
    from tokensift.devices import get_device

    dev = get_device(device)
    if dev.family != "ecp5":
        return Clock(dev.clock_mhz, "assumed",
                     f"assumed, not measured: no open place and route exists for {dev.name}'s family "
                     f"({dev.family}); the device database's typical clock", dev.clock_mhz)
    speed = speed_grade(dev.part)
    want = {"model": model, **{k: shape[k] for k in ACCEL_KEYS[1:]}}
    data = load_fmax(path) or {"configs": []}
    for cfg in data["configs"]:
        if cfg["block"] != "accelerator" or str(speed) not in cfg["fmax_mhz"]:
            continue
        # a packed GEMM or more attention cores make another design (rows measured before either existed
        # have neither)
        if all(cfg["params"].get(k) == v for k, v in want.items()) \
                and bool(cfg["params"].get("pack_pairs", False)) == bool(shape.get("pack_pairs", False)) \
                and cfg["params"].get("attention_cores", 1) == shape.get("attention_cores", 1):
            fmax = cfg["fmax_mhz"][str(speed)]
            mhz = min(fmax, dev.clock_mhz)
            side = "below" if fmax < dev.clock_mhz else "reaching"
            return Clock(mhz, "measured", f"measured: the whole design's Fmax after nextpnr P&R at speed {speed} "
                                          f"is {fmax:g} MHz, {side} the device's {dev.clock_mhz:g} MHz",
                         dev.clock_mhz, "accelerator" if fmax < dev.clock_mhz else None, {"accelerator": fmax})
    return Clock(dev.clock_mhz, "assumed", f"assumed, not measured: this design ({', '.join(f'{k} {v}' for k, v in want.items())}) "
                                           f"was not placed and routed at speed {speed} (bench/bench_timing.py)",
                 dev.clock_mhz)
