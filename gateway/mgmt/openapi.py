"""The OpenAPI 3.1 document of the operations API, written as data.

Served at ``/api/openapi.json``. ``tests/mgmt/test_openapi.py`` checks that every aiohttp
route is documented, every documented path is routed, and that real responses validate
against the schemas given here (OpenAPI 3.1 schemas are JSON Schema 2020-12).
"""

from __future__ import annotations

import copy
from typing import Any

VERSION = "1.0.0"

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def obj(properties: dict[str, Schema], required: list[str] | None = None, *, extra: bool = True) -> Schema:
    schema: Schema = {"type": "object", "properties": properties,
                      "required": list(properties) if required is None else required}
    if not extra:
        schema["additionalProperties"] = False
    return schema


STR: Schema = {"type": "string"}
INT: Schema = {"type": "integer"}
NUM: Schema = {"type": "number"}
BOOL: Schema = {"type": "boolean"}
ANY: Schema = {}


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


SCHEMAS: dict[str, Schema] = {
    "Error": obj({"error": obj({"code": STR, "message": STR, "details": {"type": "object"}})}),
    "Health": obj({"status": {"const": "ok"}, "node": STR, "uptime_s": NUM}),
    "Ready": obj({"ready": BOOL, "checks": {"type": "object", "additionalProperties": obj(
        {"ok": BOOL, "detail": STR})}}),
    "WhoAmI": obj({"name": STR, "role": {"enum": ["read", "admin"]}}),
    "Binding": obj({
        "aor": STR, "key": STR, "contact": STR, "source": STR, "expires_in": INT,
        "user_agent": nullable(STR), "trunk": nullable(STR), "group": nullable(STR), "call_id": STR,
        "cseq": INT, "q": nullable(NUM), "instance": nullable(STR), "reg_id": nullable(INT),
        "registered_at": nullable(NUM),
    }),
    "Registrations": obj({"registrations": array(ref("Binding")), "count": INT, "truncated": BOOL}),
    "RegistrationRemoved": obj({"aor": STR, "removed": INT, "remaining": array(ref("Binding"))}),
    "Qualify": nullable(obj({"state": {"enum": ["unknown", "up", "down"]}, "streak": INT,
                             "changed_at": nullable(NUM)})),
    "Destination": obj({"address": STR, "priority": INT, "weight": INT, "registers": BOOL,
                        "qualify": ref("Qualify")}),
    "Trunk": obj({
        "name": STR, "kind": {"enum": ["registering", "peer", "carrier"]}, "group": STR, "enabled": BOOL,
        "transport": STR, "max_calls": INT, "max_cps": NUM, "active_calls": INT,
        "destinations": array(ref("Destination")), "lines": INT,
    }, required=["name", "kind", "group", "enabled", "transport", "max_calls", "max_cps", "active_calls",
                 "destinations"]),
    "Trunks": obj({"trunks": array(ref("Trunk"))}),
    "TrunkPatch": obj({"enabled": BOOL}, extra=False),
    "QualifyStatus": obj({"enabled": BOOL, "targets": array(obj({
        "name": STR, "address": STR, "state": STR, "streak": INT, "changed_at": nullable(NUM)}))}),
    "Call": obj({
        "id": STR, "state": {"enum": ["routing", "calling", "early", "confirmed", "cancelling", "ended"]},
        "call_class": STR,
        "from": nullable(STR), "to": nullable(STR), "request_uri": STR, "a_call_id": STR,
        "b_call_id": nullable(STR), "source": STR, "inbound_trunk": nullable(STR),
        "outbound_trunk": nullable(STR), "destination": nullable(STR), "attempt": INT, "age_s": NUM,
        "answered_for_s": nullable(NUM),
    }),
    "Calls": obj({"calls": array(ref("Call")), "count": INT, "completed": INT, "failed": INT}),
    "HangUp": obj({"id": STR, "state": STR}),
    "Problem": obj({"file": STR, "line": nullable(INT), "field": STR, "message": STR}),
    "DialplanFile": obj({"name": STR, "kind": nullable(STR), "group": nullable(STR), "bytes": INT,
                         "digest": STR}),
    "CurrentVersion": obj({
        "version": nullable(INT), "source": STR, "applied_at": nullable(STR), "applied_by": nullable(STR),
        "plan_digest": STR, "groups": array(STR),
    }),
    "Dialplans": {"allOf": [ref("CurrentVersion"), obj({"dialplans": array(ref("DialplanFile"))})]},
    "Dialplan": {"allOf": [ref("CurrentVersion"), obj({"name": STR, "text": STR})]},
    "DialplanText": obj({"text": {"type": "string", "minLength": 1},
                         "comment": {"type": "string", "maxLength": 500}}, required=["text"], extra=False),
    "Validation": obj({"ok": BOOL, "errors": array(ref("Problem")), "warnings": array(ref("Problem")),
                       "plan_digest": nullable(STR)}),
    "Version": obj({
        "number": INT, "digest": STR, "plan_digest": STR, "applied_at": STR, "applied_by": STR,
        "comment": STR, "source": {"enum": ["seed", "replace", "rollback"]}, "files": array(STR),
        "rolled_back_to": nullable(INT),
    }),
    "Applied": obj({"version": ref("Version"), "warnings": array(ref("Problem"))}, required=["version"]),
    "Versions": obj({"current": nullable(INT), "versions": array(ref("Version"))}),
    "VersionFiles": {"allOf": [ref("Version"), obj({"texts": {
        "type": "object", "additionalProperties": STR}})]},
    "Rollback": obj({"comment": {"type": "string", "maxLength": 500}}, required=[], extra=False),
    "DirectoryEntry": obj({
        "group": STR, "name": STR, "department": STR, "title": STR, "kind": STR,
        "short": nullable(STR), "long": nullable(STR), "e164": nullable(STR),
    }),
    "Directory": obj({"entries": array(ref("DirectoryEntry")), "count": INT, "truncated": BOOL}),
    "ExplainRequest": obj({
        "from": {"type": "string", "minLength": 1}, "to": {"type": "string", "minLength": 1},
        "at": {"type": "string", "format": "date-time",
               "description": "ISO 8601; without an offset: the group's time zone"},
        "group": STR, "origin": {"enum": ["member", "pbx", "carrier"]}, "trunk": STR,
        "draft": obj({"name": STR, "text": STR}, extra=False),
    }, required=["from", "to"], extra=False),
    "Explanation": obj({
        "against": {"enum": ["live", "draft"]},
        "request": obj({"origin": STR, "calling": STR, "called": STR, "at": STR, "group": nullable(STR),
                        "trunk": nullable(STR)}),
        "trace": array(obj({"step": STR, "detail": STR})),
        "decision": obj({"result": {"enum": ["route", "refused"]}}, required=["result"]),
    }),
    "AccountState": {"enum": ["normal", "arrears", "suspended", "pre_cancelled", "cancelled"]},
    "Accounts": obj({
        "store": STR, "states": array(ref("AccountState")),
        "numbers": {"type": "object", "additionalProperties": ref("AccountState")},
        "groups": {"type": "object", "additionalProperties": ref("AccountState")},
    }),
    "Account": obj({"scope": {"enum": ["number", "group"]}, "key": STR, "state": ref("AccountState")}),
    "AccountSet": obj({"state": ref("AccountState")}, extra=False),
    "SpendAlarms": obj({"alarms": array(obj({
        "key": STR, "fen": INT, "limit": INT, "raised_at": {"type": "number"}, "bars_international": BOOL,
    }))}),
    "SpendAlarmCleared": obj({"key": STR, "cleared": BOOL}),
    "AccountChanged": obj({"scope": STR, "key": STR, "state": ref("AccountState"),
                           "previous": ref("AccountState")}),
    "Charging": obj({
        "enabled": BOOL, "sink": nullable(STR), "healthy": nullable(BOOL), "degraded": nullable(BOOL),
        "backlog": INT, "spool_segments": INT, "open_calls": INT, "events_per_second": NUM,
    }),
    "Statement": obj({
        "group": STR, "month": STR, "version": nullable(INT), "created_at": nullable(STR),
        "reason": STR, "currency": STR, "tariff_id": STR, "timezone": STR, "account_state": STR,
        "fees": array(obj({"item": STR, "detail": STR, "count": INT, "days": INT, "monthly_fen": INT,
                           "amount_fen": INT})),
        "package": nullable(obj({"name": nullable(STR), "fee_fen": INT, "classes": {"type": "object"}})),
        "usage": array(obj({
            "period": STR, "call_class": STR, "payer_role": STR, "off_net_group": BOOL,
            "contract": nullable(STR), "tariff": STR, "calls": INT, "minutes": STR, "charged_minutes": STR,
            "included_minutes": STR, "amount_fen": INT, "discount_fen": INT,
        })),
        "totals": obj({"calls": INT, "fees_fen": INT, "package_fen": INT, "usage_fen": INT,
                       "discount_fen": INT, "total_fen": INT}),
    }),
    "Point": obj({"t": NUM, "cps": NUM, "failures_per_s": NUM, "failure_rate": NUM, "active_calls": INT,
                  "registrations": nullable(INT), "loop_lag_ms": NUM}),
    "Stats": obj({
        "node": STR, "registrations": nullable(INT), "active_calls": INT, "transactions": INT,
        "loop_lag_ms": NUM, "last": nullable(ref("Point")), "history": array(ref("Point")),
        "trunks": array(obj({"name": STR, "kind": STR, "enabled": BOOL,
                             "health": {"enum": ["up", "down", "degraded", "unknown", "disabled"]},
                             "active_calls": INT, "max_calls": INT})),
    }),
    "Sites": obj({"following": BOOL, "broker_connected": BOOL, "sites": array(obj({
        "site": STR, "reachability": {"enum": ["online", "offline", "stale"]}, "last_seen": nullable(NUM),
        "applied_version": nullable(INT), "pending_confirm": nullable(obj({"version": INT, "deadline": NUM})),
        "converged": nullable(BOOL), "core_reachable": nullable(BOOL),
        "survivable": nullable({"type": "object"}),
        "agent_version": nullable(STR), "last_event": nullable(obj({"type": ANY, "ts": ANY})),
    }))}),
    "Ban": obj({"host": STR, "until": NUM, "remaining": NUM,
                "reason": {"enum": ["flood", "scanner", "auth_failures", "operator"]},
                "by": STR, "added": NUM}),
    "Bans": obj({"store": {"enum": ["memory", "redis"]}, "bans": array(ref("Ban")),
                 "locked_users": array(obj({"username": STR, "until": NUM}))}),
    "BanAdd": obj({"host": STR, "seconds": NUM}, required=["host"], extra=False),
    "BanLifted": obj({"host": STR, "lifted": BOOL}),
    "Audit": obj({"records": array(obj({
        "time": STR, "node": STR, "who": STR, "role": STR, "action": STR, "target": STR,
        "before": ANY, "after": ANY, "details": {"type": "object"}}))}),
}


