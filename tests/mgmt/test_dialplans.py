"""Dialplans through the API: validate, explain (live and draft), replace with an atomic swap,
bad drafts refused while the old plan keeps serving, versions, roll back, restart."""

from __future__ import annotations

import json
from pathlib import Path

import redis

from tests.mgmt.support import Api, api_gateway, redis_url_of, wait_api
from tests.support.gateway import GatewayProcess
from tests.support.servers import RedisServer

OLD_MOBILE, NEW_MOBILE = "13800138001", "13900139001"


def mobile_target(api: Api, draft: dict[str, str] | None = None) -> str:
    body: dict[str, object] = {"from": "1001", "trunk": "acme-pbx", "to": "66001"}
    if draft is not None:
        body["draft"] = draft
    reply = api.call("POST", "/api/explain", body)
    assert reply.status == 200, reply.text
    assert reply.body["request"]["origin"] == "pbx"
    assert reply.body["trace"], reply.body
    return str(reply.body["decision"]["targets"][0]["user"])


def test_explain_shows_the_decision_and_every_step(api: Api) -> None:
    reply = api.call(
        "POST",
        "/api/explain",
        {"from": "62880001", "to": "60002", "group": "acme", "at": "2026-11-23T10:00:00"},
    )
    body = reply.body
    assert body["against"] == "live"
    assert body["request"]["origin"] == "member" and body["request"]["at"].startswith(
        "2026-11-23T10:00:00+08:00"
    )
    assert [s["step"] for s in body["trace"]][:2] == ["caller", "short number"]
    assert body["decision"]["result"] == "route"
    assert body["decision"]["call_class"] == "intra_group_short"
    refused = api.call("POST", "/api/explain", {"from": "62880001", "to": "60999", "group": "acme"}).body
    assert refused["decision"]["result"] == "refused" and refused["decision"]["status"] == 404
    unknown = api.call("POST", "/api/explain", {"from": "62880001", "to": "60002", "group": "nobody"})
    assert unknown.status == 422 and "group" in unknown.body["error"]["message"]


def test_validate_reports_file_line_and_field(api: Api) -> None:
    text = api.get("/api/dialplans/acme").body["text"]
    bad = text.replace('short_first: "60001"', 'short_first: "70001"')
    assert bad != text
    result = api.call("POST", "/api/dialplans/acme/validate", {"text": bad}).body
    assert result["ok"] is False
    problem = result["errors"][0]
    assert problem["file"] == "acme.yaml" and isinstance(problem["line"], int) and problem["line"] > 1
    assert problem["field"].startswith("lines[0]"), problem
    syntax = api.call("POST", "/api/dialplans/acme/validate", {"text": "kind: group\n  id: [\n"}).body
    assert syntax["ok"] is False and "YAML" in syntax["errors"][0]["message"]
    good = api.call("POST", "/api/dialplans/acme/validate", {"text": text}).body
    assert good["ok"] is True and good["errors"] == []
    assert good["plan_digest"] == api.get("/api/dialplans").body["plan_digest"]


def test_explain_against_a_draft_leaves_the_live_plan_alone(api: Api) -> None:
    text = api.get("/api/dialplans/acme").body["text"]
    draft = {"name": "acme", "text": text.replace(OLD_MOBILE, NEW_MOBILE)}
    assert mobile_target(api, draft) == f"+86{NEW_MOBILE}"
    assert mobile_target(api) == f"+86{OLD_MOBILE}"
    broken = api.call(
        "POST", "/api/explain", {"from": "1", "to": "2", "draft": {"name": "acme", "text": "x: ["}}
    )
    assert broken.status == 422 and broken.body["error"]["code"] == "dialplan_invalid"


