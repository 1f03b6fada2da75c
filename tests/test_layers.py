"""Imports point down the layers of DESIGN.md, and no two modules import each other (no cycles).

Every module of ``src/leanseg`` is parsed with ``ast`` (nothing is imported), and every import it
makes - at module level, inside functions, under ``TYPE_CHECKING`` - is an edge. A module may
import from its own layer or a lower one:

    8  cli, commands, demo, report, __main__, the package ``__init__``
    7  training
    6  evaluation
    5  inference, export, profiling
    4  models (the builder tables)
    3  nn, baselines
    2  data, visualize, runtime
    1  files
    0  structures, metrics, config, version

A cycle that climbs a layer somewhere is reported as that upward import; the cycles left are those
within one layer (every edge on a cycle that never climbs stays in one layer), reported as the
modules on them. So every cycle is found, and each is named by what has to change.

``KNOWN_VIOLATIONS`` lists what is wrong today in files being moved by other work; it must only
shrink. The test fails on any violation not in it, and on any listed one that is gone, so the list
stays exact: whoever fixes one removes its line.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "leanseg"

# Layer of every module, by the longest matching dotted prefix (``leanseg`` itself only exactly).
LAYERS = {
    "leanseg.structures": 0,
    "leanseg.metrics": 0,
    "leanseg.config": 0,
    "leanseg.version": 0,
    "leanseg.files": 1,
    "leanseg.data": 2,
    "leanseg.visualize": 2,
    "leanseg.runtime": 2,
    "leanseg.nn": 3,
    "leanseg.baselines": 3,
    "leanseg.models": 4,
    "leanseg.inference": 5,
    "leanseg.export": 5,
    "leanseg.profiling": 5,
    "leanseg.evaluation": 6,
    "leanseg.training": 7,
    "leanseg.cli": 8,
    "leanseg.commands": 8,
    "leanseg.demo": 8,
    "leanseg.report": 8,
    "leanseg.__main__": 8,
    "leanseg": 8,
}

# Violations that exist today, each to be removed when fixed (never added to).
KNOWN_VIOLATIONS: set[str] = set()


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _layer(module: str) -> int | None:
    keys = [
        key
        for key in LAYERS
        if module == key or (key != "leanseg" and module.startswith(key + "."))
    ]
    return LAYERS[max(keys, key=len)] if keys else None


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module of ``leanseg`` that importing ``name`` runs last (itself or its package)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, source: str, modules: dict[str, Path], *, is_package: bool) -> set[str]:
    """Every ``leanseg`` module that ``module`` (whose text is ``source``) imports, anywhere."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module if is_package else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            names = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name == "leanseg" or name.startswith("leanseg."):
                target = _resolve(name, modules)
                if target is not None and target != module:
                    found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {
        module: _imports(
            module,
            path.read_text(encoding="utf-8"),
            modules,
            is_package=path.name == "__init__.py",
        )
        for module, path in modules.items()
    }


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for child in sorted(graph[node]):
            if child not in index:
                visit(child)
                low[node] = min(low[node], low[child])
            elif child in on_stack:
                low[node] = min(low[node], index[child])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def _violations(graph: dict[str, set[str]]) -> set[str]:
    """Upward imports ``a -> b``, and cycles within one layer ``cycle: a, b, ...``."""
    found = set()
    within_layers: dict[str, set[str]] = {}
    for module, targets in graph.items():
        upward = {target for target in targets if _layer(target) > _layer(module)}
        found |= {f"{module} -> {target}" for target in upward}
        within_layers[module] = targets - upward
    found |= {"cycle: " + ", ".join(sorted(cycle)) for cycle in _cycles(within_layers)}
    return found


def test_every_module_has_a_layer():
    unplaced = [module for module in _modules() if _layer(module) is None]
    assert not unplaced, f"add these modules to LAYERS in {__file__}: {unplaced}"


def test_imports_point_down_the_layers_and_form_no_cycles():
    found = _violations(_graph())
    new = sorted(found - KNOWN_VIOLATIONS)
    fixed = sorted(KNOWN_VIOLATIONS - found)
    assert not new, "imports up the layers or in a cycle:\n" + "\n".join(new)
    assert not fixed, "fixed - remove from KNOWN_VIOLATIONS:\n" + "\n".join(fixed)


def test_the_checker_sees_upward_imports_anywhere_and_cycles():
    graph = {
        "leanseg.metrics.semantic": {"leanseg.nn.heads.qgn"},
        "leanseg.nn.heads.qgn": {"leanseg.metrics.semantic", "leanseg.nn.sparse"},
        "leanseg.nn.sparse": {"leanseg.nn.segmentor"},
        "leanseg.nn.segmentor": {"leanseg.nn.heads.qgn"},
    }
    assert _violations(graph) == {
        "leanseg.metrics.semantic -> leanseg.nn.heads.qgn",
        "cycle: leanseg.nn.heads.qgn, leanseg.nn.segmentor, leanseg.nn.sparse",
    }
    modules = _modules()
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from leanseg.data import base\n"
        "def f():\n"
        "    from leanseg.training.trainer import Trainer\n"
        "    from .. import models\n"
    )
    found = _imports("leanseg.metrics.semantic", source, modules, is_package=False)
    assert found == {"leanseg.data.base", "leanseg.training.trainer", "leanseg.models"}
