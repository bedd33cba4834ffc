"""INVITE and non-INVITE server transactions against RFC 3261 Figures 7 and 8 (+ RFC 6026)."""

from __future__ import annotations

import pytest

from gateway.sip.address import Address
from gateway.sip.message import Request, Response, make_response
from gateway.sip.transactions import (
    AckReceived,
    ProtocolError,
    RequestReceived,
    ServerTransaction,
    TimeoutEvent,
    TimerConfig,
    TimerName,
    TransactionLayer,
    TransactionState,
    TransactionTerminated,
    TransportErrorEvent,
)
from tests.sip.test_transaction_support import PEER, PEER_TCP, Driver, request, state_of, wire


def incoming(d: Driver, method: str = "INVITE", source=PEER, **kw: object) -> ServerTransaction:  # type: ignore[no-untyped-def]
    events = d.receive(request(method, **kw), source)  # type: ignore[arg-type]
    assert len(events) == 1 and isinstance(events[0], RequestReceived)
    return events[0].transaction


def answer(d: Driver, tx: ServerTransaction, status: int, tag: str = "uas-tag") -> Response:
    resp = make_response(tx.request, status, to_tag=tag if status > 100 else None)
    d.record(d.layer.send_response(tx, resp, d.now))
    return resp


def statuses(d: Driver, since: float = -1.0) -> list[tuple[float, int]]:
    out = []
    for t, transmit in d.sent:
        msg = wire(transmit)
        if t > since and isinstance(msg, Response):
            out.append((round(t, 6), msg.status))
    return out


# --- INVITE server (Figure 7) ---------------------------------------------------------------------


def test_invite_server_sends_100_trying_after_200ms() -> None:
    d = Driver()
    tx = incoming(d)
    assert state_of(tx) is TransactionState.PROCEEDING
    assert d.layer.next_deadline() == pytest.approx(0.2)
    d.advance(1.0)
    assert statuses(d) == [(0.2, 100)]
    trying = wire(d.sent[0][1])
    assert isinstance(trying, Response) and trying.to.tag is None
    assert d.sent[0][1].destination == PEER


def test_invite_server_trying_delay_is_configurable() -> None:
    d = Driver(layer=TransactionLayer(TimerConfig(trying_delay=0)))
    incoming(d)
    assert statuses(d) == [(0, 100)]


def test_invite_server_no_100_when_tu_answers_in_time() -> None:
    d = Driver()
    tx = incoming(d)
    d.now = 0.1
    answer(d, tx, 180)
    d.advance(5)
    assert statuses(d) == [(0.1, 180)]


def test_invite_retransmission_resends_last_provisional() -> None:
    d = Driver()
    tx = incoming(d)
    d.now = 0.05
    assert d.receive(request("INVITE")) == []  # before any response: 100 Trying at once
    d.now = 0.1
    answer(d, tx, 180)
    d.now = 0.6
    assert d.receive(request("INVITE")) == []
    assert statuses(d) == [(0.05, 100), (0.1, 180), (0.6, 180)]
    assert d.layer.counters.retransmissions_absorbed == 2


