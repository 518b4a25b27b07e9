"""The project's import graph has no cycle, and no package folder holds more than 15 modules.

A cycle makes a module's meaning depend on import order and hides which layer owns what (the
configs used to import the loaders that imported the configs). The graph is read from the
source, not by importing it, so the check costs nothing and sees function-level imports too:
every `import` and `from ... import` that can run counts, wherever it sits. Only imports under
`if TYPE_CHECKING:` are left out (they never run; annotations are strings). `from pkg import
name` is an edge to the module `pkg.name` when that is a module, else to `pkg`.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("actors", "learner", "verifier", "reward_model", "launch")
MAX_MODULES_PER_FOLDER = 15


def module_files(root: Path = ROOT) -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for f in sorted((root / pkg).rglob("*.py")):
            parts = f.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            mods[name] = f
    return mods


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_imports(tree: ast.AST):
    """Every Import / ImportFrom node except those under `if TYPE_CHECKING:`."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(node, ast.If) and _is_type_checking(node.test) and child in node.body:
                continue
            stack.append(child)


def import_graph(mods: dict[str, Path]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _runtime_imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:  # relative: from the importing module's package upwards
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for target in targets:
                while target and target not in mods:  # `import a.b.c` of a non-module: its package
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        found.append(sorted(comp))
    return found


def describe(graph: dict[str, set[str]], comp: list[str]) -> str:
    members = set(comp)
    return "; ".join(f"{m} -> {', '.join(sorted(graph[m] & members))}" for m in comp)


def test_no_import_cycle():
    graph = import_graph(module_files())
    assert sum(len(v) for v in graph.values()) > 100  # the graph was read, not empty
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(describe(graph, c) for c in found)


def test_no_folder_holds_more_than_15_modules():
    per_folder: dict[Path, int] = {}
    for path in module_files().values():
        per_folder[path.parent] = per_folder.get(path.parent, 0) + 1
    crowded = {str(p.relative_to(ROOT)): n for p, n in per_folder.items() if n > MAX_MODULES_PER_FOLDER}
    assert not crowded, f"folders over {MAX_MODULES_PER_FOLDER} modules: {crowded}"


@pytest.mark.parametrize("files, expected", [
    ({"a": "from b import f", "b": "import a"}, [["a", "b"]]),
    ({"a": "def f():\n    from b import g", "b": "import a"}, [["a", "b"]]),  # function-level
    ({"a": "from b import f", "b": "import a.c", "a.c": ""}, []),  # a.c, not its package
    ({"a": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from b import T", "b": "import a"}, []),
    ({"a": "from a import c", "a.c": "from a import d", "a.d": ""}, []),  # submodules, not the package
    ({"a": "from a.c import x", "a.c": "from . import d", "a.d": "from .c import y"}, [["a.c", "a.d"]]),
])
def test_the_check_finds_the_cycles_it_should(tmp_path, files, expected):
    mods = {}
    for name, text in files.items():
        parts = name.split(".")
        is_pkg = any(other.startswith(name + ".") for other in files)
        path = tmp_path.joinpath(*parts, "__init__.py") if is_pkg else tmp_path.joinpath(*parts).with_suffix(".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
        mods[name] = path
    assert cycles(import_graph(mods)) == expected
