"""Authentication, roles and the error shape, against a running gateway."""

from __future__ import annotations

import json
import socket

from tests.mgmt.support import READER, Api, Reply, redis_url_of
from tests.support.gateway import GatewayProcess


def assert_error(reply: Reply, status: int, code: str) -> dict[str, object]:
    assert reply.status == status, reply.text
    assert set(reply.body) == {"error"}, reply.body
    error = reply.body["error"]
    assert set(error) == {"code", "message", "details"}, error
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], dict)
    return error  # type: ignore[no-any-return]


def test_health_readiness_openapi_and_metrics_are_public(api: Api) -> None:
    assert api.get("/api/health", token=False).body["status"] == "ok"
    ready = api.get("/api/ready", token=False)
    assert ready.status == 200 and ready.body["ready"] is True, ready.text
    assert api.get("/api/openapi.json", token=False).body["openapi"].startswith("3.1")
    metrics = api.get("/metrics", token=False)
    assert metrics.status == 200 and "gateway_event_loop_lag_seconds" in metrics.text


def test_no_or_unknown_token_is_refused(api: Api) -> None:
    for path in ("/api/trunks", "/api/registrations", "/api/dialplans", "/api/calls", "/api/accounts"):
        reply = api.get(path, token=False)
        assert_error(reply, 401, "unauthorized")
        assert reply.headers.get("WWW-Authenticate", "").startswith("Bearer")
        assert_error(api.get(path, token="not-a-configured-token-at-all"), 401, "unauthorized")
    # Not a bearer scheme at all.
    reply = api.call("GET", "/api/trunks", token=False, raw=None)
    assert reply.status == 401


def test_read_token_reads_but_cannot_change(api: Api) -> None:
    reader = Api(api.base, READER)
    assert reader.get("/api/whoami").body == {"name": "ops-read", "role": "read"}
    assert reader.get("/api/trunks").status == 200
    # Read-only POSTs are open to readers: explain and validate change nothing.
    assert (
        reader.call("POST", "/api/explain", {"from": "62880001", "to": "60002", "group": "acme"}).status
        == 200
    )
    text = api.get("/api/dialplans/acme").body["text"]
    assert reader.call("POST", "/api/dialplans/acme/validate", {"text": text}).body["ok"] is True
    refusals = [
        reader.call("PUT", "/api/dialplans/acme", {"text": text}),
        reader.call("POST", "/api/dialplan-versions/1/rollback", {}),
        reader.call("PATCH", "/api/trunks/carrier", {"enabled": False}),
        reader.call("PUT", "/api/accounts/number/62880001", {"state": "arrears"}),
        reader.call("DELETE", "/api/registrations/62880001"),
        reader.call("DELETE", "/api/calls/nope"),
    ]
    for reply in refusals:
        error = assert_error(reply, 403, "forbidden")
        assert "admin" in str(error["message"])
    assert api.get("/api/trunks/carrier").body["enabled"] is True


def test_unknown_routes_and_methods_get_the_error_shape(api: Api) -> None:
    assert_error(api.get("/api/nothing-here"), 404, "not_found")
    assert_error(api.get("/api/nothing-here", token=False), 404, "not_found")
    assert_error(api.call("DELETE", "/api/trunks"), 405, "method_not_allowed")
    assert_error(api.get("/api/trunks/no-such-trunk"), 404, "not_found")
    assert_error(api.get("/static/../../etc/passwd"), 404, "not_found")


def test_request_validation_names_the_field(api: Api) -> None:
    error = assert_error(api.call("POST", "/api/explain", {"to": "60002"}), 422, "invalid_request")
    assert "from" in str(error["message"])
    assert {"field": "from", "message": "Field required"} in error["details"]["errors"]  # type: ignore[index]
    error = assert_error(
        api.call("PUT", "/api/accounts/number/62880001", {"state": "bankrupt"}), 422, "invalid_request"
    )
    assert error["details"]["errors"][0]["field"] == "state"  # type: ignore[index]
    error = assert_error(
        api.call("PATCH", "/api/trunks/carrier", {"enabled": "perhaps", "x": 1}), 422, "invalid_request"
    )
    fields = {e["field"] for e in error["details"]["errors"]}  # type: ignore[index]
    assert fields == {"enabled", "x"}
    error = assert_error(
        api.call("POST", "/api/explain", {"from": "1", "to": "2", "at": "noon"}), 422, "invalid_request"
    )
    assert "at" in str(error["message"])
    assert_error(api.call("POST", "/api/explain", raw=b"{not json"), 400, "invalid_json")
    assert_error(api.call("POST", "/api/explain", raw=b"[1, 2]"), 422, "invalid_request")
    error = assert_error(api.get("/api/stats?seconds=100000"), 422, "invalid_request")
    assert "seconds" in str(error["message"])
    assert_error(api.get("/api/accounts/number/12ab"), 422, "invalid_request")


def test_oversized_body_is_refused_and_the_api_keeps_serving(api: Api) -> None:
    reply = api.call("POST", "/api/explain", raw=b'{"from": "' + b"1" * (5 << 20) + b'"}')
    assert reply.status == 413
    assert api.get("/api/health", token=False).status == 200


def test_garbage_on_the_socket_does_not_hurt(api: Api) -> None:
    host, port = api.base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"\x16\x03\x01\x00\xa5garbage\r\n\r\n")
        sock.recv(1024)
    assert api.get("/api/health", token=False).status == 200


def test_changes_are_audited_to_the_file_and_redis(api: Api, gw: GatewayProcess) -> None:
    reply = api.call("PUT", "/api/accounts/group/acme", {"state": "suspended"})
    assert reply.body == {"scope": "group", "key": "acme", "state": "suspended", "previous": "normal"}
    api.call("PUT", "/api/accounts/group/acme", {"state": "normal"})
    lines = (gw.workdir / "var" / "audit.log").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    change = [r for r in records if r["action"] == "account.set" and r["target"] == "group:acme"]
    assert change[-2]["who"] == "ops-admin" and change[-2]["role"] == "admin"
    assert (change[-2]["before"], change[-2]["after"]) == ("normal", "suspended")
    assert change[-2]["time"].endswith("+00:00")
    assert api.get("/api/audit?limit=5").body["records"][-1]["after"] == "normal"
    import redis

    client = redis.Redis.from_url(redis_url_of(gw))
    try:
        entries = client.xrange("gw:audit")
    finally:
        client.close()
    streamed = [json.loads(fields[b"record"]) for _, fields in entries]
    assert any(r["action"] == "account.set" and r["after"] == "suspended" for r in streamed)
