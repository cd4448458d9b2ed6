"""The package layering stays as docs/DEVELOPING.md states it.

Data flows sw -> quant -> hw/sim; inside hw/, a block family imports only ``common``, ``cost`` sits above
the blocks, and nothing imports upwards. Every import is checked, function-level ones included.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BLOCK_FAMILIES = ("attention", "selector", "score_combiner", "vector")
OUTSIDE_HW = ("tokensift.sim", "tokensift.coopt", "tokensift.commands", "tokensift.cli")

#: (folder, prefixes it must never import)
RULES = {
    "quant": ("tokensift.hw", "tokensift.sim", *OUTSIDE_HW),
    "hw/common": (*(f"tokensift.hw.{f}" for f in BLOCK_FAMILIES), "tokensift.hw.cost", "tokensift.sw",
                  *OUTSIDE_HW),
    "hw/cost": OUTSIDE_HW,
    **{f"hw/{family}": ("tokensift.hw.cost", "tokensift.sw", *OUTSIDE_HW,
                        *(f"tokensift.hw.{other}" for other in BLOCK_FAMILIES if other != family))
       for family in BLOCK_FAMILIES},
}


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def _violations(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    out = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for module in sorted(imported_modules(path)):
            if any(module == f or module.startswith(f + ".") for f in forbidden):
                out.append(f"{path.relative_to(ROOT)} imports {module}")
    return out


@pytest.mark.parametrize("folder", sorted(RULES))
def test_no_upward_imports(folder):
    assert (ROOT / folder).is_dir(), folder
    assert _violations(folder, RULES[folder]) == []


def test_hw_top_level_holds_only_packages():
    loose = sorted(p.name for p in (ROOT / "hw").glob("*.py") if p.name != "__init__.py")
    assert loose == [], "hw/ modules belong in a block family, common/ or cost/"


def test_the_checker_sees_function_level_imports(tmp_path):
    (tmp_path / "m.py").write_text("def f():\n    from tokensift.hw.cost import layer\n    import tokensift.sim\n")
    assert imported_modules(tmp_path / "m.py") >= {"tokensift.hw.cost.layer", "tokensift.sim"}
