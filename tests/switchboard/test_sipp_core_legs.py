"""The switchboard is an application of the call core: its hunt legs are the core's legs
(:mod:`gateway.call.legs`), so they get what every call gets. Through real SIPp peers: a caller
asking for privacy (``Privacy: id``) is not shown to the member it rings (RFC 3323 §4.1.1.3,
RFC 3325 §9.1) and Max-Forwards goes down by one; the trunk's call limit holds for hunt legs
(two members ringing at once over a PBX trunk with room for one call: one INVITE); a suspended
group's switchboard refuses its callers with the state's status and Q.850 cause (RFC 3326),
as call control does for suspended accounts."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml

from tests.call.harness import run_caller, screen
from tests.support.gateway import GatewayProcess
from tests.support.servers import RedisServer
from tests.switchboard.peers import WORKDAY_MORNING, demo_gateway
from tests.switchboard.test_sipp_ivr import CALLER, PBX, assert_ok, call, callee_invite, settle

REFUSED = Path(__file__).resolve().parent.parent / "mgmt" / "sipp" / "call_uac_403.xml"
HUNTING = {"support": {"strategy": "simultaneous", "members": ["61001", "61002"], "ring_seconds": 5}}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, redis_srv: RedisServer) -> Iterator[GatewayProcess]:
    """The demo tenant with Redis (accounts) and the PBX trunk limited to one call at a time."""
    if redis_srv.proc is None:
        redis_srv.start()
    redis_srv.flush()
    process = demo_gateway(
        tmp_path_factory.mktemp("sb-legs"), carrier=CALLER, pbx=PBX, at=WORKDAY_MORNING, hunting=HUNTING
    )
    trunks_file = process.workdir / "trunks.yaml"
    trunks = yaml.safe_load(trunks_file.read_text())
    for trunk in trunks["trunks"]:
        if trunk["name"] == "acme-pbx":
            trunk["max_calls"] = 1
    trunks_file.write_text(yaml.safe_dump(trunks), encoding="utf-8")
    process.extra_config["redis"] = {"url": redis_srv.url}
    process.start()
    try:
        yield process
    finally:
        process.stop()


def header(message: str, name: str) -> list[str]:
    return re.findall(rf"^{name}:\s*(.*?)\r?$", message, re.M | re.I)


def test_a_caller_asking_for_privacy_is_not_shown_to_the_member(gw: GatewayProcess, tmp_path: Path) -> None:
    result, _receiver, invites = call(gw, tmp_path, keys="info", info_key="2", privacy=True)
    assert_ok(result, gw, tmp_path)
    invite = callee_invite(invites)
    assert invite.startswith(f"INVITE sip:1001@127.0.0.1:{PBX} "), invite  # key 2: support
    (from_,) = header(invite, "From")
    assert from_.startswith('"Anonymous" <sip:anonymous@anonymous.invalid>;tag='), from_
    assert "13911112222" not in invite, invite  # neither From, PAI nor anything else
    assert header(invite, "P-Asserted-Identity") == [] and header(invite, "Privacy") == [], invite
    assert header(invite, "Max-Forwards") == ["69"], invite  # the caller's 70, less one hop
    settle(gw)


def test_hunt_legs_respect_the_trunk_call_limit(gw: GatewayProcess, tmp_path: Path) -> None:
    """Support rings 61001 and 61002 at once, both over acme-pbx (max_calls 1): the second leg
    is refused by the limit (never sent), the first answers and the caller is connected."""
    result, _receiver, invites = call(gw, tmp_path, keys="info", info_key="2")
    assert_ok(result, gw, tmp_path)
    sent = re.findall(r"^INVITE sip:(\d+)@", invites, re.M)
    assert sent == ["1001"], invites
    assert "Limit Reached (trunk:acme-pbx)" in gw.log(), gw.log()[-3000:]
    settle(gw)


def test_a_suspended_groups_switchboard_refuses_with_the_states_status(
    gw: GatewayProcess, tmp_path: Path, redis_srv: RedisServer
) -> None:
    client = redis.Redis.from_url(redis_srv.url)
    try:
        client.hset("accounts:group", "acme", "suspended")
        # From the carrier trunk's address: a caller from the network dials the switchboard.
        result = run_caller(tmp_path, str(REFUSED), CALLER, gw, service="62880000", extra=["-trace_msg"])
    finally:
        client.hdel("accounts:group", "acme")
        client.close()
    assert result.returncode == 0, screen(tmp_path) + gw.log()[-3000:]
    log = "".join(p.read_text(errors="replace") for p in tmp_path.glob("*_messages.log"))
    (final,) = re.findall(r"^SIP/2\.0 403 .*?\r?\n\r?\n", log, re.M | re.S)
    assert final.startswith("SIP/2.0 403 Account Suspended"), final
    assert header(final, "Reason") == ['Q.850;cause=21;text="Account Suspended"'], final
    settle(gw)
