"""The call core driven without sockets, as the SIP core is: a fake transport records what the
core sends and the test answers for the peers; a fake clock fires the timers. An answered call,
a cancel, a failover (a 503, then silence), a session-timer expiry and a switchboard hunt (the
legs the switchboard asks for: first answer wins, the other member CANCELled with Q.850 26, a
trunk's limit). After each, nothing is left: calls, dialogs, timers, legs, limit slots."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from gateway.app import ClientRequest
from gateway.call.b2bua import B2BUA
from gateway.call.legs import OutboundLeg
from gateway.call.limits import MemoryLimiter, Scope
from gateway.call.model import Call, Destination, EndCause, Route, Side
from gateway.call.registry import CallKind
from gateway.call.routing import Refused
from gateway.call.settings import CallSettings
from gateway.config import GatewayConfig
from gateway.metrics import Metrics
from gateway.registrar.trunks import load_trunks
from gateway.sip.address import Address
from gateway.sip.message import Request, Response, make_response, parse_message

GATEWAY = Address("udp", "192.0.2.1", 5060)
CALLER = Address("udp", "192.0.2.10", 5060)
FIRST = Address("udp", "192.0.2.20", 5060)
SECOND = Address("udp", "192.0.2.21", 5060)
SDP = b"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"


@dataclass
class FakeHandle:
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class FakeClock:
    """asyncio's ``time`` / ``call_later``, advanced by the test."""

    now: float = 1000.0
    _queue: list[tuple[float, int, FakeHandle, Callable[..., object], tuple[Any, ...]]] = field(
        default_factory=list
    )
    _order: itertools.count[int] = field(default_factory=itertools.count)

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> FakeHandle:
        handle = FakeHandle()
        heapq.heappush(self._queue, (self.now + delay, next(self._order), handle, callback, args))
        return handle

    def advance(self, seconds: float) -> None:
        until = self.now + seconds
        while self._queue and self._queue[0][0] <= until:
            when, _, handle, callback, args = heapq.heappop(self._queue)
            self.now = when
            if not handle.cancelled:
                callback(*args)
        self.now = until

    @property
    def pending(self) -> int:
        return sum(not entry[2].cancelled for entry in self._queue)


@dataclass
class Sent:
    request: Request
    destination: Address
    client: ClientRequest


class FakeTransport:
    """:class:`gateway.call.transport.CallTransport` recording what the core sends."""

    def __init__(self) -> None:
        self.t1 = GatewayConfig.model_validate({}).sip.timers.t1
        self.metrics = Metrics()
        self.supported: tuple[str, ...] = ()
        self.sent: list[Sent] = []
        self.acks: list[Request] = []
        self.cancels: list[tuple[Request, list[tuple[str, str]]]] = []
        self.responses: list[Response] = []  # our responses to the caller
        self._branches = itertools.count(1)

    def local_address(
        self, transport: str, destination: Address | None = None, *, shared: bool = False
    ) -> Address:
        return GATEWAY

    def send_request(self, request: Request, destination: Address, on_response: Any = None) -> ClientRequest:
        request.headers.prepend(
            "Via", f"SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK{next(self._branches)};rport"
        )
        transaction = cast(Any, SimpleNamespace(last_response=None))
        client = ClientRequest(request, destination, transaction, on_response)
        self.sent.append(Sent(request, destination, client))
        return client

    def cancel(self, client: ClientRequest, headers: Any = ()) -> None:
        self.cancels.append((client.request, list(headers)))

    def send_ack(self, client: ClientRequest, ack: Request) -> None:
        self.acks.append(ack)

    def respond(self, request: Request, response: Response) -> None:
        self.responses.append(response)

    def add_request_handler(self, method: str, handler: Any) -> None: ...
    def set_dialog_hooks(self, *, on_ack: Any = None, on_cancel: Any = None) -> None: ...
    def accept_bodies(self, content_types: frozenset[str] | None) -> None: ...

    @property
    def accepted_bodies(self) -> frozenset[str] | None:
        return None

    # -- the peers' side -----------------------------------------------------------------------
    def last(self, method: str) -> Sent:
        return [s for s in self.sent if s.request.method == method][-1]

    def answer(
        self,
        sent: Sent,
        status: int,
        *,
        tag: str = "callee",
        headers: tuple[tuple[str, str], ...] = (),
        body: bytes = b"",
    ) -> None:
        """The peer at ``sent.destination`` answers ``sent.request``."""
        response = make_response(sent.request, status, to_tag=tag if status > 100 else None)
        if 100 < status < 300:
            response.headers.add("Contact", f"<sip:callee@{sent.destination.hostport()}>")
        for name, value in headers:
            response.headers.add(name, value)
        if body:
            response.headers.add("Content-Type", "application/sdp")
            response.body = body
        cast(Any, sent.client.transaction).last_response = response
        if status >= 200 and sent.client.final is None:
            sent.client.final = response
        assert sent.client.on_response is not None
        sent.client.on_response(response)


