"""The dialplan router in-process: who is calling, the decision, destinations from the location
store and the trunk table, account-state gating, caller ID and charging attributes."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from gateway.accounts.policy import AccountState
from gateway.accounts.store import AccountGate, MemoryAccountStore, Scope
from gateway.call.auth import LineAuth
from gateway.call.model import Route
from gateway.call.routing import NO_CIRCUIT_REASON, DialplanRouter, Refused
from gateway.call.settings import CallSettings
from gateway.registrar.location import Binding, LocationStoreError
from gateway.registrar.trunks import TrunkTable, load_trunks
from gateway.routing import CallClass, DialplanHolder
from gateway.sip.address import Address
from gateway.sip.headers import Headers
from gateway.sip.message import Request
from tests.support.gateway import PROJECT_ROOT

LINE1 = Address("udp", "127.0.0.1", 40001)
LINE2 = Address("udp", "127.0.0.1", 40002)
LINE3 = Address("udp", "127.0.0.1", 40003)
PBX = Address("udp", "127.0.0.1", 5092)


def invite(calling: str, called: str, preferred: str | None = None) -> Request:
    headers = Headers()
    if preferred is not None:
        headers.add("P-Preferred-Identity", f"<sip:{preferred}@127.0.0.1>")
    headers.add("Via", "SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bKx")
    headers.add("From", f"<sip:{calling}@127.0.0.1>;tag=a")
    headers.add("To", f"<sip:{called}@gw>")
    headers.add("Call-ID", "c")
    headers.add("CSeq", "1 INVITE")
    headers.add("Contact", "<sip:x@127.0.0.1:1>")
    return Request("INVITE", f"sip:{called}@gw", headers)


def demo_trunks(
    path: Path, invite_auth: str, *, source: str = "trunks.yaml", allowed: dict[str, str] | None = None
) -> TrunkTable:
    """A shipped trunk file (``config/<source>``) with the IAD's ``invite_auth`` set and the
    ``allowed`` numbers of the named trunks."""
    data = yaml.safe_load((PROJECT_ROOT / "config" / source).read_text(encoding="utf-8"))
    for trunk in data["trunks"]:
        if trunk["kind"] == "registering":
            trunk["invite_auth"] = invite_auth
        if allowed and trunk["name"] in allowed:
            trunk["allowed_numbers"] = allowed[trunk["name"]]
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return load_trunks(path)


@pytest.fixture
def trunks(tmp_path: Path) -> TrunkTable:
    return demo_trunks(tmp_path / "trunks.yaml", "never")


def router(
    trunks: TrunkTable, store: MemoryAccountStore | None = None, line_auth: LineAuth | None = None
) -> DialplanRouter:
    """The demo dialplan; lines are trusted by source unless ``line_auth`` is given (routing is
    tested here; proxy authentication in tests/call/test_line_auth.py)."""
    holder = DialplanHolder.load([PROJECT_ROOT / "dialplans"], known_trunks=list(trunks.trunks))
    bindings = {
        "62880001": [Binding("62880001", "k", f"sip:62880001@127.0.0.1:{LINE1.port}", 1e12, "r", 1, LINE1)],
        "62880002": [Binding("62880002", "k", f"sip:62880002@127.0.0.1:{LINE2.port}", 1e12, "r", 1, LINE2)],
        "62880003": [Binding("62880003", "k", f"sip:62880003@127.0.0.1:{LINE3.port}", 1e12, "r", 1, LINE3)],
    }

    async def contacts(number: str) -> list[Binding]:
        return bindings.get(number, [])

    gate = AccountGate(store) if store is not None else None
    return DialplanRouter(
        lambda: holder.plan,
        trunks,
        CallSettings(),
        contacts=contacts,
        clock=lambda: datetime(2026, 11, 23, 2, 0, tzinfo=UTC),
        accounts=gate,
        line_auth=line_auth,
    )


async def test_line_to_short_number_reaches_the_registered_contact(trunks: TrunkTable) -> None:
    route = await router(trunks)(invite("62880001", "60002"), LINE1)
    assert isinstance(route, Route)
    (destination,) = route.destinations
    assert destination.address == LINE2 and destination.request_uri() == "sip:62880002@127.0.0.1:40002"
    assert route.presented_calling == "60001" and route.asserted_calling == "+862162880001"
    assert {s.key for s in route.scopes} == {"trunk:acme-iad"}
    assert route.charge is not None and route.charge.call_class is CallClass.INTRA_GROUP_SHORT
    assert route.charge.called.short_number == "60002"


async def test_carrier_destination_is_trusted_and_normalised(trunks: TrunkTable) -> None:
    route = await router(trunks)(invite("62880001", "013800138000"), LINE1)
    assert isinstance(route, Route)
    assert route.destinations[0].request_uri() == "sip:+8613800138000@127.0.0.1:5070"
    assert route.destinations[0].trusted
    assert {s.key for s in route.scopes} == {"trunk:acme-iad", "trunk:carrier"}


async def test_same_number_from_another_address_is_not_the_line(trunks: TrunkTable) -> None:
    # From 62880001 but not from where 62880001 registered, and no trunk matches: refused.
    outcome = await router(trunks)(invite("62880001", "60002"), Address("udp", "127.0.0.9", 5060))
    assert outcome == Refused(403, "Unknown Peer")


async def test_pbx_calls_a_member(trunks: TrunkTable) -> None:
    route = await router(trunks)(invite("1000", "60002"), PBX)
    assert isinstance(route, Route) and route.inbound_trunk == "acme-pbx"
    assert route.destinations[0].address == LINE2


async def test_unregistered_target_is_480(trunks: TrunkTable) -> None:
    outcome = await router(trunks)(invite("62880001", "60004"), LINE1)
    assert isinstance(outcome, Refused) and outcome.status == 480


async def test_a_call_whose_trunk_is_disabled_gets_503_with_a_q850_reason(tmp_path: Path) -> None:
    # A survivable site: no breakout.
    site = demo_trunks(tmp_path / "site-trunks.yaml", "never", source="site-trunks.yaml")
    outcome = await router(site)(invite("62880001", "013800138000"), LINE1)
    assert outcome == Refused(503, "Service Unavailable", NO_CIRCUIT_REASON)


async def test_account_in_arrears_is_refused_with_the_policy_status_and_q850(trunks: TrunkTable) -> None:
    store = MemoryAccountStore()
    await store.set(Scope.NUMBER, "62880001", AccountState.ARREARS)
    outcome = await router(trunks, store)(invite("62880001", "013800138000"), LINE1)
    assert isinstance(outcome, Refused) and outcome.status == 403
    assert outcome.reason_header is not None and outcome.reason_header.startswith("Q.850;cause=")
    # An arrears line may still be called (incoming allowed by the default policy).
    route = await router(trunks, store)(invite("62880002", "60001"), LINE2)
    assert isinstance(route, Route)


async def test_emergency_passes_every_state(trunks: TrunkTable) -> None:
    store = MemoryAccountStore()
    await store.set(Scope.GROUP, "acme", AccountState.SUSPENDED)
    outcome = await router(trunks, store)(invite("62880001", "110"), LINE1)
    assert not (isinstance(outcome, Refused) and outcome.status == 403), outcome


async def test_other_carrier_numbers_of_a_line_pass_only_when_approved(trunks: TrunkTable) -> None:
    """他网号码: 62880003 calls From (or asks with P-Preferred-Identity for) another carrier's
    number registered on it; the approved one is presented, the pending one is not."""
    routed = router(trunks)
    for request in (invite("02155550001", "013800138000"), invite("62880003", "013800138000", "02155550001")):
        route = await routed(request, LINE3)
        assert isinstance(route, Route) and route.inbound_trunk == "acme-iad", route
        assert (route.presented_calling, route.asserted_calling) == ("+862155550001", "+862155550001")
    pending = await routed(invite("02155550002", "013800138000"), LINE3)
    assert isinstance(pending, Route) and pending.presented_calling == "+862162880003"
    # From another carrier's number but not from where its line registered: not the line.
    stranger = await routed(invite("02155550001", "013800138000"), LINE1)
    assert stranger == Refused(403, "Unknown Peer")
    # Another line asking for it gets its own number.
    other_line = await routed(invite("62880001", "013800138000", "02155550001"), LINE1)
    assert isinstance(other_line, Route) and other_line.presented_calling == "+862162880001"


async def test_allowed_numbers_are_enforced_for_every_trunk_kind(tmp_path: Path) -> None:
    trunks = demo_trunks(
        tmp_path / "trunks.yaml",
        "never",
        allowed={"acme-iad": "62880001-62880002", "carrier": "13800000000-13899999999"},
    )
    routed = router(trunks)
    # A line outside its IAD's allowed numbers calls out as the group's own (main) number.
    route = await routed(invite("62880003", "013800138000"), LINE3)
    assert isinstance(route, Route)
    assert (route.presented_calling, route.asserted_calling) == ("+862162880000", "+862162880000")
    inside = await routed(invite("62880001", "013800138000"), LINE1)
    assert isinstance(inside, Route) and inside.presented_calling == "+862162880001"
    # Intra-group calls show short numbers, whatever the trunk's list.
    intra = await routed(invite("62880003", "60001"), LINE3)
    assert isinstance(intra, Route) and intra.presented_calling == "60003"
    # A carrier caller outside the carrier's allowed numbers: refused (fail closed).
    carrier = Address("udp", "127.0.0.1", 5070)
    assert await routed(invite("02087654321", "62880001"), carrier) == Refused(
        403, "Calling Number Not Allowed On Trunk"
    )
    assert isinstance(await routed(invite("13800138000", "62880001"), carrier), Route)


async def test_a_location_store_error_is_a_clean_503(trunks: TrunkTable) -> None:
    holder = DialplanHolder.load([PROJECT_ROOT / "dialplans"], known_trunks=list(trunks.trunks))

    async def contacts(number: str) -> list[Binding]:
        raise LocationStoreError("redis: connection refused")

    route = DialplanRouter(lambda: holder.plan, trunks, CallSettings(), contacts=contacts,
                           clock=lambda: datetime(2026, 11, 23, 2, 0, tzinfo=UTC))
    outcome = await route(invite("62880001", "60002"), LINE1)
    assert outcome == Refused(503, "Location Service Unavailable", headers=(("Retry-After", "5"),))
