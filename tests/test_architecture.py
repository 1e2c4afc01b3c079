"""The import graph of ``src/xaikit``, read from the source with ``ast``: no import circle, and no room importing a
room above it (the floors listed below and in ``docs/architecture.md``).

Every import counts, wherever it is written: at the top of a module, inside a function (a late import is still
a dependency) and, for the floors, under ``if TYPE_CHECKING:`` (a type is a dependency too). A circle is a
runtime one: an import under ``if TYPE_CHECKING:`` never runs, so a handler that names the type of the session
calling it (the engine's handlers and :class:`xaikit.propagation.session.Session`) makes none; it still may not
reach a room above. ``from pkg import name`` imports
the submodule ``pkg.name`` where there is one, else ``pkg`` itself. Importing ``a.b.c`` counts as importing
``a.b.c`` only (not the packages above it), so that a module's package ``__init__`` re-exporting the room does
not turn every import into a circle.
"""
from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "xaikit"

#: top-level modules of the package that form the foundation (the lowest floor; they may import each other)
FOUNDATION = {"_version", "batching", "data", "deprecation", "errors", "explanation", "fingerprint", "layers", "modes",
              "numpy_model", "progress", "registry", "results", "settings", "targets", "tokens", "cav",
              "columns"}

#: the floors, lowest first: a room may import the rooms of the floors below it, never one above it, and not
#: another room of its own floor. The package ``xaikit/__init__.py`` stands above all of them (it re-exports
#: the public API), so no room may import it.
FLOORS = (
    {"foundation"},
    {"propagation"},  # the engine
    {"methods"},
    {"metrics"},
    # the rooms that stand on methods (and the engine); zoo holds the demo/test models and data (its
    # tabular ground truth is computed with ExactShapley) and is imported by nothing in src (the CLI loads
    # its models by name)
    {"concepts", "examples", "improve", "tabular", "generation", "zoo", "interactions", "regression", "signals",
     "unsupervised", "rules", "counterfactuals"},
    {"tune"},
    {"run"},
    {"viz"},
    {"serve"},  # the local web application: it reads the loaded model and data the command line hands it
    {"cli"},
)


# ---- the graph -------------------------------------------------------------------------------------------------

