"""``gateway ctl`` against a running gateway: the API's main calls from a terminal or a script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.mgmt.support import ADMIN, READER, Api
from tests.registrar.peers import register
from tests.support.gateway import PROJECT_ROOT, GatewayProcess
from tests.support.servers import free_port


def ctl(api: Api, *args: str, token: str | None = ADMIN) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GATEWAY_TOKEN", "GATEWAY_URL")}
    if token is not None:
        env["GATEWAY_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "gateway", "ctl", "--url", api.base, *args],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )


def test_explain_and_registrations(api: Api, gw: GatewayProcess) -> None:
    assert register(gw.port, "62880004").status == 200
    out = ctl(api, "dialplan", "explain", "--from", "62880001", "--to", "60002", "--group", "acme")
    assert out.returncode == 0, out.stderr
    assert "decision: ROUTE as intra_group_short" in out.stdout and "1. caller:" in out.stdout
    data = json.loads(ctl(api, "--json", "registrations", "--number", "62880004").stdout)
    assert [r["aor"] for r in data["registrations"]] == ["62880004"]
    table = ctl(api, "registrations", "--group", "acme").stdout
    assert "62880004" in table and table.startswith("number")
    removed = ctl(api, "registrations", "remove", "62880004")
    assert removed.returncode == 0 and "removed 1 binding" in removed.stdout
    assert "62880004" not in ctl(api, "registrations").stdout


def test_dialplan_validate_apply_rollback(api: Api, tmp_path: Path) -> None:
    text = ctl(api, "dialplan", "get", "acme").stdout
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(text.replace("13800138001", "13900139001"))
    bad.write_text(text.replace('short_first: "60001"', 'short_first: "70001"'))
    failed = ctl(api, "dialplan", "validate", "acme", str(bad))
    assert failed.returncode == 1 and "error: acme.yaml:" in failed.stdout and "FAILED" in failed.stdout
    refused = ctl(api, "dialplan", "apply", "acme", str(bad))
    assert refused.returncode == 1 and "acme.yaml" in refused.stderr
    assert ctl(api, "dialplan", "validate", "acme", str(good)).returncode == 0
    applied = ctl(api, "dialplan", "apply", "acme", str(good), "--comment", "from ctl")
    assert applied.returncode == 0 and applied.stdout.startswith("applied: version"), applied.stderr
    versions = json.loads(ctl(api, "--json", "dialplan", "versions").stdout)
    seed = versions["versions"][-1]["number"]
    assert versions["versions"][0]["comment"] == "from ctl"
    rolled = ctl(api, "dialplan", "rollback", str(seed))
    assert rolled.returncode == 0 and f"rolled back to {seed}" in rolled.stdout
    assert ctl(api, "dialplan", "get", "acme").stdout == text


def test_accounts_and_roles(api: Api) -> None:
    assert ctl(api, "account", "set", "number", "62880008", "suspended").stdout.strip() == (
        "number 62880008: normal -> suspended"
    )
    assert ctl(api, "account", "get", "number", "62880008").stdout.strip() == "number 62880008: suspended"
    assert "62880008" in ctl(api, "account", "list").stdout
    denied = ctl(api, "account", "set", "number", "62880008", "normal", token=READER)
    assert denied.returncode == 1 and "403" in denied.stderr
    assert ctl(api, "account", "set", "number", "62880008", "normal").returncode == 0
    anonymous = ctl(api, "trunks", token=None)
    assert anonymous.returncode == 1 and "401" in anonymous.stderr
    assert "carrier" in ctl(api, "trunks", token=READER).stdout
    assert ctl(api, "health", token=None).stdout.startswith("ready: True")


def test_unreachable_gateway_and_usage_errors(api: Api, tmp_path: Path) -> None:
    dead = Api(f"http://127.0.0.1:{free_port()}")
    out = ctl(dead, "trunks")
    assert out.returncode == 3 and "cannot reach" in out.stderr
    missing = ctl(api, "dialplan", "validate", "acme", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr
