"""No import cycles between modules of ``gateway`` and ``edge_agent`` (DESIGN.md rule 9).

The graph is read with ``ast`` (tests/support/import_graph.py): function-level and
TYPE_CHECKING-only imports count, so a cycle cannot be hidden by moving an import out of sight.
A shared model belongs in a module of its own that both sides import.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.import_graph import Edge, cycles, edges


def _show(cycle: list[Edge]) -> str:
    path = " -> ".join([cycle[0].source, *(e.target for e in cycle)])
    return path + "".join(f"\n      {edge}" for edge in cycle)


def test_no_import_cycles_between_modules() -> None:
    found = cycles(edges(["gateway", "edge_agent"]))
    if found:
        pytest.fail(f"{len(found)} import cycle(s):\n" + "\n".join(f"  {_show(c)}" for c in found))


def test_hidden_and_relative_imports_make_cycles(tmp_path: Path) -> None:
    """A TYPE_CHECKING import, a function-level import and a relative import all count."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import b\n")
    (pkg / "b.py").write_text("def f() -> None:\n    from .sub import c\n")
    (pkg / "sub" / "c.py").write_text("from ..a import x\n")
    (pkg / "d.py").write_text("import pkg.sub.c\nimport asyncio\n")

    graph = edges(["pkg"], tmp_path)
    pairs = {(e.source, e.target) for e in graph}
    assert {("pkg.a", "pkg.b"), ("pkg.b", "pkg.sub.c"), ("pkg.sub.c", "pkg.a")} <= pairs
    assert {("pkg.d", "pkg.sub.c"), ("pkg.d", "asyncio")} <= pairs
    [cycle] = cycles(graph)
    assert [(e.source, e.target, e.line) for e in cycle] == [
        ("pkg.a", "pkg.b", 3),
        ("pkg.b", "pkg.sub.c", 2),
        ("pkg.sub.c", "pkg.a", 1),
    ]
