"""Bans through the operations API and ``gateway ctl bans``: an operator's ban silences an
address before parsing, the lift restores it, both are audited; the answers match the OpenAPI
document; the read role may list but not change."""

from __future__ import annotations

import socket
from typing import Any

from tests.mgmt.support import READER, Api
from tests.mgmt.test_ctl import ctl
from tests.mgmt.test_openapi import response_schema, validate
from tests.support.gateway import GatewayProcess, options_request

SOURCE = "127.0.0.21"


def answered(gw: GatewayProcess, source: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.settimeout(1.0)
        sock.sendto(options_request("127.0.0.1", gw.port, sock.getsockname()[:2]), ("127.0.0.1", gw.port))
        try:
            return sock.recv(65535).startswith(b"SIP/2.0 200 ")
        except TimeoutError:
            return False


def test_operator_bans_and_lifts_an_address(api: Api, gw: GatewayProcess) -> None:
    doc: dict[str, Any] = api.get("/api/openapi.json", token=False).body
    assert answered(gw, SOURCE)
    added = ctl(api, "bans", "add", SOURCE, "--seconds", "600")
    assert added.returncode == 0 and f"banned {SOURCE} for" in added.stdout, added.stderr
    assert not answered(gw, SOURCE)  # dropped unanswered, before parsing
    listing = api.get("/api/bans").body
    validate(doc, response_schema(doc, "get", "/api/bans", 200), listing)
    ban = next(b for b in listing["bans"] if b["host"] == SOURCE)
    assert ban["reason"] == "operator" and ban["by"] == "ops-admin" and 590 < ban["remaining"] <= 600
    assert listing["store"] == "redis"
    table = ctl(api, "bans").stdout
    assert table.startswith("address") and SOURCE in table and "operator" in table
    assert ctl(api, "bans", "add", SOURCE, token=READER).returncode == 1  # 403 for the read role
    lifted = ctl(api, "bans", "lift", SOURCE)
    assert lifted.returncode == 0 and f"ban of {SOURCE} lifted" in lifted.stdout, lifted.stderr
    assert answered(gw, SOURCE)
    assert SOURCE not in ctl(api, "bans").stdout
    actions = [(r["action"], r["target"], r["who"]) for r in api.get("/api/audit").body["records"]]
    assert ("ban.add", SOURCE, "ops-admin") in actions and ("ban.lift", SOURCE, "ops-admin") in actions


def test_bad_ban_requests_are_refused_precisely(api: Api) -> None:
    bad = api.call("POST", "/api/bans", {"host": "gateway.example.com"})
    assert bad.status == 422 and bad.body["error"]["message"] == "host: must be an IPv4 or IPv6 address"
    assert api.call("POST", "/api/bans", {"host": "192.0.2.1", "seconds": 0}).status == 422
    missing = api.call("DELETE", "/api/bans/192.0.2.99")
    assert missing.status == 404 and "not banned" in missing.body["error"]["message"]
    v6 = api.call("POST", "/api/bans", {"host": "[2001:DB8::1]", "seconds": 5})
    assert v6.status == 201 and v6.body["host"] == "2001:db8::1"
    assert api.call("DELETE", "/api/bans/2001:db8::1").status == 200