def _json(schema: str) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": ref(schema)}}}


ERRORS = {
    "401": {"description": "no or unknown bearer token", **_json("Error")},
    "403": {"description": "the token's role may not do this", **_json("Error")},
}
INVALID = {"422": {"description": "invalid request (details.errors names each field)", **_json("Error")}}
NOT_FOUND = {"404": {"description": "no such object", **_json("Error")}}
UNAVAILABLE = {"503": {"description": "a store this needs is unreachable", **_json("Error")}}


def op(summary: str, response: str | None, *, role: str | None = "read", status: str = "200",
       body: str | None = None, params: list[Schema] | None = None, extra: dict[str, Any] | None = None,
       tag: str = "operations") -> dict[str, Any]:
    responses: dict[str, Any] = {status: {"description": "OK", **(_json(response) if response else {})}}
    if role is not None:
        responses.update(ERRORS)
    responses.update(extra or {})
    # Any other failure (400 bad JSON, 409 conflict, 413 too large, 500) has the same shape.
    responses["default"] = {"description": "error", **_json("Error")}
    operation: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": responses}
    if role is None:
        operation["security"] = []
    else:
        operation["description"] = f"Role: {role}."
    if body is not None:
        operation["requestBody"] = {"required": True, **_json(body)}
    if params:
        operation["parameters"] = params
    return operation


