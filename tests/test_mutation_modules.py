"""The modules ``benchmarks/robustness/mutation.py`` mutates exist where it looks for them."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "robustness" / "mutation.py"


def _modules() -> dict[str, str]:
    for node in ast.parse(SCRIPT.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == "MODULES":
            return ast.literal_eval(node.value)
    raise AssertionError(f"no MODULES table in {SCRIPT}")


def test_every_mutated_module_is_a_file_of_the_package():
    modules = _modules()
    assert len(modules) == 7
    missing = [path for path in modules.values() if not (REPO / "src/leanseg" / path).is_file()]
    assert not missing, f"{SCRIPT.name} names modules that moved: {missing}"
