"""Sites as operations see them (gateway.edge.sites), pure with a fixed clock: online, offline
by last will, stale by silence; the version on trial and the core step; bad input dropped."""

from __future__ import annotations

import json

from gateway.edge.sites import MAX_SITES, SiteDirectory


def state(**fields: object) -> bytes:
    doc = {"site": "s1", "online": True, "desired_version": 3, "converged": True, **fields}
    return json.dumps(doc).encode()


def test_online_offline_stale_and_retired() -> None:
    sites = SiteDirectory(stale_after_s=90)
    assert sites.message("edge/s1/state", state(), now=1000.0)
    [row] = sites.rows(now=1089.0)
    assert row["reachability"] == "online" and row["applied_version"] == 3 and row["last_seen"] == 1000.0
    assert sites.rows(now=1091.0)[0]["reachability"] == "stale"  # silent too long
    sites.message("edge/s1/state", b'{"site": "s1", "online": false}', now=1100.0)  # the last will
    assert sites.rows(now=1100.0)[0]["reachability"] == "offline"
    assert sites.message("edge/s1/state", b"", now=1200.0)  # retained state cleared: retired
    assert sites.rows(now=1200.0) == []


def test_trial_core_step_and_last_event() -> None:
    sites = SiteDirectory(stale_after_s=90)
    reach = {"targets": [{"name": "core", "role": "core", "ok": False}, {"role": "device", "ok": True}]}
    sites.message(
        "edge/s1/state", state(pending_confirm={"version": 4, "deadline": 2000.0}, reachability=reach), 1.0
    )
    sites.message("edge/s1/events", b'{"type": "commit_rolled_back", "ts": 5.0, "version": 4}', 5.0)
    [row] = sites.rows(now=6.0)
    assert row["pending_confirm"] == {"version": 4, "deadline": 2000.0}
    assert row["core_reachable"] is False
    assert row["last_event"] == {"type": "commit_rolled_back", "ts": 5.0}
    assert row["last_seen"] == 5.0


def test_bad_input_is_dropped_and_counted() -> None:
    sites = SiteDirectory(stale_after_s=90)
    for topic, payload in (
        ("edge/s1/state", b"{nope"),
        ("edge/s1/state", b"[1, 2]"),
        ("edge/s1/cmd", b"{}"),
        ("edge/+/state", b"{}"),
        ("edge/s1/state/x", b"{}"),
        ("other/s1/state", b"{}"),
        ("edge/s1/events", b"\xff\xfe"),
    ):
        assert not sites.message(topic, payload, now=1.0)
    assert sites.dropped == 7 and sites.rows(now=1.0) == []


def test_number_of_sites_is_bounded() -> None:
    sites = SiteDirectory(stale_after_s=90)
    for n in range(MAX_SITES + 5):
        sites.message(f"edge/s{n}/state", state(), now=1.0)
    assert len(sites.sites) == MAX_SITES and sites.dropped == 5
