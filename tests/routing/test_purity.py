"""The decision core does no I/O and reads no clock (DESIGN.md layering rules 1 and 2)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import gateway.routing

PURE_MODULES = ["decision.py", "numbering.py", "plan.py", "timecond.py", "models.py"]
FORBIDDEN = {"asyncio", "socket", "selectors", "time", "os", "pathlib", "io", "subprocess", "logging"}


@pytest.mark.parametrize("name", PURE_MODULES)
def test_core_modules_import_no_io_or_clock(name: str) -> None:
    source = Path(gateway.routing.__file__).with_name(name).read_text(encoding="utf-8")
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN, f"{name} imports {imported & FORBIDDEN}"
    assert ".now(" not in source and ".today(" not in source, f"{name} reads the clock"
