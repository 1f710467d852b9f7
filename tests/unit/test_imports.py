"""Import hygiene of the package, read from the source with ``ast`` (nothing is imported):
the intra-package import graph is acyclic, no module imports another module's ``_private``
name, own modules are imported at module level only, and ``import ecolora`` stays light."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = "ecolora"
# Modules allowed to import their own package's modules inside functions, and why.
LAZY_IMPORTERS = {
    # The entry point imports a command's modules when that command runs: torch, transformers
    # and peft take seconds to import, and `ecolora --help` or `ecolora compare` need none of them.
    "ecolora.cli": "command modules are imported when the command runs",
}
# Heavy or optional third-party packages that ``import ecolora`` must not load.
NOT_ON_IMPORT = ("torch", "flwr", "gguf", "datasets", "zstandard", "transformers", "peft")


@dataclass(frozen=True)
class Edge:
    source: str  # importing module, dotted
    target: str  # imported ecolora module, dotted
    names: tuple[str, ...]  # names taken with ``from target import ...`` (empty for ``import``)
    line: int
    function_level: bool  # inside a def (a lazy import)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((SRC / PACKAGE).rglob("*.py"))}


def _absolute(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _walk(tree: ast.AST, in_function: bool = False) -> Iterator[tuple[ast.AST, bool]]:
    for child in ast.iter_child_nodes(tree):
        yield child, in_function
        nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        yield from _walk(child, nested)


def edges(known: dict[str, Path]) -> list[Edge]:
    """Every import of an ecolora module by an ecolora module (``from pkg import submodule``
    counts as importing the submodule)."""
    found: list[Edge] = []
    for module, path in known.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node, in_function in _walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == PACKAGE:
                        found.append(Edge(module, alias.name, (), node.lineno, in_function))
            elif isinstance(node, ast.ImportFrom):
                target = _absolute(module, node, path.name == "__init__.py")
                if target.split(".")[0] != PACKAGE:
                    continue
                names = tuple(a.name for a in node.names)
                submodules = [n for n in names if f"{target}.{n}" in known]
                for name in submodules:
                    found.append(Edge(module, f"{target}.{name}", (), node.lineno, in_function))
                rest = tuple(n for n in names if n not in submodules)
                if rest or not submodules:
                    found.append(Edge(module, target, rest, node.lineno, in_function))
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path [a, b, ..., a], or None (iterative DFS)."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    for root in sorted(graph):
        if state.get(root):
            continue
        stack: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        state[root] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
            elif state.get(child) == 1:
                path = [n for n, _ in stack]
                return path[path.index(child):] + [child]
            elif not state.get(child):
                state[child] = 1
                stack.append((child, iter(sorted(graph.get(child, ())))))
    return None


def all_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Cycles found by removing one edge of each cycle found until none is left (a readable
    list for the failure message, not an enumeration of every elementary cycle)."""
    graph = {k: set(v) for k, v in graph.items()}
    cycles = []
    while (cycle := find_cycle(graph)) is not None:
        cycles.append(cycle)
        graph[cycle[-2]].discard(cycle[-1])
    return cycles


@pytest.fixture(scope="module")
def known() -> dict[str, Path]:
    return modules()


@pytest.fixture(scope="module")
def import_edges(known: dict[str, Path]) -> list[Edge]:
    return edges(known)


def test_find_cycle_finds_a_cycle_and_accepts_a_dag() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert all_cycles({"a": {"b"}, "b": {"a", "c"}, "c": {"b"}}) == [["a", "b", "a"], ["b", "c", "b"]]


def test_edges_resolve_relative_and_submodule_imports(tmp_path: Path) -> None:
    tree = ast.parse("from . import b\nfrom .b import _x, y\n")
    node_a, node_b = tree.body
    assert isinstance(node_a, ast.ImportFrom) and isinstance(node_b, ast.ImportFrom)
    assert _absolute("ecolora.pkg.a", node_a, is_package=False) == "ecolora.pkg"
    assert _absolute("ecolora.pkg.a", node_b, is_package=False) == "ecolora.pkg.b"
    assert _absolute("ecolora.pkg", node_b, is_package=True) == "ecolora.pkg.b"


