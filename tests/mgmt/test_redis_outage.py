"""Redis goes away under the API: reads that need it answer 503 with the error shape, changes
that need it are refused, the audit file still records what was done, and everything recovers
when Redis is back."""

from __future__ import annotations

import json
from pathlib import Path

from tests.mgmt.support import api_gateway, wait_api
from tests.support.servers import RedisServer


def test_api_survives_a_redis_outage(tmp_path: Path, redis_srv: RedisServer) -> None:
    if redis_srv.proc is None:
        redis_srv.start()
    redis_srv.flush()
    gw, api = api_gateway(tmp_path / "gw", redis_url=redis_srv.url)
    gw.start()
    try:
        wait_api(api)
        assert api.get("/api/ready", token=False).status == 200
        redis_srv.stop()
        try:
            ready = api.get("/api/ready", token=False)
            assert ready.status == 503 and ready.body["checks"]["location_store"]["ok"] is False
            registrations = api.get("/api/registrations")
            assert registrations.status == 503
            assert registrations.body["error"]["code"] == "store_unavailable"
            accounts = api.call("PUT", "/api/accounts/number/62880001", {"state": "arrears"})
            assert accounts.status == 503 and accounts.body["error"]["code"] == "store_unavailable"
            # Dialplan changes need no Redis: applied, on disk, audited to the file.
            text = api.get("/api/dialplans/acme").body["text"]
            applied = api.call("PUT", "/api/dialplans/acme", {"text": text.replace("ACME Trading", "ACME")})
            assert applied.status == 200, applied.text
            assert api.get("/api/health", token=False).status == 200
            assert api.get("/metrics", token=False).status == 200
        finally:
            redis_srv.start()
        records = [json.loads(line) for line in (gw.workdir / "var" / "audit.log").read_text().splitlines()]
        assert records[-1]["action"] == "dialplan.replace"
        assert "cannot add to Redis stream" in gw.log()
        wait_api(api)
        assert api.get("/api/registrations").status == 200
        assert api.get("/api/ready", token=False).status == 200
    finally:
        gw.stop()