class Observer:
    """The call observer: what charging and metrics would hear."""

    def __init__(self) -> None:
        self.answered_calls: list[str] = []
        self.endings: list[tuple[int | None, Side | None, EndCause]] = []

    def attempt(self, call: Call) -> None: ...
    def ringing(self, call: Call) -> None: ...

    def answered(self, call: Call) -> None:
        self.answered_calls.append(call.uid)

    def ended(self, call: Call, status: int | None, released_by: Side | None, cause: EndCause) -> None:
        self.endings.append((status, released_by, cause))


@dataclass
class Core:
    b2bua: B2BUA
    transport: FakeTransport
    clock: FakeClock
    observer: Observer
    limiter: MemoryLimiter

    def assert_idle(self) -> None:
        snap = self.b2bua.snapshot()
        assert (snap["calls"], snap["dialogs"], snap["pending_invites"], snap["timers"]) == (0, 0, 0, 0), snap
        assert self.b2bua.legs.active == 0 and self.limiter.snapshot() == {}
        assert len(self.b2bua.registry) == 0  # the active-calls registry too
        assert self.clock.pending == 0


SCOPE = Scope("trunk:pbx", 10, 100.0)


def core(
    destinations: tuple[Address, ...] = (FIRST, SECOND), *, trunks_file: Path | None = None, **settings: Any
) -> Core:
    transport, clock, observer = FakeTransport(), FakeClock(), Observer()
    limiter = MemoryLimiter(clock=clock.time)
    route = Route(tuple(Destination(a, "1001", "pbx") for a in destinations), (SCOPE,), inbound_trunk="pbx")

    def router(request: Request, source: Address) -> Route | Refused:
        return route

    b2bua = B2BUA(
        transport, CallSettings.model_validate(settings), router, limiter, observer=observer, clock=clock,
        trunks=load_trunks(trunks_file) if trunks_file is not None else None,
    )  # fmt: skip
    return Core(b2bua, transport, clock, observer, limiter)


