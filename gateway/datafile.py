"""Loading of YAML data files (gateway config, dialplans, tariffs, menus) into typed models.

Every problem is reported with the file, the line and the dotted path of the field, so an
operator can go straight to it: ``config/gateway.yaml:12: sip.listen[0].port: Input should be
less than or equal to 65535``. All problems of a file are collected, not just the first.

Duplicate mapping keys are an error here (PyYAML silently keeps the last one), because in a
dialplan a duplicated short number or trunk name is exactly the mistake we must catch.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pydantic
import yaml

ModelT = TypeVar("ModelT", bound=pydantic.BaseModel)

FieldPath = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong (or worth a warning) in a data file."""

    source: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line is not None else self.source
        return f"{where}: {self.field or '(top level)'}: {self.message}"


class DataFileError(Exception):
    """A data file could not be read or is invalid; carries every problem found."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def format_field(path: Iterable[str | int]) -> str:
    """Render a field path as ``a.b[2].c``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class PositionIndex:
    """Maps field paths of a loaded YAML document to the line (1-based) they start on."""

    def __init__(self) -> None:
        self._lines: dict[FieldPath, int] = {}

    def record(self, path: FieldPath, line: int) -> None:
        self._lines[path] = line

    def line_of(self, path: Sequence[str | int]) -> int | None:
        """The line of the deepest known prefix of ``path`` (a missing field points at its parent)."""
        key = tuple(path)
        while True:
            if key in self._lines:
                return self._lines[key]
            if not key:
                return None
            key = key[:-1]


# libyaml's parser when PyYAML was built with it (several times faster on large dialplans).
_BaseSafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _UniqueKeyLoader(_BaseSafeLoader):  # type: ignore[valid-type,misc]
    """A safe loader that refuses duplicate keys instead of keeping the last one."""


def _construct_mapping(
    loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False
) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found duplicate key {key!r}",
                key_node.start_mark,
            )
        mapping[key] = loader.construct_object(value_node, deep=deep)
    return mapping


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _index_positions(node: yaml.Node, path: FieldPath, index: PositionIndex) -> None:
    index.record(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                child = (*path, key_node.value)
                index.record(child, key_node.start_mark.line + 1)
                _index_positions(value_node, child, index)
                # The key's own line is more useful than the value's for a scalar on the next line.
                index.record(child, key_node.start_mark.line + 1)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index_positions(item, (*path, i), index)


def parse_yaml(text: str, source: str) -> tuple[Any, PositionIndex]:
    """Parse YAML text into plain data plus an index of field positions."""
    index = PositionIndex()
    loader = _UniqueKeyLoader(text)
    try:
        # One parse: the node tree gives the positions, then the same tree is constructed.
        node = loader.get_single_node()
        if node is None:
            return None, index
        _index_positions(node, (), index)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise DataFileError([Problem(source, line, "", f"YAML syntax: {exc.problem or exc}")]) from exc
    except yaml.YAMLError as exc:
        raise DataFileError([Problem(source, None, "", f"YAML syntax: {exc}")]) from exc
    finally:
        loader.dispose()
    return data, index


def read_yaml(path: str | Path) -> tuple[Any, PositionIndex]:
    """Read and parse a YAML file; a missing or unreadable file is a DataFileError."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise DataFileError([Problem(source, None, "", f"cannot read file: {exc.strerror or exc}")]) from exc
    except UnicodeDecodeError as exc:
        raise DataFileError([Problem(source, None, "", f"not UTF-8 text: {exc}")]) from exc
    return parse_yaml(text, source)


def problems_from_validation(
    error: pydantic.ValidationError, source: str, positions: PositionIndex, prefix: FieldPath = ()
) -> list[Problem]:
    """Turn a pydantic ValidationError into located problems."""
    problems = []
    for item in error.errors(include_url=False):
        # Tagged unions add the tag name to the location; it is not a field of the file.
        loc = tuple(
            part for part in item["loc"] if not (isinstance(part, str) and part.startswith("function-"))
        )
        full = (*prefix, *loc)
        problems.append(Problem(source, positions.line_of(full), format_field(full), item["msg"]))
    return problems


def validate_data(
    model: type[ModelT], data: Any, source: str, positions: PositionIndex | None = None
) -> ModelT:
    """Validate already-parsed data into ``model``; problems name the source, line and field."""
    try:
        return model.model_validate({} if data is None else data)
    except pydantic.ValidationError as exc:
        raise DataFileError(problems_from_validation(exc, source, positions or PositionIndex())) from exc


def load_model(model: type[ModelT], path: str | Path) -> ModelT:
    """Read a YAML file and validate it into ``model``."""
    data, positions = read_yaml(path)
    return validate_data(model, data, str(path), positions)


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` (fsynced, then renamed over it): a crash leaves the old file or
    the new one, never half of one. For state the gateway keeps (dialplan and trunk changes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp")
    with staging.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(staging, path)
