"""The published JSON Schema of the dialplan files, generated from the pydantic models.

``dialplans/schema/carrier.schema.json`` and ``group.schema.json`` are written by
``gateway dialplan schema --out dialplans/schema``; a test checks they equal what the models
generate, so editors and other tools validate against exactly what the gateway accepts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gateway.routing.models import CarrierFile, GroupFile

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_FILES: dict[str, type[CarrierFile] | type[GroupFile]] = {
    "carrier.schema.json": CarrierFile,
    "group.schema.json": GroupFile,
}


def generate() -> dict[str, dict[str, Any]]:
    """File name → JSON Schema document."""
    out: dict[str, dict[str, Any]] = {}
    for name, model in SCHEMA_FILES.items():
        schema = model.model_json_schema(by_alias=True, mode="validation")
        out[name] = {"$schema": SCHEMA_DIALECT, "$id": name, **schema}
    return out


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False, sort_keys=True) + "\n"


def write(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in generate().items():
        path = directory / name
        path.write_text(render(schema), encoding="utf-8")
        written.append(path)
    return written