def invite(*, supported: str = "", body: bytes = SDP) -> Request:
    text = (
        "INVITE sip:1001@192.0.2.1 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKcaller1\r\n"
        "Max-Forwards: 70\r\n"
        'From: "Alice" <sip:62880001@192.0.2.10>;tag=alice\r\n'
        "To: <sip:1001@192.0.2.1>\r\n"
        "Call-ID: a-leg@192.0.2.10\r\n"
        "CSeq: 1 INVITE\r\n"
        "Contact: <sip:62880001@192.0.2.10:5060>\r\n"
        + (f"Supported: {supported}\r\n" if supported else "")
        + "Content-Type: application/sdp\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    request = parse_message(text)
    assert isinstance(request, Request)
    return request


def in_dialog(
    method: str, call_id: str, *, from_: str, to: str, cseq: int, uri: str = "sip:192.0.2.1"
) -> Request:
    text = (
        f"{method} {uri} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.99:5060;branch=z9hG4bKpeer" + str(cseq) + method + "\r\n"
        "Max-Forwards: 70\r\n"
        f"From: {from_}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    request = parse_message(text.encode())
    assert isinstance(request, Request)
    return request


def start(c: Core, request: Request | None = None) -> tuple[Request, Call]:
    a = request or invite()
    assert c.b2bua.handlers().invite(a, CALLER) is None  # admitted inline: no task, no await
    (call,) = c.b2bua.calls.values()
    return a, call


def answer_call(c: Core, **kwargs: Any) -> tuple[Request, Call]:
    a, call = start(c)
    c.transport.answer(c.transport.last("INVITE"), 180)
    c.transport.answer(c.transport.last("INVITE"), 200, body=SDP, **kwargs)
    assert [r.status for r in c.transport.responses] == [180, 200]
    ack = in_dialog(
        "ACK",
        a.call_id,
        from_="<sip:62880001@192.0.2.10>;tag=alice",
        to=f"<sip:1001@192.0.2.1>;tag={call.a.local_tag}",
        cseq=1,
    )
    c.b2bua.handlers().ack(ack, CALLER)
    return a, call


def test_an_answered_call_is_relayed_and_ends_with_a_bye_on_both_legs() -> None:
    c = core()
    a, call = answer_call(c)
    b_invite = c.transport.sent[0].request
    assert c.transport.sent[0].destination == FIRST
    assert b_invite.headers.get("Max-Forwards") == "69" and b_invite.call_id != a.call_id
    assert b_invite.body == SDP and len(c.transport.acks) == 1  # early offer: B ACKed at once
    assert c.observer.answered_calls == [call.uid]
    b = call.leg(Side.B)
    bye = in_dialog(
        "BYE",
        b.call_id,
        from_="<sip:1001@192.0.2.20>;tag=callee",
        to=f"{b_invite.headers.get('From')}",
        cseq=2,
    )
    response = c.b2bua.handlers().bye(bye, FIRST)
    assert isinstance(response, Response) and response.status == 200
    relayed = c.transport.last("BYE")
    assert relayed.destination == CALLER
    assert relayed.request.headers.get("Reason") == 'Q.850;cause=16;text="Normal call clearing"'
    assert c.observer.endings == [(None, Side.B, EndCause.NORMAL)]
    c.assert_idle()


def test_a_cancel_cancels_the_callee_with_the_callers_cause() -> None:
    c = core()
    a, _call = start(c)
    c.transport.answer(c.transport.last("INVITE"), 180)
    cancel = in_dialog(
        "CANCEL",
        a.call_id,
        from_="<sip:62880001@192.0.2.10>;tag=alice",
        to="<sip:1001@192.0.2.1>",
        cseq=1,
        uri="sip:1001@192.0.2.1",
    )
    c.b2bua.handlers().cancel(a, cancel)  # the gateway answered the INVITE 487
    ((cancelled, headers),) = c.transport.cancels
    assert cancelled is c.transport.sent[0].request
    assert headers == [("Reason", 'Q.850;cause=16;text="Normal call clearing"')]
    c.transport.answer(c.transport.last("INVITE"), 487)
    assert c.observer.endings == [(487, Side.A, EndCause.CANCELLED)]
    c.assert_idle()


def test_failover_after_a_503_and_after_silence() -> None:
    c = core((FIRST, SECOND, Address("udp", "192.0.2.22", 5060)), attempt_timeout=2.0)
    start(c)
    c.transport.answer(c.transport.sent[0], 503)  # the first destination is out of service
    assert [s.destination for s in c.transport.sent] == [FIRST, SECOND]
    c.clock.advance(2.0)  # the second says nothing at all: the third is tried
    assert [s.destination.host for s in c.transport.sent] == ["192.0.2.20", "192.0.2.21", "192.0.2.22"]
    c.transport.answer(c.transport.sent[2], 486)  # busy: the caller is told so
    assert c.transport.responses[-1].status == 486
    assert c.observer.endings == [(486, Side.B, EndCause.REJECTED)]
    c.transport.answer(c.transport.sent[1], 408)  # the silent one's Timer B, long after
    c.assert_idle()


def test_a_session_that_is_never_refreshed_expires_with_bye_on_both_legs() -> None:
    """B answers with a 90 s session refreshed by itself (``refresher=uas``) and never does:
    before the interval is over (a third of it, at most 32 s, RFC 4028 §10) both legs get a BYE
    with Q.850 102, and charging hears ``session_expired``."""
    c = core()
    _a, call = answer_call(c, headers=(("Session-Expires", "90;refresher=uas"), ("Require", "timer")))
    assert call.session_interval == 90
    c.clock.advance(59.0)
    assert [s.request.method for s in c.transport.sent] == ["INVITE"]
    c.clock.advance(1.0)
    byes = [s for s in c.transport.sent if s.request.method == "BYE"]
    assert {s.destination for s in byes} == {CALLER, FIRST}
    assert {s.request.headers.get("Reason") for s in byes} == {
        'Q.850;cause=102;text="Recovery on timer expiry"'
    }
    assert c.observer.endings == [(None, None, EndCause.SESSION_EXPIRED)]
    c.assert_idle()


async def test_a_switchboard_hunt_through_the_cores_legs(tmp_path: Path) -> None:
    """What the switchboard asks of the core for a simultaneous hunt: two legs with the caller's
    session; the second member answers (the core ACKs it), the first is CANCELled with Q.850 26
    (RFC 3326); a third leg over a trunk whose one call is taken is refused by the limit."""
    trunks = tmp_path / "trunks.yaml"
    trunks.write_text(
        "trunks:\n"
        "  - {name: pbx, kind: peer, group: acme, max_calls: 2, max_cps: 100, transport: udp,\n"
        "     match: [{host: 192.0.2.20, port: 5060, transport: udp}]}\n",
        encoding="utf-8",
    )
    c = core(trunks_file=trunks)
    legs = c.b2bua.legs
    caller = invite(body=SDP)
    heard: list[tuple[str, int]] = []

    def on_response(leg: OutboundLeg, response: Response) -> None:
        heard.append((leg.destination.address.host, response.status))

    first = await legs.open(caller, Destination(FIRST, "1001", "pbx"), on_response)
    second = await legs.open(caller, Destination(SECOND, "1002", "pbx"), on_response)
    assert isinstance(first, OutboundLeg) and isinstance(second, OutboundLeg)
    refused = await legs.open(caller, Destination(FIRST, "1003", "pbx"), on_response)
    assert isinstance(refused, Refused) and refused.status == 503 and "trunk:pbx" in refused.reason
    assert [s.request.headers.get("Max-Forwards") for s in c.transport.sent] == ["69", "69"]
    c.transport.answer(c.transport.sent[0], 180, tag="m1")
    c.transport.answer(c.transport.sent[1], 200, tag="m2", body=SDP)
    assert heard == [("192.0.2.20", 180), ("192.0.2.21", 200)] and len(c.transport.acks) == 1
    legs.cancel(first, EndCause.NON_SELECTED)
    assert c.transport.cancels == [
        (first.invite, [("Reason", 'Q.850;cause=26;text="Non-selected user clearing"')])
    ]
    c.transport.answer(c.transport.sent[0], 487, tag="m1")
    assert heard[-1] == ("192.0.2.21", 200)  # a cancelled leg's end is the core's business
    legs.bye(second, EndCause.NORMAL)
    assert (
        c.transport.last("BYE").request.headers.get("Reason") == 'Q.850;cause=16;text="Normal call clearing"'
    )
    c.assert_idle()


@pytest.mark.parametrize("cause", [EndCause.OPERATOR, EndCause.MAX_DURATION])
def test_hangup_of_an_answered_call_carries_the_cause(cause: EndCause) -> None:
    c = core()
    _a, call = answer_call(c)
    c.b2bua.hangup(call, cause)
    byes = [s.request.headers.get("Reason") for s in c.transport.sent if s.request.method == "BYE"]
    assert byes == [cause.reason_header] * 2
    assert c.observer.endings == [(None, None, cause)] and cause.end.value == "normal"
    c.assert_idle()


def test_an_answered_call_is_in_the_registry_and_an_operator_hangs_it_up_through_it() -> None:
    c = core()
    a, call = answer_call(c)
    (entry,) = c.b2bua.registry
    assert entry is c.b2bua.registry.get(call.uid) and entry.kind is CallKind.CALL
    c.clock.advance(2.0)
    shown = entry.snapshot(c.clock.time())
    assert shown["id"] == call.uid and shown["kind"] == "call" and shown["state"] == "confirmed"
    assert shown["a_call_id"] == a.call_id and shown["b_call_id"] == call.leg(Side.B).call_id
    assert shown["answered_for_s"] == 2.0 and shown["inbound_trunk"] == "pbx"
    entry.hangup(EndCause.OPERATOR)
    byes = [s.request.headers.get("Reason") for s in c.transport.sent if s.request.method == "BYE"]
    assert byes == [EndCause.OPERATOR.reason_header] * 2
    assert c.observer.endings == [(None, None, EndCause.OPERATOR)]
    c.assert_idle()


async def test_an_applications_inbound_call_holds_its_trunks_slot(tmp_path: Path) -> None:
    """The switchboard's inbound call takes a slot of its trunk's limits through the core: the
    second is refused 503 with Retry-After while the first holds it, and not after release."""
    trunks = tmp_path / "trunks.yaml"
    trunks.write_text(
        "trunks:\n"
        "  - {name: carrier, kind: carrier, max_calls: 1, max_cps: 100, transport: udp,\n"
        "     destinations: [{host: 192.0.2.30, port: 5060, transport: udp}]}\n",
        encoding="utf-8",
    )
    c = core(trunks_file=trunks)
    legs = c.b2bua.legs
    held = await legs.hold_inbound("sb-1", "carrier")
    assert isinstance(held, tuple) and [s.key for s in held] == ["trunk:carrier"]
    refused = await legs.hold_inbound("sb-2", "carrier")
    assert isinstance(refused, Refused) and refused.status == 503
    assert refused.reason == "Limit Reached (trunk:carrier)" and dict(refused.headers)["Retry-After"]
    assert await legs.hold_inbound("sb-3", None) == ()  # no inbound trunk: nothing to hold
    legs.release_inbound("sb-1", held)
    again = await legs.hold_inbound("sb-4", "carrier")
    assert isinstance(again, tuple)
    legs.release_inbound("sb-4", again)
    c.assert_idle()


async def test_a_leg_whose_callee_makes_us_the_refresher_is_refreshed_and_ends_when_the_session_is_gone() -> (
    None
):
    """A member's 2xx says ``refresher=uac`` (RFC 4028 §7.2): the core sends an UPDATE at half
    the interval (§7.4); a 481 to it means the session is gone (§10): BYE, and the application
    is told."""
    c = core()
    gone: list[OutboundLeg] = []
    leg = await c.b2bua.legs.open(
        invite(), Destination(FIRST, "1001"), lambda _leg, _r: None, on_gone=gone.append
    )
    assert isinstance(leg, OutboundLeg)
    c.transport.answer(
        c.transport.sent[0], 200, body=SDP,
        headers=(("Session-Expires", "120;refresher=uac"), ("Allow", "INVITE, ACK, BYE, UPDATE")),
    )  # fmt: skip
    c.clock.advance(59.0)
    assert [s.request.method for s in c.transport.sent] == ["INVITE"]
    c.clock.advance(1.0)
    update = c.transport.last("UPDATE")
    assert update.request.headers.get("Session-Expires") == "120;refresher=uac" and not update.request.body
    c.transport.answer(update, 481)
    assert (
        c.transport.last("BYE").request.headers.get("Reason") == EndCause.SESSION_REFRESH_FAILED.reason_header
    )
    assert gone == [leg]
    c.assert_idle()


def test_a_2xx_that_wins_the_race_with_the_cancel_is_acked_and_byed() -> None:
    """RFC 3261 §9.1, §15: the callee answered as the caller cancelled; the session nobody wants
    is confirmed and ended at once, and the call is over (billed as cancelled)."""
    c = core()
    a, _call = start(c)
    c.transport.answer(c.transport.last("INVITE"), 180)
    cancel = in_dialog(
        "CANCEL", a.call_id, from_="<sip:62880001@192.0.2.10>;tag=alice", to="<sip:1001@192.0.2.1>",
        cseq=1, uri="sip:1001@192.0.2.1",
    )  # fmt: skip
    c.b2bua.handlers().cancel(a, cancel)
    c.transport.answer(c.transport.sent[0], 200, body=SDP)
    assert len(c.transport.acks) == 1
    assert c.transport.last("BYE").request.headers.get("Reason") == EndCause.CANCELLED.reason_header
    assert c.observer.endings == [(487, Side.A, EndCause.CANCELLED)]
    c.transport.answer(c.transport.sent[0], 200, body=SDP)  # its retransmission: no second BYE
    assert [s.request.method for s in c.transport.sent] == ["INVITE", "BYE"]
    c.assert_idle()
