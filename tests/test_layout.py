"""The package's layout rules: no import cycle among cnncore's modules.

Imports are read from the source (``ast``), including the lazy ones inside functions: a lazy
import still ties two modules together.  Importing ``a.b.c`` also runs the ``__init__`` of
``a.b`` (and ``a``), so an edge to ``a.b.c`` is also an edge to every package above it that
does not contain the importing module itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

import cnncore

PKG_DIR = Path(cnncore.__file__).resolve().parent
SRC_DIRS = [PKG_DIR]


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG_DIR.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    mods = {}
    for path in sorted(PKG_DIR.rglob("*.py")):
        mods[_module_name(path)] = path
    for path in sorted(PKG_DIR.rglob("*.pyx")):  # compiled modules import Python code too
        mods.setdefault(_module_name(path), path)
    return mods


def _resolve(importer: str, is_pkg: bool, level: int, module: str | None) -> str:
    if level == 0:
        return module or ""
    base = importer.split(".")
    if not is_pkg:
        base = base[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def import_graph() -> dict[str, set[str]]:
    """Module -> the cnncore modules it imports (at module level or inside functions)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        if path.suffix != ".py":
            continue
        is_pkg = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        targets: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, is_pkg, node.level, node.module)
                targets.add(base)
                for alias in node.names:  # ``from pkg import submodule``
                    sub = f"{base}.{alias.name}"
                    if sub in mods:
                        targets.add(sub)
        for target in targets:
            if not (target == "cnncore" or target.startswith("cnncore.")):
                continue
            # the target and every package above it that does not contain the importer
            parts = target.split(".")
            for k in range(len(parts), 0, -1):
                mod = ".".join(parts[:k])
                if name == mod or name.startswith(mod + "."):
                    break
                if mod in mods:
                    graph[name].add(mod)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_checker_finds_a_cycle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_lazy_and_package_imports():
    graph = import_graph()
    assert "cnncore.functional" in graph["cnncore"]
    assert graph["cnncore.nn"]  # the package's own __init__ imports its modules


def test_no_import_cycle():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles among cnncore's modules:\n" + "\n".join(
        " <-> ".join(c) for c in cycles
    )