def test_invite_failure_retransmitted_with_g_until_h() -> None:
    d = Driver()
    tx = incoming(d)
    answer(d, tx, 486)
    assert state_of(tx) is TransactionState.COMPLETED
    events = d.advance(40)
    assert [t for t, _ in statuses(d)] == [0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert [type(e) for e in events] == [TimeoutEvent, TransactionTerminated]
    assert events[0].timer is TimerName.H  # type: ignore[union-attr]
    assert d.events[-1][0] == 32
    assert d.layer.transaction_count == 0


def test_invite_failure_ack_confirms_then_timer_i() -> None:
    d = Driver()
    tx = incoming(d)
    resp = answer(d, tx, 404)
    d.advance(0.7)
    ack = request("ACK", to_tag=resp.to.tag)
    assert d.receive(ack) == []  # absorbed by the transaction, not for the TU
    assert state_of(tx) is TransactionState.CONFIRMED
    assert d.receive(request("ACK", to_tag=resp.to.tag)) == []
    assert d.receive(request("INVITE")) == []
    assert d.layer.counters.retransmissions_absorbed == 2
    events = d.advance(20)
    assert [t for t, _ in statuses(d)] == [0, 0.5]
    assert [type(e) for e in events] == [TransactionTerminated]
    assert d.events[-1][0] == pytest.approx(5.7)  # T4 after the ACK


def test_invite_failure_retransmitted_invite_resends_final() -> None:
    d = Driver()
    tx = incoming(d)
    answer(d, tx, 603)
    d.now = 0.2
    d.receive(request("INVITE"))
    assert statuses(d) == [(0, 603), (0.2, 603)]


def test_invite_over_tcp_no_g_and_i_zero() -> None:
    d = Driver()
    tx = incoming(d, source=PEER_TCP, transport="TCP")
    assert tx.response_destination == PEER_TCP
    answer(d, tx, 486)
    d.advance(5)
    assert statuses(d) == [(0, 486)]
    events = d.receive(request("ACK", transport="TCP", to_tag="uas-tag"), PEER_TCP)
    assert [type(e) for e in events] == [TransactionTerminated]
    assert d.layer.transaction_count == 0


def test_invite_over_tcp_h_still_fires() -> None:
    d = Driver()
    tx = incoming(d, source=PEER_TCP, transport="TCP")
    answer(d, tx, 486)
    events = d.advance(40)
    expected = [(TimeoutEvent, 32), (TransactionTerminated, 32)]
    assert [(type(e), round(t, 6)) for t, e in d.events[1:]] == expected
    assert events[0].timer is TimerName.H  # type: ignore[union-attr]


def test_invite_2xx_retransmitted_until_its_ack_then_accepted_until_l() -> None:
    d = Driver()
    tx = incoming(d)
    answer(d, tx, 200)
    assert state_of(tx) is TransactionState.ACCEPTED
    d.advance(0.7)
    assert d.receive(request("INVITE")) == []  # RFC 6026: absorbed, the 2xx is not re-sent for it
    d.advance(8.0)
    assert statuses(d) == [(0, 200), (0.5, 200), (1.5, 200), (3.5, 200), (7.5, 200)]  # §13.3.1.4
    # the ACK of a 2xx has its own branch; matched by Call-ID, CSeq and To tag
    ack_source = Address("udp", "192.0.2.77", 5060)
    events = d.receive(request("ACK", branch="z9hG4bKack2xx", to_tag="uas-tag"), ack_source)
    assert len(events) == 1 and isinstance(events[0], AckReceived)
    assert events[0].transaction is tx and events[0].source == ack_source and tx.acked
    # ACK retransmissions (one per 2xx the UAC saw) are absorbed
    assert d.receive(request("ACK", branch="z9hG4bKack2xx", to_tag="uas-tag")) == []
    assert d.receive(request("ACK", to_tag="uas-tag")) == []
    # an ACK for another dialog or CSeq is not this transaction's
    other = d.receive(request("ACK", branch="z9hG4bKx", to_tag="uas-tag", cseq=2))
    assert isinstance(other[0], AckReceived) and other[0].transaction is None
    answer(d, tx, 200)  # the TU may still re-send its 2xx itself
    d.advance(31.9)
    assert [t for t, _ in statuses(d)] == [0, 0.5, 1.5, 3.5, 7.5, 8.0]
    assert state_of(tx) is TransactionState.ACCEPTED  # Timer L runs from the first 2xx
    assert [type(e) for e in d.advance(32.0)] == [TransactionTerminated]
    assert d.layer.transaction_count == 0 and d.layer.counters.timeouts == 0


def test_invite_2xx_never_acked_reports_timeout_at_l() -> None:
    d = Driver()
    tx = incoming(d)
    answer(d, tx, 200)
    events = d.advance(40)
    assert [t for t, _ in statuses(d)] == [0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert [type(e) for e in events] == [TimeoutEvent, TransactionTerminated]
    assert events[0].timer is TimerName.L and events[0].transaction is tx  # type: ignore[union-attr]
    assert d.events[-1][0] == 32


def test_invite_2xx_is_retransmitted_over_tcp_too() -> None:
    d = Driver()
    tx = incoming(d, source=PEER_TCP, transport="TCP")
    answer(d, tx, 200)
    d.advance(2)
    assert statuses(d) == [(0, 200), (0.5, 200), (1.5, 200)]  # end to end: a UDP hop may follow
    d.receive(request("ACK", branch="z9hG4bKa2", transport="TCP", to_tag="uas-tag"), PEER_TCP)
    d.advance(10)
    assert len(statuses(d)) == 3


def test_invite_server_refuses_provisional_after_final() -> None:
    d = Driver()
    tx = incoming(d)
    answer(d, tx, 480)
    with pytest.raises(ProtocolError, match="Completed"):
        answer(d, tx, 180)


def test_invite_server_transport_error() -> None:
    d = Driver()
    tx = incoming(d)
    answer(d, tx, 500)
    events = d.record(d.layer.transport_error(PEER, 0.0))
    assert [type(e) for e in events] == [TransportErrorEvent, TransactionTerminated]
    assert events[0].transaction is tx


def test_ack_in_proceeding_is_a_dropped_protocol_error() -> None:
    d = Driver()
    tx = incoming(d)
    assert d.receive(request("ACK")) == []
    assert d.layer.counters.protocol_errors == 1
    assert state_of(tx) is TransactionState.PROCEEDING


# --- non-INVITE server (Figure 8) -----------------------------------------------------------------


def test_non_invite_server_trying_absorbs_then_final_and_timer_j() -> None:
    d = Driver()
    tx = incoming(d, "OPTIONS")
    assert state_of(tx) is TransactionState.TRYING
    d.now = 0.5
    assert d.receive(request("OPTIONS")) == []
    assert d.sent == []  # nothing to resend in Trying
    answer(d, tx, 200)
    assert state_of(tx) is TransactionState.COMPLETED
    d.now = 1.0
    assert d.receive(request("OPTIONS")) == []
    answer(d, tx, 500)  # §17.2.2: further finals from the TU are discarded
    assert statuses(d) == [(0.5, 200), (1.0, 200)]
    assert d.layer.counters.retransmissions_absorbed == 2
    events = d.advance(40)
    assert [type(e) for e in events] == [TransactionTerminated]
    assert d.events[-1][0] == pytest.approx(32.5)


def test_non_invite_server_proceeding_resends_provisional() -> None:
    d = Driver()
    tx = incoming(d, "REGISTER")
    answer(d, tx, 100)
    assert state_of(tx) is TransactionState.PROCEEDING
    d.now = 0.5
    d.receive(request("REGISTER"))
    assert statuses(d) == [(0, 100), (0.5, 100)]
    with pytest.raises(ProtocolError):
        d.layer.send_response(tx, make_response(tx.request, 200), 0.6)
        d.layer.send_response(tx, make_response(tx.request, 100), 0.6)


def test_non_invite_server_tcp_j_zero() -> None:
    d = Driver()
    tx = incoming(d, "OPTIONS", source=PEER_TCP, transport="TCP")
    answer(d, tx, 200)
    assert [type(e) for _, e in d.events[1:]] == [TransactionTerminated]
    assert d.layer.transaction_count == 0
    with pytest.raises(ProtocolError, match="Terminated"):
        answer(d, tx, 200)


def test_non_invite_server_transport_error_in_completed() -> None:
    d = Driver()
    tx = incoming(d, "OPTIONS")
    answer(d, tx, 200)
    events = d.record(d.layer.transport_error(tx, 0.0))
    assert [type(e) for e in events] == [TransportErrorEvent, TransactionTerminated]


def test_bad_status_from_tu_is_value_error() -> None:
    d = Driver()
    tx = incoming(d, "OPTIONS")
    resp = make_response(tx.request, 200)
    resp.status = 700
    with pytest.raises(ValueError, match="700"):
        d.layer.send_response(tx, resp, 0.0)
    assert isinstance(tx.request, Request)