def test_bad_dialplan_is_refused_and_the_old_one_keeps_serving(api: Api) -> None:
    before = api.get("/api/dialplans").body
    text = api.get("/api/dialplans/acme").body["text"]
    bad = text.replace(OLD_MOBILE, NEW_MOBILE).replace('short_first: "60001"', 'short_first: "70001"')
    reply = api.call("PUT", "/api/dialplans/acme", {"text": bad, "comment": "broken"})
    assert reply.status == 422 and reply.body["error"]["code"] == "dialplan_invalid"
    assert "acme.yaml" in reply.body["error"]["message"]
    assert reply.body["error"]["details"]["errors"][0]["field"].startswith("lines[0]")
    after = api.get("/api/dialplans").body
    assert after["plan_digest"] == before["plan_digest"] and after["version"] == before["version"]
    assert api.get("/api/dialplans/acme").body["text"] == text
    assert mobile_target(api) == f"+86{OLD_MOBILE}"
    bad_name = api.call("PUT", "/api/dialplans/..%2Fetc", {"text": text})
    assert bad_name.status in (404, 422)


def test_replace_versions_and_roll_back(api: Api, gw: GatewayProcess) -> None:
    seed = api.get("/api/dialplans").body
    text = api.get("/api/dialplans/acme").body["text"]
    reply = api.call(
        "PUT",
        "/api/dialplans/acme",
        {"text": text.replace(OLD_MOBILE, NEW_MOBILE), "comment": "new mobile for 66001"},
    )
    assert reply.status == 200, reply.text
    version = reply.body["version"]
    assert version["source"] == "replace" and version["applied_by"] == "ops-admin"
    assert version["plan_digest"] != seed["plan_digest"]
    assert mobile_target(api) == f"+86{NEW_MOBILE}"
    history = api.get("/api/dialplan-versions").body
    assert history["current"] == version["number"]
    numbers = [v["number"] for v in history["versions"]]
    assert numbers == sorted(numbers, reverse=True)
    seed_version = history["versions"][-1]
    assert seed_version["source"] == "seed" and seed_version["plan_digest"] == seed["plan_digest"]
    stored = api.get(f"/api/dialplan-versions/{seed_version['number']}").body
    assert OLD_MOBILE in stored["texts"]["acme"] and "carrier" in stored["texts"]
    assert (
        gw.workdir / "var" / "dialplans" / "versions" / f"{version['number']:06d}" / "acme.yaml"
    ).is_file()

    rolled = api.call(
        "POST", f"/api/dialplan-versions/{seed_version['number']}/rollback", {"comment": "back to the seed"}
    )
    assert rolled.status == 200, rolled.text
    assert rolled.body["version"]["source"] == "rollback"
    assert rolled.body["version"]["rolled_back_to"] == seed_version["number"]
    assert rolled.body["version"]["plan_digest"] == seed["plan_digest"]
    assert api.get("/api/dialplans").body["plan_digest"] == seed["plan_digest"]
    assert mobile_target(api) == f"+86{OLD_MOBILE}"
    assert api.call("POST", "/api/dialplan-versions/9999/rollback", {}).status == 404
    assert api.call("POST", "/api/dialplan-versions/abc/rollback", {}).status == 422
    actions = [r["action"] for r in api.get("/api/audit").body["records"]]
    assert "dialplan.replace" in actions and "dialplan.rollback" in actions
    client = redis.Redis.from_url(redis_url_of(gw))
    try:
        stored_versions = client.hgetall("gw:dialplan:versions")
        current = client.get("gw:dialplan:current")
    finally:
        client.close()
    assert int(current or 0) == rolled.body["version"]["number"]
    latest = json.loads(stored_versions[str(rolled.body["version"]["number"]).encode()])
    assert latest["source"] == "rollback" and OLD_MOBILE in latest["texts"]["acme"]


def test_a_restart_serves_the_latest_applied_version(tmp_path: Path, redis_srv: RedisServer) -> None:
    if redis_srv.proc is None:
        redis_srv.start()
    gw, api = api_gateway(tmp_path / "gw", redis_url=None)
    gw.start()
    try:
        wait_api(api)
        text = api.get("/api/dialplans/acme").body["text"]
        applied = api.call("PUT", "/api/dialplans/acme", {"text": text.replace(OLD_MOBILE, NEW_MOBILE)}).body
    finally:
        gw.stop()
    gw.start()
    try:
        wait_api(api)
        now = api.get("/api/dialplans").body
        assert now["version"] == applied["version"]["number"]
        assert now["plan_digest"] == applied["version"]["plan_digest"]
        assert mobile_target(api) == f"+86{NEW_MOBILE}"
    finally:
        gw.stop()
    assert "serving applied version" in gw.log()
