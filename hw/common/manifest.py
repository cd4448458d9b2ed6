"""The JSON manifest written next to generated Verilog: parameters, ports and stream formats."""

from __future__ import annotations

import json
from pathlib import Path

from amaranth.lib import stream, wiring

from tokensift import __version__

__all__ = ["describe_ports", "manifest", "write_outputs"]


def _shape_dict(shape) -> dict:
    from amaranth.hdl import Shape

    try:
        s = Shape.cast(shape)
        return {"width": s.width, "signed": s.signed}
    except TypeError:
        return {"width": None, "signed": None, "layout": repr(shape)}


def describe_ports(component: wiring.Component) -> list[dict]:
    """Flat list of ports as Verilog names them (``i_stream__payload``), with direction and width."""
    ports = []
    for path, member in component.signature.members.flatten():
        if member.is_signature:
            continue
        name = "__".join(str(p) for p in path)
        ports.append({"name": name, "direction": "input" if member.flow == wiring.In else "output",
                      **_shape_dict(member.shape)})
    return ports


def describe_streams(component: wiring.Component) -> list[dict]:
    streams = []
    for name, member in component.signature.members.items():
        if member.is_signature and isinstance(member.signature, stream.Signature):
            sig = member.signature
            payload = sig.members["payload"].shape
            streams.append({
                "name": name,
                "direction": "input" if member.flow == wiring.In else "output",
                "payload": _shape_dict(payload),
                "always_valid": sig.always_valid,
                "always_ready": sig.always_ready,
            })
    return streams


def manifest(component: wiring.Component, *, toplevel: str, block: str, parameters: dict,
             extra: dict | None = None) -> dict:
    return {
        "tokensift": __version__,
        "block": block,
        "toplevel": toplevel,
        "verilog": f"{toplevel}.v",
        "parameters": parameters,
        "clock": "clk (rising edge)",
        "reset": "rst (synchronous, active high)",
        "ports": describe_ports(component),
        "streams": describe_streams(component),
        **(extra or {}),
    }


def write_outputs(component: wiring.Component, *, toplevel: str, block: str, parameters: dict,
                  out_dir: Path | str, extra: dict | None = None) -> dict:
    """Write ``<toplevel>.v`` and ``<toplevel>.json`` into ``out_dir``; returns the manifest."""
    from tokensift.hw.common.verilog import emit_verilog

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    emit_verilog(component, name=toplevel, path=out_dir / f"{toplevel}.v")
    data = manifest(component, toplevel=toplevel, block=block, parameters=parameters, extra=extra)
    (out_dir / f"{toplevel}.json").write_text(json.dumps(data, indent=2) + "\n")
    return {**data, "files": [str(out_dir / f"{toplevel}.v"), str(out_dir / f"{toplevel}.json")]}
