"""The OpenAPI document is true: every route is documented, every documented path is routed,
and real responses validate against the documented schemas."""

from __future__ import annotations

import re
from typing import Any, cast

import jsonschema
import pytest
from aiohttp import web

from gateway.mgmt.api import Services, create_app
from gateway.mgmt.openapi import document
from tests.mgmt.support import Api
from tests.registrar.peers import register
from tests.support.gateway import GatewayProcess

METHODS = {"get", "put", "post", "patch", "delete"}


def routed() -> set[tuple[str, str]]:
    app = create_app(cast(Services, object()))
    out = set()
    for route in app.router.routes():
        if route.method == "HEAD":
            continue  # added by aiohttp for every GET
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        out.add((route.method.lower(), str(path)))
    return out


def documented() -> set[tuple[str, str]]:
    return {
        (method, path) for path, item in document()["paths"].items() for method in item if method in METHODS
    }


def test_every_route_is_documented_and_every_documented_path_is_routed() -> None:
    assert routed() == documented()


def test_document_is_well_formed() -> None:
    doc = document()
    assert doc["openapi"] == "3.1.0"
    schemas = doc["components"]["schemas"]
    for name, schema in schemas.items():
        jsonschema.Draft202012Validator.check_schema(schema)
        assert name[0].isupper()
    text = repr(doc)
    for name in re.findall(r"#/components/schemas/(\w+)", text):
        assert name in schemas, name
    for path, item in doc["paths"].items():
        params = set(re.findall(r"{(\w+)}", path))
        for method, operation in item.items():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == params, (method, path)
            assert operation["responses"], (method, path)


def validate(api_doc: dict[str, Any], schema_name: str, body: Any) -> None:
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": api_doc["components"]}
    jsonschema.Draft202012Validator(schema).validate(body)


def response_schema(api_doc: dict[str, Any], method: str, path: str, status: int) -> str:
    responses = api_doc["paths"][path][method]["responses"]
    ref = responses[str(status)]["content"]["application/json"]["schema"]["$ref"]
    return str(ref.rsplit("/", 1)[-1])


@pytest.fixture(scope="module")
def served_doc(gw_api: tuple[GatewayProcess, Api]) -> dict[str, Any]:
    doc: dict[str, Any] = gw_api[1].get("/api/openapi.json", token=False).body
    assert doc == document()
    return doc


def test_real_responses_validate_against_their_schemas(
    api: Api, gw: GatewayProcess, served_doc: dict[str, Any]
) -> None:
    answer = register(gw.port, "62880003")
    assert answer.status == 200
    cases: list[tuple[str, str, str, Any]] = [
        ("get", "/api/health", "/api/health", None),
        ("get", "/api/ready", "/api/ready", None),
        ("get", "/api/whoami", "/api/whoami", None),
        ("get", "/api/registrations", "/api/registrations", None),
        ("get", "/api/trunks", "/api/trunks", None),
        ("get", "/api/trunks/{name}", "/api/trunks/carrier", None),
        ("get", "/api/qualify", "/api/qualify", None),
        ("get", "/api/calls", "/api/calls", None),
        ("get", "/api/dialplans", "/api/dialplans", None),
        ("get", "/api/dialplans/{name}", "/api/dialplans/acme", None),
        ("post", "/api/explain", "/api/explain", {"from": "62880001", "to": "60002", "group": "acme"}),
        ("post", "/api/explain", "/api/explain", {"from": "62880001", "to": "999", "group": "acme"}),
        ("get", "/api/directory", "/api/directory?q=sales", None),
        ("get", "/api/dialplan-versions", "/api/dialplan-versions", None),
        ("get", "/api/accounts", "/api/accounts", None),
        ("get", "/api/accounts/{scope}/{key}", "/api/accounts/number/62880001", None),
        ("get", "/api/charging", "/api/charging", None),
        ("get", "/api/billing/statement", "/api/billing/statement?group=acme&month=2026-12", None),
        ("get", "/api/stats", "/api/stats", None),
        ("get", "/api/audit", "/api/audit", None),
    ]
    for method, template, path, body in cases:
        reply = api.call(method.upper(), path, body)
        assert reply.status == 200, (path, reply.text)
        validate(served_doc, response_schema(served_doc, method, template, 200), reply.body)
    assert api.get("/api/registrations").body["count"] >= 1
    text = api.get("/api/dialplans/acme").body["text"]
    validation = api.call("POST", "/api/dialplans/acme/validate", {"text": text + "\nbogus: 1\n"})
    validate(served_doc, "Validation", validation.body)
    assert validation.body["ok"] is False
    for reply in (
        api.get("/api/trunks", token=False),
        api.get("/api/calls/none"),
        api.call("POST", "/api/explain", {}),
    ):
        validate(served_doc, "Error", reply.body)


def test_the_console_and_its_files_are_served(api: Api) -> None:
    page = api.get("/", token=False)
    assert page.status == 200 and "<title>" in page.text
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    for name in ("console.js", "console.css"):
        assert api.get(f"/static/{name}", token=False).status == 200


def test_routes_are_public_only_where_documented_so() -> None:
    app: web.Application = create_app(cast(Services, object()))
    doc = document()
    for route in app.router.routes():
        if route.method == "HEAD" or route.resource is None:
            continue
        info = route.resource.get_info()
        path = str(info.get("path") or info.get("formatter"))
        public = getattr(route.handler, "required_role", "admin") is None
        operation = doc["paths"][path][route.method.lower()]
        assert (operation.get("security") == []) == public, (route.method, path)
