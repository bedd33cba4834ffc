"""The import graph of the project's packages, read with ``ast`` (nothing is imported).

Every import statement counts: module level, inside functions, under ``if TYPE_CHECKING:``
(a type-only import that closes a cycle is still a cycle for the reader and for mypy).
Relative imports are resolved. ``from pkg import name`` is an edge to ``pkg.name`` when that is
a module of the graph, else to ``pkg``; an import of a module outside the graph is kept only
as a name (``redis``, ``asyncio``) for layering rules.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True, slots=True)
class Edge:
    """``source`` imports ``target`` at ``path:line``."""

    source: str
    target: str
    path: Path
    line: int

    def __str__(self) -> str:
        shown = self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path
        return f"{self.source} -> {self.target} ({shown}:{self.line})"


def modules(packages: Iterable[str], root: Path = ROOT) -> dict[str, Path]:
    """Every module of ``packages`` (top-level package directories under ``root``) by name."""
    found: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module name ``node`` imports from, relative levels resolved (PEP 328)."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _imported(module: str, path: Path, known: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """(imported module name, line) for every import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, is_package, node)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield (sub if sub in known else base), node.lineno


def _owner(name: str, known: dict[str, Path]) -> str:
    """The module of the graph that ``name`` lies in (``a.b.c`` -> ``a.b``), or ``name`` itself."""
    probe = name
    while probe and probe not in known:
        probe = probe.rpartition(".")[0]
    return probe or name


def edges(packages: Iterable[str], root: Path = ROOT) -> list[Edge]:
    """Every import edge out of the modules of ``packages``, once per statement (self-imports
    left out)."""
    known = modules(packages, root)
    found: dict[Edge, None] = {}
    for module, path in known.items():
        for name, line in _imported(module, path, known):
            target = _owner(name, known)
            if target != module:
                found[Edge(module, target, path, line)] = None
    return list(found)


def cycles(graph_edges: Iterable[Edge]) -> list[list[Edge]]:
    """One cycle of edges for every strongly connected component of more than one module."""
    out: dict[str, list[Edge]] = {}
    for edge in graph_edges:
        out.setdefault(edge.source, []).append(edge)
        out.setdefault(edge.target, [])
    found: list[list[Edge]] = []
    for component in _components(out):
        found.append(_cycle_in(sorted(component)[0], component, out))
    return found


def _components(out: dict[str, list[Edge]]) -> list[set[str]]:
    """Strongly connected components with more than one member (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[set[str]] = []
    for start in sorted(out):
        if start in index:
            continue
        work: list[tuple[str, Iterator[Edge]]] = [(start, iter(out[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, pending = work[-1]
            edge = next(pending, None)
            if edge is not None:
                target = edge.target
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(out[target])))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: set[str] = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    result.append(component)
    return result


def _cycle_in(start: str, component: set[str], out: dict[str, list[Edge]]) -> list[Edge]:
    """A shortest cycle through ``start`` inside ``component`` (breadth first)."""
    came_by: dict[str, Edge] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for edge in out[node]:
                if edge.target not in component:
                    continue
                if edge.target == start:
                    path = [edge]
                    while path[0].source != start:
                        path.insert(0, came_by[path[0].source])
                    return path
                if edge.target not in came_by:
                    came_by[edge.target] = edge
                    following.append(edge.target)
        frontier = following
    raise AssertionError(f"{start} is in a component but on no cycle")
