"""Layering: ``hmm`` <- ``constructions`` <- ``verify``; arrows one way, no import cycles between modules.

The graph is read from the source with :mod:`ast` (every ``import`` / ``from ... import`` anywhere in a file,
function-local and ``TYPE_CHECKING`` imports included), so a lazy import inside a function counts like a top-level
one. A cycle is a strongly connected set of modules; a package's ``__init__`` is a module like the others.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Layer of each top-level package: a module may import only from its own layer or lower ones.
LAYERS = {"hmm": 0, "constructions": 1, "verify": 2}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(current: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = current.split(".") if is_package else current.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph(root: Path, packages: tuple[str, ...] = tuple(LAYERS)) -> dict[str, set[str]]:
    """Module -> the project modules it imports (a ``from pkg import name`` edge goes to ``pkg.name`` when that is
    a module, else to ``pkg``)."""
    files = {module_name(p, root): p for pkg in packages if (root / pkg).is_dir() for p in (root / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(mod, is_pkg, node)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            for t in targets:
                while t and t not in files:  # `import a.b.c` of a non-module attribute: the deepest module
                    t = t.rpartition(".")[0]
                if t and t != mod and t.split(".")[0] in packages:
                    edges.add(t)
        graph[mod] = edges
    return graph


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Edges from a lower layer to a higher one (``hmm`` -> ``constructions``, ``constructions`` -> ``verify``, ...)."""
    out = []
    for mod, edges in sorted(graph.items()):
        for t in sorted(edges):
            if LAYERS[t.split(".")[0]] > LAYERS[mod.split(".")[0]]:
                out.append(f"{mod} imports {t}")
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_project_has_no_upward_import_and_no_cycle():
    graph = import_graph(ROOT)
    assert "constructions.runner" in graph and "verify.suite" in graph and "hmm.model" in graph
    assert "constructions.types" in graph["constructions.exact"]  # function-local and top-level edges are read
    assert upward_imports(graph) == []
    assert cycles(graph) == []


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


BASE = {
    "hmm/__init__.py": "",
    "hmm/model.py": "import numpy as np\n",
    "constructions/__init__.py": "",
    "constructions/blocks.py": "from hmm.model import np\n",
    "verify/__init__.py": "",
    "verify/suite.py": "from constructions import blocks\n",
}


def test_the_checker_passes_a_clean_tree(tmp_path):
    _write(tmp_path, BASE)
    g = import_graph(tmp_path)
    assert g["verify.suite"] == {"constructions.blocks"} and g["constructions.blocks"] == {"hmm.model"}
    assert upward_imports(g) == [] and cycles(g) == []


@pytest.mark.parametrize("body", [
    "from verify.suite import x\n",                                 # top level
    "def f():\n    from verify import suite\n    return suite\n",   # function-local
    "def f():\n    import verify.suite\n",                          # function-local, plain import
    "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..verify import suite\n",  # relative, guarded
])
def test_the_checker_fails_on_an_upward_import(tmp_path, body):
    files = dict(BASE)
    files["constructions/memory/__init__.py"] = ""
    files["constructions/memory/adapter.py"] = body.replace("..verify", "...verify")
    _write(tmp_path, files)
    bad = upward_imports(import_graph(tmp_path))
    assert bad and all(b.startswith("constructions.memory.adapter imports verify") for b in bad)


def test_the_checker_fails_on_a_cycle_through_a_function_local_import(tmp_path):
    files = dict(BASE)
    files["constructions/exact.py"] = "from constructions.transformer import Trace\n"
    files["constructions/transformer.py"] = "class Trace: ...\ndef run():\n    from constructions.exact import run_exact\n"
    _write(tmp_path, files)
    assert cycles(import_graph(tmp_path)) == [["constructions.exact", "constructions.transformer"]]


def test_verify_names_no_registered_construction_outside_its_named_benchmark():
    """Issue 11: the framework side (``verify/``) is generic over the registry: no registered construction's name
    appears as a string literal in it, except the H1 benchmark (``bench h1`` measures exact-filter by design) and
    the example in the grid-file docstring. Adding a literal elsewhere fails here."""
    from constructions import registry

    names = set(registry.entries())
    assert {"exact-filter", "window", "memory-kernel"} <= names  # the check below is not vacuous
    allowed = {("verify/benchmarks/h1.py", "exact-filter")}
    found = []
    for path in sorted((ROOT / "verify").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
                if (rel, node.value) not in allowed:
                    found.append(f"{rel}:{node.lineno}: {node.value!r}")
    assert not found, found
