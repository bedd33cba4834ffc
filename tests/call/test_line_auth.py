"""Proxy authentication of a line's calls (407, RFC 3261 §22.3) through the dialplan router:
the challenge, the line's own credentials only, wrong passwords and locked users answered
alike and reported to the failure observer, nonce-count replays, ``off_net`` and ``never``,
and the nonce counts shared through a real redis-server (a replay through another worker is
refused; Redis down fails closed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.call.auth import LineAuth
from gateway.call.model import Route
from gateway.call.routing import Refused
from gateway.registrar.digest import DigestVerifier, RedisNonceCounts
from gateway.registrar.trunks import TrunkTable
from gateway.sip.address import Address
from gateway.sip.auth import Algorithm, Challenge, authorization_for
from gateway.sip.message import Request
from tests.call.test_routing import LINE1, demo_trunks, invite, router
from tests.registrar.peers import PASSWORD
from tests.support.servers import free_port

KEY = b"k" * 32
NOW = 1_800_000_000.0


class Recorder:
    """An AuthFailureObserver that remembers what it was told and locks whom it is told to."""

    def __init__(self, locked: frozenset[str] = frozenset()) -> None:
        self.failed: list[tuple[str, str]] = []
        self.locked = locked

    def auth_failed(self, source_host: str, username: str, now: float) -> None:
        self.failed.append((source_host, username))

    def user_locked(self, username: str, now: float) -> bool:
        return username in self.locked


def verifier(trunks: TrunkTable, observer: Recorder | None = None, **kwargs: object) -> DigestVerifier:
    return DigestVerifier("ims-gateway", [Algorithm.MD5], trunks, KEY, nonce_lifetime=300,
                          observer=observer, **kwargs)  # type: ignore[arg-type]


def answered(request: Request, refused: Refused, user: str, password: str = PASSWORD, nc: int = 1) -> Request:
    """``request`` again with Proxy-Authorization answering the 407 ``refused``."""
    assert refused.status == 407, refused
    (value,) = [v for name, v in refused.headers if name == "Proxy-Authenticate"]
    creds = authorization_for(Challenge.parse(value), username=user, password=password,
                              method="INVITE", uri=request.uri, nc=nc, cnonce="c0ffee")
    again = Request(request.method, request.uri, request.headers.copy(), request.body)
    again.headers.add("Proxy-Authorization", creds.render())
    return again


@pytest.fixture
def always(tmp_path: Path) -> TrunkTable:
    return demo_trunks(tmp_path / "trunks.yaml", "always")


async def test_a_line_is_challenged_then_accepted_with_its_own_credentials(always: TrunkTable) -> None:
    route = router(always, line_auth=LineAuth(verifier(always), clock=lambda: NOW))
    first = await route(invite("62880001", "013800138000"), LINE1)
    assert isinstance(first, Refused) and first.status == 407
    assert any(name == "Proxy-Authenticate" and "qop=\"auth\"" in v for name, v in first.headers)
    second = await route(answered(invite("62880001", "013800138000"), first, "62880001"), LINE1)
    assert isinstance(second, Route) and second.outbound_trunk == "carrier"


async def test_credentials_of_another_line_are_refused(always: TrunkTable) -> None:
    route = router(always, line_auth=LineAuth(verifier(always), clock=lambda: NOW))
    first = await route(invite("62880001", "013800138000"), LINE1)
    assert isinstance(first, Refused)
    other = await route(answered(invite("62880001", "013800138000"), first, "62880002"), LINE1)
    assert isinstance(other, Refused) and other.status == 403


async def test_wrong_password_and_locked_user_get_the_same_challenge_and_are_reported(
    always: TrunkTable,
) -> None:
    observer = Recorder(locked=frozenset({"62880001"}))
    route = router(always, line_auth=LineAuth(verifier(always, observer), clock=lambda: NOW))
    first = await route(invite("62880002", "013800138000"), Address("udp", "127.0.0.1", 40002))
    assert isinstance(first, Refused)
    wrong = await route(answered(invite("62880002", "013800138000"), first, "62880002", "guess"),
                        Address("udp", "127.0.0.1", 40002))
    challenge = await route(invite("62880001", "013800138000"), LINE1)
    assert isinstance(challenge, Refused)
    locked = await route(answered(invite("62880001", "013800138000"), challenge, "62880001"), LINE1)
    for outcome in (wrong, locked):
        assert isinstance(outcome, Refused) and outcome.status == 407 and outcome.reason == first.reason
        assert [n for n, _ in outcome.headers] == ["Proxy-Authenticate"]
        assert "stale" not in outcome.headers[0][1]
    assert observer.failed == [("127.0.0.1", "62880002"), ("127.0.0.1", "62880001")]


async def test_a_replayed_nonce_count_is_refused_as_stale_and_reported(always: TrunkTable) -> None:
    observer = Recorder()
    route = router(always, line_auth=LineAuth(verifier(always, observer), clock=lambda: NOW))
    first = await route(invite("62880001", "013800138000"), LINE1)
    assert isinstance(first, Refused)
    request = answered(invite("62880001", "013800138000"), first, "62880001")
    assert isinstance(await route(request, LINE1), Route)
    replay = await route(request, LINE1)
    assert isinstance(replay, Refused) and replay.status == 407 and "stale=true" in replay.headers[0][1]
    assert observer.failed == [("127.0.0.1", "62880001")]


async def test_off_net_challenges_only_calls_that_leave_the_group(tmp_path: Path) -> None:
    trunks = demo_trunks(tmp_path / "trunks.yaml", "off_net")
    route = router(trunks, line_auth=LineAuth(verifier(trunks), clock=lambda: NOW))
    assert isinstance(await route(invite("62880001", "60002"), LINE1), Route)
    outcome = await route(invite("62880001", "013800138000"), LINE1)
    assert isinstance(outcome, Refused) and outcome.status == 407


async def test_never_trusts_the_registered_address(tmp_path: Path) -> None:
    trunks = demo_trunks(tmp_path / "trunks.yaml", "never")
    route = router(trunks, line_auth=LineAuth(verifier(trunks), clock=lambda: NOW))
    assert isinstance(await route(invite("62880001", "013800138000"), LINE1), Route)


async def test_an_authenticated_line_may_call_from_a_new_address(always: TrunkTable) -> None:
    moved = Address("udp", "127.0.0.1", 40777)  # its NAT mapping changed since it registered
    route = router(always, line_auth=LineAuth(verifier(always), clock=lambda: NOW))
    first = await route(invite("62880001", "60002"), moved)
    assert first == Refused(403, "Unknown Peer")  # no credentials, not its address: not the line
    challenge = await route(invite("62880001", "60002"), LINE1)
    assert isinstance(challenge, Refused)
    accepted = await route(answered(invite("62880001", "60002"), challenge, "62880001"), moved)
    assert isinstance(accepted, Route)


async def test_without_a_verifier_lines_that_must_authenticate_are_refused(always: TrunkTable) -> None:
    outcome = await router(always, line_auth=LineAuth(None))(invite("62880001", "60002"), LINE1)
    assert isinstance(outcome, Refused) and outcome.status == 403


async def test_nonce_counts_in_redis_are_shared_by_workers_and_fail_closed(
    always: TrunkTable, redis_url: str, tmp_path: Path
) -> None:
    """Two workers (two verifiers, one key, one redis-server): a request accepted by one is a
    replay for the other. With the server stopped, the call is refused 503 (fail closed)."""
    counts = [RedisNonceCounts(redis_url, 300) for _ in range(2)]
    workers = [
        router(always, line_auth=LineAuth(verifier(always, counts=store), clock=lambda: NOW))
        for store in counts
    ]
    first = await workers[0](invite("62880001", "013800138000"), LINE1)
    assert isinstance(first, Refused)
    request = answered(invite("62880001", "013800138000"), first, "62880001")
    assert isinstance(await workers[0](request, LINE1), Route)
    replay = await workers[1](request, LINE1)
    assert isinstance(replay, Refused) and replay.status == 407 and "stale=true" in replay.headers[0][1]
    fresh = answered(invite("62880001", "013800138000"), first, "62880001", nc=2)
    assert isinstance(await workers[1](fresh, LINE1), Route)

    # A store that cannot answer: a Redis URL nothing listens on.
    dead = RedisNonceCounts(f"redis://127.0.0.1:{free_port()}/0", 300)
    down = router(always, line_auth=LineAuth(verifier(always, counts=dead), clock=lambda: NOW))
    refused = await down(answered(invite("62880001", "013800138000"), first, "62880001", nc=3), LINE1)
    assert isinstance(refused, Refused) and refused.status == 503
    assert ("Retry-After", "5") in refused.headers
    for store in (*counts, dead):
        await store.close()