def modules(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of ``root/package`` (a package is its ``__init__``)."""
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _known(name: str, known: dict[str, Path]) -> str | None:
    """``name`` or the nearest package above it that is a module of the graph (``None`` outside the package)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def _type_only(tree: ast.AST) -> set[int]:
    """Ids of the import nodes under ``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``)."""
    found = set()
    for node in ast.walk(tree):
        test = getattr(node, "test", None)
        if isinstance(node, ast.If) and (getattr(test, "id", None) == "TYPE_CHECKING"
                                         or getattr(test, "attr", None) == "TYPE_CHECKING"):
            found.update(id(inner) for stmt in node.body for inner in ast.walk(stmt))
    return found


def import_graph(root: Path, package: str, types: bool = True) -> dict[str, dict[str, int]]:
    """Module -> {imported module of the package: line of the first such import}; ``types=False`` leaves out the
    imports under ``if TYPE_CHECKING:`` (they never run)."""
    known = modules(root, package)
    graph: dict[str, dict[str, int]] = {}
    for name, path in known.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: dict[str, int] = {}
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        skip = set() if types else _type_only(tree)
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            targets = []
            if isinstance(node, ast.Import):
                targets = [_known(alias.name, known) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = here.split(".")
                    if node.level - 1 >= len(parts):
                        continue  # beyond the top package: not ours
                    base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                for alias in node.names:
                    submodule = f"{base}.{alias.name}"
                    targets.append(submodule if submodule in known else _known(base, known))
            for target in targets:
                if target is not None and target != name:
                    edges.setdefault(target, node.lineno)
        graph[name] = edges
    return graph


def circles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted, sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def shortest_cycle(graph: dict[str, dict[str, int]], component: list[str]) -> list[str]:
    """A shortest import cycle through the first module of ``component`` (breadth-first, inside it)."""
    start, inside = component[0], set(component)
    parent: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in sorted(graph[node]):
            if child not in inside:
                continue
            if child == start:
                path = [node]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return [start, *reversed(path[:-1]), start] if len(path) > 1 else [start, node, start]
            if child not in parent:
                parent[child] = node
                queue.append(child)
    return component


def room(module: str) -> str:
    """The room of a module: its sub-package of xaikit, ``foundation`` for the top-level modules in FOUNDATION,
    the module's own name for any other top-level module, and ``xaikit`` for the package itself."""
    parts = module.split(".")
    if len(parts) == 1:
        return parts[0]
    return "foundation" if len(parts) == 2 and parts[1] in FOUNDATION else parts[1]


def floor_of(name: str) -> int | None:
    return next((level for level, rooms in enumerate(FLOORS) if name in rooms), None)


def _where(module: str, line: int, known: dict[str, Path]) -> str:
    return f"{known[module].relative_to(SRC)}:{line}"


def floor_violations(graph: dict[str, dict[str, int]], locate) -> list[str]:
    """One line per import of a room above the importing one, beside it (same floor) or of the package itself;
    ``locate(module, line)`` says where the import is written."""
    names = {level: " / ".join(sorted(rooms)) for level, rooms in enumerate(FLOORS)}
    wrong = []
    for module, edges in sorted(graph.items()):
        here = room(module)
        if here == PACKAGE:
            continue  # xaikit/__init__.py re-exports the public API: it may import every room
        for target, line in sorted(edges.items()):
            there = room(target)
            if there == here:
                continue
            where = locate(module, line)
            if there == PACKAGE:
                wrong.append(f"- {where}: {module} ({here}) imports the package {PACKAGE} itself, which imports "
                             "every room; import the module that defines the name")
                continue
            mine, theirs = floor_of(here), floor_of(there)
            if mine is None or theirs is None:
                continue  # test_every_room_is_on_a_floor names it
            if theirs > mine:
                wrong.append(f"- {where}: {module} ({here}, floor {mine}) imports {target} ({there}, floor {theirs}: "
                             f"{names[theirs]}), a room above it")
            elif theirs == mine:
                wrong.append(f"- {where}: {module} ({here}) imports {target} ({there}), a room on the same floor "
                             f"({names[mine]}); rooms of one floor stand side by side")
    return wrong


# ---- the tests -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def graph():
    return import_graph(SRC, PACKAGE)


def test_the_graph_reads_every_kind_of_import(tmp_path):
    """The reader itself, on a made-up package: absolute, relative, function-local, TYPE_CHECKING imports and
    ``from pkg import submodule``."""
    files = {
        "pkg/__init__.py": "from . import low\nfrom .high import thing\n",
        "pkg/low.py": "import os\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .high import Thing\n",
        "pkg/high.py": "import pkg.low\n\ndef f():\n    from .sub import deep\n    from . import low as again\n",
        "pkg/sub/__init__.py": "from .. import high\nfrom ..low import name\n",
        "pkg/sub/deep.py": "from pkg.sub import deep2\nfrom pkg import sub\nimport pkg.sub.deep2 as d\n",
        "pkg/sub/deep2.py": "from ... import outside\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    g = import_graph(tmp_path, "pkg")
    assert g == {
        "pkg": {"pkg.low": 1, "pkg.high": 2},
        "pkg.low": {"pkg.high": 4},
        "pkg.high": {"pkg.low": 1, "pkg.sub.deep": 4},
        "pkg.sub": {"pkg.high": 1, "pkg.low": 2},
        "pkg.sub.deep": {"pkg.sub.deep2": 1, "pkg.sub": 2},
        "pkg.sub.deep2": {},
    }
    assert circles(g) == [["pkg.high", "pkg.low", "pkg.sub", "pkg.sub.deep"]]
    assert shortest_cycle(g, ["pkg.high", "pkg.low"]) == ["pkg.high", "pkg.low", "pkg.high"]
    runtime = import_graph(tmp_path, "pkg", types=False)
    assert runtime["pkg.low"] == {} and runtime["pkg.high"] == g["pkg.high"]


def test_every_room_is_on_a_floor(graph):
    rooms = {room(m) for m in graph} - {PACKAGE}
    homeless = sorted(r for r in rooms if floor_of(r) is None)
    assert not homeless, (
        f"rooms without a floor: {', '.join(homeless)}. Add a sub-package to FLOORS in tests/test_architecture.py "
        "(and to the table in docs/architecture.md), or a foundation module to FOUNDATION")
    stale = sorted(r for level in FLOORS for r in level if r not in rooms)
    assert not stale, f"FLOORS names rooms that do not exist in src/{PACKAGE}: {', '.join(stale)}"


def test_no_import_circle():
    graph = import_graph(SRC, PACKAGE, types=False)
    known = modules(SRC, PACKAGE)
    lines = []
    for component in circles(graph):
        cycle = shortest_cycle(graph, component)
        lines.append(f"- {len(component)} modules import each other: {', '.join(component)}")
        lines.append(f"  e.g. {' -> '.join(cycle)}")
        for a, b in zip(cycle, cycle[1:]):
            lines.append(f"    {_where(a, graph[a][b], known)} imports {b}")
    assert not lines, (
        "import circles in src/xaikit (move the shared piece down into the module it belongs to):\n"
        + "\n".join(lines))


def test_no_room_imports_a_room_above_it_or_beside_it(graph):
    known = modules(SRC, PACKAGE)
    wrong = floor_violations(graph, lambda module, line: _where(module, line, known))
    floors = "\n".join(f"  {level}: {' / '.join(sorted(rooms))}" for level, rooms in enumerate(FLOORS))
    assert not wrong, ("rooms import only the floors below them; floors, lowest first:\n" + floors + "\n"
                       + "\n".join(wrong))


def test_floor_violations_are_found():
    """The floor rule itself, on a made-up graph."""
    graph = {
        "xaikit": {"xaikit.cli": 1},  # the package may import anything
        "xaikit.errors": {"xaikit.targets": 2},  # foundation modules import each other
        "xaikit.methods.base": {"xaikit.errors": 3, "xaikit.metrics.base": 4},  # down; up
        "xaikit.concepts.crp": {"xaikit.examples.index": 5, "xaikit.methods.base": 6},  # beside; down
        "xaikit.run.pipeline": {"xaikit": 7},  # the package itself
    }
    wrong = floor_violations(graph, lambda module, line: f"{module}:{line}")
    assert len(wrong) == 3
    assert wrong[0].startswith("- xaikit.concepts.crp:5: ") and "same floor" in wrong[0]
    assert wrong[1].startswith("- xaikit.methods.base:4: ") and "a room above it" in wrong[1]
    assert wrong[2].startswith("- xaikit.run.pipeline:7: ") and "the package xaikit itself" in wrong[2]
