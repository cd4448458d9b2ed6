"""Verilog text of an Amaranth component, written only when it changed (so Verilator and make see
nothing new and reuse their builds)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["emit_verilog"]


def emit_verilog(component, *, name: str, path: Path | None = None) -> str:
    """Verilog text of ``component`` with top module ``name``; written to ``path`` only if it changed."""
    from amaranth.back import verilog

    text = verilog.convert(component, name=name, emit_src=False)
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    return text
