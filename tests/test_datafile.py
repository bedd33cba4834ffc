"""The YAML data-file loader reports every problem with file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict

from gateway.datafile import DataFileError, load_model, parse_yaml, validate_data


class Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    port: int


class Outer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    items: list[Inner]


def test_errors_name_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("name: a\nitems:\n  - port: 1\n  - port: nope\n  - colour: red\n", encoding="utf-8")
    with pytest.raises(DataFileError) as info:
        load_model(Outer, path)
    rendered = [str(p) for p in info.value.problems]
    assert any(r.startswith(f"{path}:4: items[1].port:") for r in rendered), rendered
    assert any(f"{path}:5: items[2].colour:" in r for r in rendered), rendered
    assert any(f"{path}:5: items[2].port:" in r for r in rendered), rendered


def test_duplicate_keys_are_refused() -> None:
    with pytest.raises(DataFileError) as info:
        parse_yaml("a: 1\nb: 2\na: 3\n", "dup.yaml")
    (problem,) = info.value.problems
    assert problem.line == 3
    assert "duplicate key 'a'" in problem.message


def test_syntax_error_has_a_line() -> None:
    with pytest.raises(DataFileError) as info:
        parse_yaml("a: [1, 2\nb: 3\n", "bad.yaml")
    assert info.value.problems[0].line is not None


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match="cannot read file"):
        load_model(Outer, tmp_path / "absent.yaml")


def test_empty_document_validates_defaults() -> None:
    class Defaults(BaseModel):
        value: int = 3

    data, positions = parse_yaml("", "empty.yaml")
    assert validate_data(Defaults, data, "empty.yaml", positions).value == 3
