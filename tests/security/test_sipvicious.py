"""The Debian ``sipvicious`` tools against a gateway with the demo tenant: svmap gets no answer,
svwar over the demo numbers finds nothing with REGISTER, INVITE and OPTIONS, svcrack is banned
before the right password (far down its list) comes up; each attacker's ban shows in the API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.mgmt.support import Api, api_gateway, wait_api
from tests.security.sipvicious import run_tool
from tests.support.gateway import GatewayProcess

PASSWORD = "acme-iad-secret"


def start(workdir: Path, security: dict[str, Any]) -> tuple[GatewayProcess, Api]:
    gw, api = api_gateway(workdir, redis_url=None, extra={"security": security})
    gw.start()
    wait_api(api)
    return gw, api


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, Api]]:
    gw, api = start(tmp_path_factory.mktemp("sipvicious"), {})  # the shipped defaults
    yield gw, api
    gw.stop()


def bans(api: Api) -> dict[str, str]:
    return {b["host"]: b["reason"] for b in api.get("/api/bans").body["bans"]}


def test_svmap_gets_no_answer_and_is_banned(guarded: tuple[GatewayProcess, Api], tmp_path: Path) -> None:
    gw, api = guarded
    out = run_tool("svmap", "127.0.0.11", ["-p", str(gw.port), "127.0.0.1"], cwd=tmp_path)
    assert "found nothing" in out, out
    assert bans(api).get("127.0.0.11") == "scanner"


@pytest.mark.parametrize("method", ["REGISTER", "INVITE", "OPTIONS"])
def test_svwar_over_the_demo_numbers_finds_nothing(
    guarded: tuple[GatewayProcess, Api], tmp_path: Path, method: str
) -> None:
    gw, api = guarded
    source = {"REGISTER": "127.0.0.12", "INVITE": "127.0.0.13", "OPTIONS": "127.0.0.14"}[method]
    out = run_tool("svwar", source, ["-p", str(gw.port), "-e", "62880001-62880008", "-m", method,
                                     "127.0.0.1"], cwd=tmp_path)
    assert "found nothing" in out, out
    assert "6288000" not in out, out  # no extension reported
    assert bans(api).get(source) == "scanner"


def wordlist(path: Path) -> Path:
    path.write_text("".join(f"guess{i}\n" for i in range(300)) + f"{PASSWORD}\n", encoding="utf-8")
    return path


def test_svcrack_is_dropped_at_its_first_request(guarded: tuple[GatewayProcess, Api], tmp_path: Path) -> None:
    gw, api = guarded
    out = run_tool("svcrack", "127.0.0.15", ["-p", str(gw.port), "-u", "62880001", "-d",
                                             str(wordlist(tmp_path / "words.txt")), "--maximumtime=3",
                                             "127.0.0.1"], cwd=tmp_path)
    assert PASSWORD not in out and "found nothing" in out, out
    assert bans(api).get("127.0.0.15") == "scanner"


def test_svcrack_without_the_scanner_check_is_banned_by_its_auth_failures(tmp_path: Path) -> None:
    """The User-Agent check off and no flood budget to speak of: the authentication-failure ban
    (10 in 60 s) alone stops the guessing run long before the password's line."""
    gw, api = start(tmp_path / "gw", {"scanner_user_agents": [], "flood": {"requests": 1_000_000}})
    try:
        out = run_tool("svcrack", "127.0.0.16", ["-p", str(gw.port), "-u", "62880001", "-d",
                                                 str(wordlist(tmp_path / "words.txt")), "--maximumtime=3",
                                                 "127.0.0.1"], cwd=tmp_path)
        assert PASSWORD not in out and "found nothing" in out, out
        assert bans(api).get("127.0.0.16") == "auth_failures"
        log = gw.log()
        assert "REGISTER auth failed for '62880001' from 127.0.0.16" in log
        registered = api.get("/api/registrations?number=62880001").body["registrations"]
        assert not [b for b in registered if b["source"].startswith("127.0.0.16")], registered
        metrics = api.get("/metrics", token=False).text
        assert 'security_bans_added_total{reason="auth_failures"} 1.0' in metrics
    finally:
        gw.stop()
