"""Registrations, trunks, account states, calls, charging and stats through the API."""

from __future__ import annotations

import time

from tests.mgmt.support import Api
from tests.registrar.peers import register
from tests.support.gateway import GatewayProcess, probe_options


def test_registrations_list_filter_and_remove(api: Api, gw: GatewayProcess) -> None:
    for number in ("62880001", "62880002"):
        assert register(gw.port, number).status == 200
    rows = api.get("/api/registrations").body["registrations"]
    mine = {r["aor"]: r for r in rows}
    assert {"62880001", "62880002"} <= set(mine)
    assert mine["62880001"]["group"] == "acme" and mine["62880001"]["trunk"] == "acme-iad"
    assert mine["62880001"]["expires_in"] > 0
    assert {r["aor"] for r in api.get("/api/registrations?number=62880002").body["registrations"]} == {
        "62880002"
    }
    assert api.get("/api/registrations?group=acme").body["count"] >= 2
    assert api.get("/api/registrations?group=other").body["count"] == 0
    assert api.get("/api/registrations?limit=1").body == {
        **api.get("/api/registrations?limit=1").body,
        "count": 1,
        "truncated": True,
    }
    key = mine["62880002"]["key"]
    assert api.call("DELETE", "/api/registrations/62880002?key=nope").status == 404
    removed = api.call("DELETE", f"/api/registrations/62880002?key={key}").body
    assert removed["removed"] == 1 and removed["remaining"] == []
    assert api.get("/api/registrations?number=62880002").body["count"] == 0
    assert api.call("DELETE", "/api/registrations/62880002").status == 404
    record = api.get("/api/audit").body["records"][-1]
    assert record["action"] == "registration.remove" and record["target"] == "62880002"
    assert record["before"] and record["after"] == []


def test_trunk_disable_and_enable(api: Api, gw: GatewayProcess) -> None:
    trunks = {t["name"]: t for t in api.get("/api/trunks").body["trunks"]}
    assert set(trunks) == {"acme-iad", "acme-pbx", "carrier"}
    assert trunks["carrier"]["kind"] == "carrier" and trunks["carrier"]["destinations"][0]["priority"] == 10
    assert trunks["acme-iad"]["lines"] == 8
    off = api.call("PATCH", "/api/trunks/acme-iad", {"enabled": False})
    assert off.status == 200 and off.body["enabled"] is False
    # A disabled registering trunk's credentials are refused: the line cannot register.
    assert register(gw.port, "62880005").status in (401, 403)
    on = api.call("PATCH", "/api/trunks/acme-iad", {"enabled": True})
    assert on.body["enabled"] is True
    assert register(gw.port, "62880005").status == 200
    actions = [r["action"] for r in api.get("/api/audit").body["records"]]
    assert actions[-2:] == ["trunk.disable", "trunk.enable"]
    stats = api.get("/api/stats").body
    assert {t["name"]: t["health"] for t in stats["trunks"]}["acme-iad"] != "disabled"


def test_account_states_get_set_and_list(api: Api, gw: GatewayProcess) -> None:
    assert api.get("/api/accounts/number/62880007").body["state"] == "normal"
    changed = api.call("PUT", "/api/accounts/number/62880007", {"state": "pre_cancelled"}).body
    assert changed["previous"] == "normal" and changed["state"] == "pre_cancelled"
    assert api.get("/api/accounts").body["numbers"]["62880007"] == "pre_cancelled"
    assert api.get("/api/accounts").body["store"] == "redis"
    assert api.get("/api/accounts/number/62880007").body["state"] == "pre_cancelled"
    assert api.call("PUT", "/api/accounts/nobody/x", {"state": "normal"}).status == 404
    api.call("PUT", "/api/accounts/number/62880007", {"state": "normal"})
    assert "62880007" not in api.get("/api/accounts").body["numbers"]


def test_calls_charging_and_stats_while_idle(api: Api) -> None:
    calls = api.get("/api/calls").body
    assert calls["calls"] == [] and calls["count"] == 0
    assert api.get("/api/calls/none").status == 404
    assert api.call("DELETE", "/api/calls/none").status == 404
    charging = api.get("/api/charging").body
    assert charging["enabled"] is True and charging["sink"] == "failover" and charging["healthy"] is True
    deadline = time.monotonic() + 10
    while not api.get("/api/stats?seconds=5").body["history"]:
        assert time.monotonic() < deadline, "no history point after 10 s"
        time.sleep(0.2)
    stats = api.get("/api/stats?seconds=5").body
    assert stats["registrations"] is not None and stats["last"]["active_calls"] == 0


def test_metrics_cover_the_gateway(api: Api, gw: GatewayProcess) -> None:
    assert probe_options(gw.host, gw.port) is not None
    text = api.get("/metrics", token=False).text
    for name in (
        "sip_messages_received_total",
        "sip_messages_dropped",
        "gateway_registrations",
        "gateway_event_loop_lag_seconds",
        "gateway_calls_per_second",
        "gateway_charging_backlog",
        "gateway_calls_active",
        "gateway_call_attempts_total",
        "sip_transaction_retransmissions_sent_total",
        "sip_transaction_retransmissions_absorbed_total",
        "sip_transaction_timeouts_total",
        "call_limit_refusals_total",
    ):
        assert name in text, name