def path_param(name: str, description: str) -> Schema:
    return {"name": name, "in": "path", "required": True, "schema": STR, "description": description}


def query(name: str, description: str, schema: Schema | None = None) -> Schema:
    return {"name": name, "in": "query", "required": False, "schema": schema or STR,
            "description": description}


PATHS: dict[str, dict[str, Any]] = {
    "/": {"get": {**op("The web console (HTML)", None, role=None, tag="console"),
                  "responses": {"200": {"description": "the console", "content": {"text/html": {}}}}}},
    "/static/{file}": {"get": {
        **op("A static file of the console", None, role=None, tag="console",
             params=[path_param("file", "console.js or console.css")]),
        "responses": {"200": {"description": "the file"}, **NOT_FOUND}}},
    "/metrics": {"get": {**op("Prometheus metrics (text exposition format)", None, role=None, tag="health"),
                         "responses": {"200": {"description": "metrics", "content": {"text/plain": {}}}}}},
    "/api/openapi.json": {"get": {**op("This document", None, role=None, tag="health"),
                                  "responses": {"200": {"description": "OpenAPI 3.1",
                                                        "content": {"application/json": {}}}}}},
    "/api/health": {"get": op("Liveness: the process serves HTTP", "Health", role=None, tag="health")},
    "/api/ready": {"get": op("Readiness: SIP listening, dialplan loaded, location store reachable", "Ready",
                             role=None, tag="health",
                             extra={"503": {"description": "not ready", **_json("Ready")}})},
    "/api/whoami": {"get": op("The name and role of the presented token", "WhoAmI")},
    "/api/registrations": {"get": op(
        "Registered contacts, filtered by group, number (substring of the AOR) or trunk", "Registrations",
        params=[query("group", "group name"), query("number", "part of the number"),
                query("trunk", "trunk name"), query("limit", "at most this many (1-10000)", INT)],
        extra={**INVALID, **UNAVAILABLE})},
    "/api/registrations/{aor}": {"delete": op(
        "Remove a registration: one binding (key) or all bindings of the AOR", "RegistrationRemoved",
        role="admin", params=[path_param("aor", "the registered number"),
                              query("key", "the binding's key (see GET); all bindings when absent")],
        extra={**NOT_FOUND, **UNAVAILABLE})},
    "/api/trunks": {"get": op("Trunks with their destinations, qualify state and active calls", "Trunks")},
    "/api/trunks/{name}": {
        "get": op("One trunk", "Trunk", params=[path_param("name", "trunk name")], extra=NOT_FOUND),
        "patch": op("Enable or disable a trunk (until restart; the trunk file is the source of truth)",
                    "Trunk", role="admin", body="TrunkPatch", params=[path_param("name", "trunk name")],
                    extra={**NOT_FOUND, **INVALID}),
    },
    "/api/qualify": {"get": op("OPTIONS qualify targets and their state", "QualifyStatus")},
    "/api/calls": {"get": op("Active calls", "Calls", params=[query("limit", "at most this many", INT)])},
    "/api/calls/{id}": {
        "get": op("One active call", "Call", params=[path_param("id", "call id")], extra=NOT_FOUND),
        "delete": op("Hang up a call (BYE both legs, or CANCEL / 503 before answer)", "HangUp", role="admin",
                     status="202", params=[path_param("id", "call id")], extra=NOT_FOUND),
    },
    "/api/dialplans": {"get": op("The dialplan files and the active version", "Dialplans", tag="dialplans")},
    "/api/dialplans/{name}": {
        "get": op("One dialplan file (YAML text)", "Dialplan", tag="dialplans",
                  params=[path_param("name", "file name without .yaml (a group id, or carrier)")],
                  extra=NOT_FOUND),
        "put": op("Replace a dialplan file: the whole set is validated, then swapped in atomically as a "
                  "new version; a bad file changes nothing (422 with every problem)", "Applied",
                  role="admin", body="DialplanText", tag="dialplans",
                  params=[path_param("name", "file name without .yaml")], extra=INVALID),
    },
    "/api/dialplans/{name}/validate": {"post": op(
        "Validate a draft of one file together with the rest of the live set (changes nothing)",
        "Validation", body="DialplanText", tag="dialplans",
        params=[path_param("name", "file name without .yaml")], extra=INVALID)},
    "/api/explain": {"post": op(
        "Decide one call against the live dialplan (or a draft of one file) with every step", "Explanation",
        body="ExplainRequest", tag="dialplans", extra=INVALID)},
    "/api/directory": {"get": op(
        "Enterprise directory (企业通信录) and number lookup: members by name, department, title or "
        "part of a number, from the live dialplan", "Directory",
        params=[query("q", "text in name/department/title, or digits in a short or long number"),
                query("group", "group name"), query("limit", "at most this many (1-1000, default 50)", INT)],
        tag="dialplans", extra={**NOT_FOUND, **INVALID})},
    "/api/dialplan-versions": {"get": op("Applied dialplan versions, newest first", "Versions",
                                         tag="dialplans")},
    "/api/dialplan-versions/{number}": {"get": op(
        "One version with its files", "VersionFiles", tag="dialplans",
        params=[path_param("number", "version number")], extra={**NOT_FOUND, **INVALID})},
    "/api/dialplan-versions/{number}/rollback": {"post": op(
        "Re-apply a stored version (validated and swapped like a replace; recorded as a new version)",
        "Applied", role="admin", body="Rollback", tag="dialplans",
        params=[path_param("number", "version number")], extra={**NOT_FOUND, **INVALID})},
    "/api/accounts": {"get": op("Numbers and groups not in the normal state", "Accounts", tag="accounts",
                                extra=UNAVAILABLE)},
    "/api/accounts/{scope}/{key}": {
        "get": op("The account state of a number or group", "Account", tag="accounts",
                  params=[path_param("scope", "number or group"), path_param("key", "the number or group")],
                  extra={**NOT_FOUND, **INVALID, **UNAVAILABLE}),
        "put": op("Set the account state of a number or group (applies to the next call)", "AccountChanged",
                  role="admin", body="AccountSet", tag="accounts",
                  params=[path_param("scope", "number or group"), path_param("key", "the number or group")],
                  extra={**NOT_FOUND, **INVALID, **UNAVAILABLE}),
    },
    "/api/fraud/alarms": {"get": op(
        "Spend-velocity alarms (toll-fraud guard): line:NUMBER or group:ID over its fen per hour",
        "SpendAlarms", tag="fraud", extra=NOT_FOUND)},
    "/api/fraud/alarms/{key}": {"delete": op(
        "Clear an alarm (lifts the line's international bar; its window starts again)", "SpendAlarmCleared",
        role="admin", tag="fraud", params=[path_param("key", "line:NUMBER, group:ID or a bare line number")],
        extra=NOT_FOUND)},
    "/api/charging": {"get": op("Charging: sink health, backlog, spool depth, events per second",
                                "Charging")},
    "/api/billing/statement": {"get": op(
        "A group's monthly statement (月结帐单): rent and fees, package use, usage by class, contract "
        "discounts, totals in fen. The latest kept version (or `version`); a draft when none was issued "
        "yet (`gateway billing statement` issues, `gateway billing rerate` adds a version)", "Statement",
        tag="billing",
        params=[query("group", "group id (required)"), query("month", "YYYY-MM (required)"),
                query("version", "a kept version (default: the latest)", INT),
                query("format", "json (default) or csv")],
        extra={**NOT_FOUND, **INVALID, **UNAVAILABLE})},
    "/api/stats": {"get": op("Dashboard figures and the history of the last minutes", "Stats",
                             params=[query("seconds", "history length (1-600)", INT)], extra=INVALID)},
    "/api/audit": {"get": op("The latest audit records of this process", "Audit",
                             params=[query("limit", "at most this many (1-1000)", INT)], extra=INVALID)},
    "/api/sites": {"get": op("Edge sites from their agents' MQTT reports: reachability, applied version, "
                             "survivable mode, last seen (needs the edge: section)", "Sites")},
    "/api/bans": {
        "get": op("Banned source addresses (every worker's, from the shared store) and locked user names",
                  "Bans", tag="security", extra={**NOT_FOUND, **UNAVAILABLE}),
        "post": op("Ban a source address (default: security.ban_time seconds); its packets are dropped "
                   "unanswered before parsing", "Ban", role="admin", status="201", body="BanAdd",
                   tag="security", extra={**NOT_FOUND, **INVALID, **UNAVAILABLE}),
    },
    "/api/bans/{host}": {"delete": op(
        "Lift the ban of a source address", "BanLifted", role="admin", tag="security",
        params=[path_param("host", "the banned IPv4 or IPv6 address")],
        extra={**NOT_FOUND, **INVALID, **UNAVAILABLE})},
}


def document() -> dict[str, Any]:
    """The OpenAPI document (a fresh copy: callers may not change the shared one)."""
    return copy.deepcopy({
        "openapi": "3.1.0",
        "info": {
            "title": "IMS fusion gateway operations API",
            "version": VERSION,
            "description": (
                "Network operations: registrations, trunks, calls, dialplans (validate, explain, "
                "replace, roll back), account states, charging. Bearer tokens from api.tokens: the "
                "read role may GET (and validate / explain), the admin role may also change. Every "
                'error is {"error": {"code", "message", "details"}}.'
            ),
        },
        "servers": [{"url": "/"}],
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": PATHS,
    })