def ancestors(module: str) -> list[str]:
    """The packages above ``module`` that importing it runs (``a.b.c``: ``a``, ``a.b``)."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph(known: dict[str, Path], import_edges: list[Edge]) -> dict[str, set[str]]:
    """module -> modules its import runs. Importing ``a.b.c`` first runs ``a/b/__init__.py``, so
    an edge to it is an edge to each package above it too, except packages above the importer
    itself (already being initialised: a package importing its own submodules is no cycle)."""
    graph: dict[str, set[str]] = {m: set() for m in known}
    for edge in import_edges:
        if edge.target not in known or edge.target == edge.source:
            continue
        graph[edge.source].add(edge.target)
        own = set(ancestors(edge.source)) | {edge.source}
        graph[edge.source].update(p for p in ancestors(edge.target) if p not in own and p in known)
    return graph


def test_import_graph_counts_the_packages_an_import_runs() -> None:
    known = {m: Path() for m in ("e", "e.p", "e.p.x", "e.q", "e.q.y")}
    edge = Edge("e.q.y", "e.p.x", ("f",), 1, False)
    inner = Edge("e.p", "e.p.x", (), 1, False)
    assert import_graph(known, [edge, inner]) == {
        "e": set(), "e.p": {"e.p.x"}, "e.p.x": set(), "e.q": set(), "e.q.y": {"e.p", "e.p.x"}
    }


def test_import_graph_is_acyclic(known: dict[str, Path], import_edges: list[Edge]) -> None:
    cycles = all_cycles(import_graph(known, import_edges))
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_package_modules_do_not_import_the_top_level_package(import_edges: list[Edge]) -> None:
    """``ecolora/__init__.py`` only re-exports; importing it from inside would make cycles."""
    bad = [f"{e.source}:{e.line}" for e in import_edges if e.target == PACKAGE]
    assert not bad, f"import from the submodule that defines the name, not from {PACKAGE}: {bad}"


def test_no_private_names_imported_across_modules(import_edges: list[Edge]) -> None:
    bad = [
        f"{e.source}:{e.line} imports {e.target}.{name}"
        for e in import_edges
        for name in e.names
        if name.startswith("_") and not name.startswith("__")
    ]
    assert not bad, "make these public (drop the underscore) or move them:\n" + "\n".join(bad)


def test_own_modules_are_imported_at_module_level(import_edges: list[Edge]) -> None:
    bad = [
        f"{e.source}:{e.line} imports {e.target}"
        for e in import_edges
        if e.function_level and e.source not in LAZY_IMPORTERS
    ]
    assert not bad, "move these imports to the top of the module:\n" + "\n".join(bad)


def _loaded_after(statement: str) -> tuple[str, list[str]]:
    """Run ``statement`` in a fresh interpreter; its last printed line and the heavy packages
    it left in ``sys.modules``."""
    code = f"import sys; {statement}; print(','.join(m for m in {NOT_ON_IMPORT!r} if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env={"PYTHONPATH": str(SRC), "PATH": ""},
    )
    *printed, loaded = result.stdout.splitlines()
    return (printed[-1] if printed else ""), [m for m in loaded.split(",") if m]


def test_import_ecolora_is_light_and_has_a_version() -> None:
    version, loaded = _loaded_after("import ecolora; print(ecolora.__version__)")
    assert version and version[0].isdigit()
    assert loaded == [], f"import ecolora loaded {loaded}"


def test_cli_imports_no_heavy_package_until_a_command_runs() -> None:
    """Why ``ecolora.cli`` may import inside its commands (LAZY_IMPORTERS)."""
    _, loaded = _loaded_after("import ecolora.cli")
    assert loaded == [], f"import ecolora.cli loaded {loaded}"


def test_public_api_resolves() -> None:
    import ecolora

    assert set(ecolora.__all__) == {"__version__", *ecolora._EXPORTS}
    missing = [name for name in ecolora.__all__ if not hasattr(ecolora, name)]
    assert not missing
    assert set(ecolora.__all__) <= set(dir(ecolora))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = ecolora.nope
