"""The package's architecture as a test: every import (module-level and function-level) goes down the layers or
stays in its layer, the import graph has no circle, and every module imports in a fresh interpreter."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "irlib"

# bottom -> top; a module belongs to the first layer with a matching prefix (longest prefixes are listed first
# where they matter: irlib.plan is the top-level facade, irlib.engine the engine)
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("irlib", "irlib.io", "irlib.procs", "irlib.figures", "irlib.results", "irlib.prompts",
                    "irlib.schedules", "irlib.resources")),
    ("data", ("irlib.data", "irlib.metrics", "irlib.weights")),
    ("models", ("irlib.models",)),
    ("methods", ("irlib.losses", "irlib.spn", "irlib.diffloss", "irlib.dinoir", "irlib.textprompt", "irlib.train",
                 "irlib.classify")),
    ("engine", ("irlib.engine",)),
    ("papers", ("irlib.papers",)),
    ("apps", ("irlib.plan", "irlib.notebook", "irlib.released", "irlib.report", "irlib.reproduce", "irlib.cli",
              "irlib.bench")),
]


def modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = p.relative_to(PKG.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def layer(name: str) -> int:
    best, depth = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for pre in prefixes:
            if (name == pre or name.startswith(pre + ".")) and len(pre) > depth:
                best, depth = i, len(pre)
    if best is None:
        raise AssertionError(f"{name} is in no layer: add it to tests/test_layers.py LAYERS")
    return best


def _type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """irlib modules ``name`` imports anywhere in its code (``if TYPE_CHECKING:`` blocks excepted)."""
    pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking(node):
            for n in node.orelse:
                visit(n)
            return
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in mods]
            found.update(subs or ([target] if target in mods else []))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in mods)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    found.discard(name)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {n: imports(n, p, mods) for n, p in mods.items()}


def test_every_import_goes_down_or_sideways():
    bad = [f"{a} ({LAYERS[layer(a)][0]}) imports {b} ({LAYERS[layer(b)][0]})"
           for a, targets in graph().items() for b in targets if layer(b) > layer(a)]
    assert not bad, "imports that run up the layers:\n" + "\n".join(sorted(bad))


def _cycle(g: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(g.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (c := dfs(m)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(g):
        if n not in state and (c := dfs(n)):
            return c
    return None


def test_no_import_circle():
    g = graph()
    # a package's __init__ re-exporting its own submodules is not a circle of the design
    g = {a: {b for b in bs if not a.startswith(b + ".")} for a, bs in g.items()}
    assert _cycle(g) is None, " -> ".join(_cycle(g))


def test_cycle_detector_finds_a_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_layer_table_is_strict():
    assert layer("irlib.engine.store") > layer("irlib.models.zoo") > layer("irlib.data.splits")
    assert layer("irlib.plan") > layer("irlib.papers.spn.plan") > layer("irlib.engine.core")
    with pytest.raises(AssertionError):
        layer("numpy")


def _order(g: dict[str, set[str]]) -> list[str]:
    out, seen = [], set()

    def add(n: str) -> None:
        if n in seen:
            return
        seen.add(n)
        for m in sorted(g.get(n, ())):
            add(m)
        out.append(n)

    for n in sorted(g):
        add(n)
    return out


def test_every_module_imports_in_dependency_order_in_a_fresh_interpreter():
    order = [m for m in _order(graph()) if m != "irlib.__main__"]
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\nprint('ok', len(sys.argv) - 1)"
    res = subprocess.run([sys.executable, "-c", code, *order], capture_output=True, text=True, timeout=300,
                         cwd=PKG.parent)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip() == f"ok {len(order)}"
