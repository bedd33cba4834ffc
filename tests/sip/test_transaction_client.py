"""INVITE and non-INVITE client transactions against RFC 3261 Figures 5 and 6 (+ RFC 6026)."""

from __future__ import annotations

import pytest

from gateway.sip.address import Address
from gateway.sip.message import Request, Response
from gateway.sip.transactions import (
    ClientTransaction,
    ResponseReceived,
    TimeoutEvent,
    TimerName,
    TransactionState,
    TransactionTerminated,
    TransportErrorEvent,
)
from tests.sip.test_transaction_support import PEER, PEER_TCP, Driver, request, response, state_of, wire

ME = "198.51.100.1"


def start(
    driver: Driver, method: str = "INVITE", destination: Address = PEER, **kw: object
) -> ClientTransaction:
    req = request(method, via_host=ME, **kw)  # type: ignore[arg-type]
    tx = driver.layer.send_request(req, destination, driver.now)
    driver.drain()
    return tx


# --- INVITE client (Figure 5) ---------------------------------------------------------------------


def test_invite_udp_retransmits_at_exact_instants_then_timer_b() -> None:
    d = Driver()
    tx = start(d)
    assert state_of(tx) is TransactionState.CALLING
    events = d.advance(40)
    assert d.times() == [0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert all(t.data == d.sent[0][1].data and t.destination == PEER for _, t in d.sent)
    assert [(round(t, 6), type(e).__name__) for t, e in d.events] == [
        (32, "TimeoutEvent"),
        (32, "TransactionTerminated"),
    ]
    assert isinstance(events[0], TimeoutEvent) and events[0].timer is TimerName.B
    assert events[0].transaction is tx and state_of(tx) is TransactionState.TERMINATED
    assert d.layer.transaction_count == 0
    assert d.layer.counters.retransmissions_sent == 6
    assert d.layer.counters.timeouts == 1
    assert d.layer.next_deadline() is None


def test_invite_timers_follow_configured_t1() -> None:
    from gateway.sip.transactions import TimerConfig, TransactionLayer

    d = Driver(layer=TransactionLayer(TimerConfig(t1=0.1)))
    start(d)
    d.advance(10)
    assert d.times() == [0, 0.1, 0.3, 0.7, 1.5, 3.1, 6.3]
    assert [round(t, 6) for t, e in d.events if isinstance(e, TimeoutEvent)] == [6.4]


def test_invite_tcp_sends_once_and_times_out_with_b() -> None:
    d = Driver()
    start(d, destination=PEER_TCP)
    d.advance(40)
    assert d.times() == [0]
    assert d.event_types() == ["TimeoutEvent", "TransactionTerminated"]
    assert d.events[0][0] == 32


def test_invite_provisional_stops_retransmissions_and_timer_b() -> None:
    d = Driver()
    tx = start(d)
    d.advance(0.7)
    events = d.receive(response(tx.request, 180))
    assert len(events) == 1 and isinstance(events[0], ResponseReceived)
    assert events[0].response.status == 180 and events[0].transaction is tx
    assert state_of(tx) is TransactionState.PROCEEDING
    d.advance(100)
    assert d.times() == [0, 0.5]
    assert tx.armed_timers == frozenset()
    assert d.layer.next_deadline() is None
    assert d.layer.transaction_count == 1  # waits for a final response (or a CANCEL)


def test_invite_failure_generates_ack_then_timer_d() -> None:
    route = "Route: <sip:proxy.example.com;lr>"
    d = Driver()
    tx = start(d, extra=[route])
    d.receive(response(tx.request, 100))
    d.now = 1.0
    final = response(tx.request, 486, to_tag="busy-tag")
    events = d.receive(final)
    assert [type(e) for e in events] == [ResponseReceived]
    assert state_of(tx) is TransactionState.COMPLETED
    ack = wire(d.sent[-1][1])
    assert d.sent[-1][1].destination == PEER
    assert isinstance(ack, Request)
    invite = tx.request
    # RFC 3261 §17.1.1.3
    assert ack.method == "ACK" and ack.uri == invite.uri
    assert [str(v) for v in ack.vias] == [str(invite.top_via)]
    assert ack.top_via.branch == tx.branch
    assert ack.call_id == invite.call_id
    assert ack.from_.tag == invite.from_.tag and ack.from_.uri == invite.from_.uri
    assert ack.to.tag == "busy-tag" and ack.to.uri == invite.to.uri
    assert (ack.cseq.seq, ack.cseq.method) == (invite.cseq.seq, "ACK")
    assert ack.headers.get_all("Route") == ["<sip:proxy.example.com;lr>"]
    assert ack.max_forwards == 70 and ack.body == b""
    # a retransmitted final is absorbed and re-ACKed, nothing for the TU
    d.now = 2.0
    assert d.receive(response(tx.request, 486, to_tag="busy-tag")) == []
    assert d.sent[-1][1].data == d.sent[-2][1].data
    assert d.layer.counters.retransmissions_absorbed == 1
    d.advance(32.999)
    assert state_of(tx) is TransactionState.COMPLETED
    assert [type(e) for e in d.advance(33.0)] == [TransactionTerminated]
    assert d.layer.transaction_count == 0


def test_invite_failure_over_tcp_terminates_at_once() -> None:
    d = Driver()
    tx = start(d, destination=PEER_TCP)
    events = d.receive(response(tx.request, 404), PEER_TCP)
    assert [type(e) for e in events] == [ResponseReceived, TransactionTerminated]
    assert [wire(t).method for _, t in d.sent[1:]] == ["ACK"]  # type: ignore[union-attr]
    assert d.layer.transaction_count == 0


def test_invite_2xx_goes_to_tu_without_ack_and_accepted_until_timer_m() -> None:
    d = Driver()
    tx = start(d)
    d.now = 0.2
    ok = response(tx.request, 200)
    events = d.receive(ok)
    assert [type(e) for e in events] == [ResponseReceived]
    assert state_of(tx) is TransactionState.ACCEPTED
    assert d.times() == [0]  # the ACK for a 2xx belongs to the TU
    # retransmitted and forked 2xx reach the TU (RFC 6026 §8.4)
    d.now = 1.0
    assert [type(e) for e in d.receive(response(tx.request, 200))] == [ResponseReceived]
    assert [type(e) for e in d.receive(response(tx.request, 200, to_tag="fork-2"))] == [ResponseReceived]
    d.advance(100)
    assert d.times() == [0]
    assert d.events[-1] == (32.2, d.events[-1][1]) and isinstance(d.events[-1][1], TransactionTerminated)


def test_tu_ack_for_2xx_is_resent_by_the_layer_for_retransmissions() -> None:
    d = Driver()
    tx = start(d)
    ok = response(tx.request, 200, to_tag="fork-1")
    d.receive(ok)
    ack = request("ACK", via_host=ME, branch="z9hG4bKack", to_tag="fork-1")
    d.layer.send_ack(tx, ack, PEER)
    d.drain()
    assert wire(d.sent[-1][1]).method == "ACK"  # type: ignore[union-attr]
    d.now = 0.5
    assert d.receive(response(tx.request, 200, to_tag="fork-1")) == []  # absorbed, ACK again
    assert d.sent[-1][1].data == ack.to_bytes() and d.sent[-1][0] == 0.5
    assert d.layer.counters.retransmissions_absorbed == 1
    # another fork's 2xx is the TU's
    assert [type(e) for e in d.receive(response(tx.request, 200, to_tag="fork-2"))] == [ResponseReceived]
    # after Timer M, an ACK is still sent but nothing is remembered
    d.advance(40)
    d.layer.send_ack(tx, ack, PEER)
    assert d.drain()[0].data == ack.to_bytes()


def test_invite_stray_late_provisional_is_dropped_and_counted() -> None:
    d = Driver()
    tx = start(d)
    d.receive(response(tx.request, 500))
    assert d.receive(response(tx.request, 180)) == []
    assert d.layer.counters.protocol_errors == 1
    assert state_of(tx) is TransactionState.COMPLETED


def test_invite_transport_error_in_calling() -> None:
    d = Driver()
    tx = start(d)
    events = d.record(d.layer.transport_error(PEER, d.now))
    assert [type(e) for e in events] == [TransportErrorEvent, TransactionTerminated]
    assert events[0].transaction is tx
    assert d.layer.counters.transport_errors == 1
    assert d.layer.transaction_count == 0


def test_invite_transport_error_in_proceeding_is_not_in_figure_5() -> None:
    d = Driver()
    tx = start(d)
    d.receive(response(tx.request, 180))
    assert d.layer.transport_error(tx, 1.0) == []
    assert state_of(tx) is TransactionState.PROCEEDING


def test_cancel_waits_for_provisional_then_cancels_with_guard() -> None:
    d = Driver()
    tx = start(d, extra=["Route: <sip:p1.example.com;lr>"])
    assert d.layer.cancel(tx, 0.1) == []
    d.drain()
    assert d.times() == [0]  # §9.1: no CANCEL before a provisional response
    d.now = 0.3
    d.receive(response(tx.request, 180))
    cancel_tx = tx.cancel_transaction
    assert cancel_tx is not None and state_of(cancel_tx) is TransactionState.TRYING
    cancel = wire(d.sent[-1][1])
    assert isinstance(cancel, Request) and cancel.method == "CANCEL"
    invite = tx.request
    assert cancel.uri == invite.uri and cancel.call_id == invite.call_id
    assert str(cancel.to) == str(invite.to) and str(cancel.from_) == str(invite.from_)
    assert (cancel.cseq.seq, cancel.cseq.method) == (invite.cseq.seq, "CANCEL")
    assert [str(v) for v in cancel.vias] == [str(invite.top_via)]
    assert cancel.headers.get_all("Route") == ["<sip:p1.example.com;lr>"]
    # the CANCEL's 200 goes to its own transaction
    events = d.receive(response(cancel, 200))
    assert [e.transaction for e in events if isinstance(e, ResponseReceived)] == [cancel_tx]
    # no 487 ever: the INVITE transaction gives up 64*T1 after the CANCEL (§9.1)
    events = d.advance(100)
    timeouts = [e for e in events if isinstance(e, TimeoutEvent)]
    assert [(e.transaction, e.timer) for e in timeouts] == [(tx, TimerName.CANCEL_GUARD)]
    assert [round(t, 6) for t, e in d.events if isinstance(e, TimeoutEvent)] == [32.3]
    assert d.layer.transaction_count == 0


def test_cancel_then_487_completes_normally() -> None:
    d = Driver()
    tx = start(d)
    d.receive(response(tx.request, 183))
    d.layer.cancel(tx, 0.0)
    d.drain()
    assert tx.cancel_transaction is not None
    d.receive(response(tx.cancel_transaction.request, 200))
    d.receive(response(tx.request, 487))
    assert state_of(tx) is TransactionState.COMPLETED
    assert [wire(t).method for _, t in d.sent[1:]] == ["CANCEL", "ACK"]  # type: ignore[union-attr]
    d.advance(100)
    assert d.layer.transaction_count == 0
    assert d.layer.counters.timeouts == 0


def test_cancel_after_final_response_does_nothing() -> None:
    d = Driver()
    tx = start(d)
    d.receive(response(tx.request, 200))
    d.layer.cancel(tx, 0.0)
    assert d.drain() == [] and tx.cancel_transaction is None


# --- non-INVITE client (Figure 6) -----------------------------------------------------------------


def test_non_invite_udp_retransmits_capped_at_t2_then_timer_f() -> None:
    d = Driver()
    tx = start(d, "OPTIONS")
    assert state_of(tx) is TransactionState.TRYING
    events = d.advance(40)
    assert d.times() == [0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert [type(e) for e in events] == [TimeoutEvent, TransactionTerminated]
    assert events[0].timer is TimerName.F  # type: ignore[union-attr]
    assert d.events[0][0] == 32
    assert d.layer.transaction_count == 0


def test_non_invite_proceeding_retransmits_every_t2() -> None:
    d = Driver()
    tx = start(d, "REGISTER")
    d.now = 0.2
    d.receive(response(tx.request, 100))
    assert state_of(tx) is TransactionState.PROCEEDING
    d.advance(40)
    assert d.times() == [0, 0.5, 4.5, 8.5, 12.5, 16.5, 20.5, 24.5, 28.5]
    assert d.layer.counters.timeouts == 1


def test_non_invite_final_then_timer_k_absorbs_retransmissions() -> None:
    d = Driver()
    tx = start(d, "BYE", to_tag="bob-tag")
    d.advance(0.6)
    events = d.receive(response(tx.request, 200))
    assert [type(e) for e in events] == [ResponseReceived]
    assert state_of(tx) is TransactionState.COMPLETED
    assert d.receive(response(tx.request, 200)) == []
    assert d.layer.counters.retransmissions_absorbed == 1
    d.advance(100)
    assert d.times() == [0, 0.5]
    assert [round(t, 6) for t, e in d.events if isinstance(e, TransactionTerminated)] == [5.6]


def test_non_invite_tcp_no_retransmission_and_k_zero() -> None:
    d = Driver()
    tx = start(d, "OPTIONS", destination=PEER_TCP)
    d.advance(10)
    assert d.times() == [0]
    events = d.receive(response(tx.request, 404), PEER_TCP)
    assert [type(e) for e in events] == [ResponseReceived, TransactionTerminated]
    assert d.layer.transaction_count == 0
    d.advance(100)
    assert d.layer.counters.timeouts == 0


def test_non_invite_transport_error_in_proceeding() -> None:
    d = Driver()
    tx = start(d, "MESSAGE")
    d.receive(response(tx.request, 100))
    events = d.record(d.layer.transport_error(tx, 0.0))
    assert [type(e) for e in events] == [TransportErrorEvent, TransactionTerminated]


# --- client-side matching (§17.1.3) and the TU's send API -----------------------------------------


def test_response_matches_on_branch_and_cseq_method_only() -> None:
    d = Driver()
    tx = start(d)
    other_method = response(tx.request, 200)
    other_method.headers.set("CSeq", "1 CANCEL")
    assert d.receive(other_method) == []
    other_branch = response(request("INVITE", branch="z9hG4bKother"), 200)
    assert d.receive(other_branch) == []
    assert d.layer.counters.stray_responses == 2
    assert state_of(tx) is TransactionState.CALLING


def test_send_request_generates_branch_from_injected_rng() -> None:
    import random

    from gateway.sip.transactions import MAGIC_COOKIE, TransactionLayer

    branches = []
    for _ in range(2):
        layer = TransactionLayer(rng=random.Random(42))
        req = request("OPTIONS", branch=None)
        tx = layer.send_request(req, PEER, 0.0)
        branches.append(tx.branch)
        assert req.top_via.branch == tx.branch
        assert wire(layer.take_outgoing()[0]).top_via.branch == tx.branch
    assert branches[0] == branches[1] and branches[0].startswith(MAGIC_COOKIE)
    assert len(branches[0]) > len(MAGIC_COOKIE) + 8


def test_send_request_replaces_rfc2543_branch_and_refuses_ack_and_duplicates() -> None:
    d = Driver()
    tx = start(d, "OPTIONS", branch="old-style")
    assert tx.branch.startswith("z9hG4bK") and tx.branch != "old-style"
    with pytest.raises(ValueError, match="ACK"):
        d.layer.send_request(request("ACK", via_host=ME), PEER, 0.0)
    with pytest.raises(ValueError, match="already"):
        d.layer.send_request(request("OPTIONS", branch=tx.branch, via_host=ME), PEER, 0.0)


def test_send_stateless_queues_bytes() -> None:
    d = Driver()
    ack = request("ACK", via_host=ME, to_tag="x")
    d.layer.send_stateless(ack, PEER)
    assert d.drain()[0].data == ack.to_bytes()
    assert d.layer.transaction_count == 0


def test_unusable_response_is_dropped() -> None:
    d = Driver()
    tx = start(d)
    broken = response(tx.request, 200)
    broken.headers.remove("CSeq")
    assert d.receive(broken) == []
    assert d.layer.counters.protocol_errors == 1
    assert isinstance(broken, Response)


# --- timer plumbing ------------------------------------------------------------------------------


def test_late_timer_handling_does_not_burst() -> None:
    d = Driver()
    start(d)
    d.now = 10.0
    d.record(d.layer.handle_timers(10.0))
    assert d.times() == [0, 10.0]  # one retransmission, re-armed from the time it ran
    assert d.layer.next_deadline() == 11.0


def test_timer_config_validation() -> None:
    from gateway.sip.transactions import TimerConfig

    assert TimerConfig().transaction_timeout == 32
    assert TimerConfig(t1=0.25).transaction_timeout == 16
    for bad in ({"t1": 0}, {"t1": 5, "t2": 4}, {"t4": -1}, {"trying_delay": -0.1}):
        with pytest.raises(ValueError, match="invalid SIP timers"):
            TimerConfig(**bad)
    with pytest.raises(ValueError, match="not a wait timer"):
        TimerConfig().wait_duration(TimerName.A, reliable=False)


def test_cancelled_timers_do_not_pile_up() -> None:
    d = Driver()
    for n in range(3000):
        tx = start(d, "OPTIONS", destination=PEER_TCP, branch=f"z9hG4bKmany{n}")
        d.receive(response(tx.request, 200), PEER_TCP)  # K = 0: done, its Timer F is cancelled
    assert d.layer.transaction_count == 0
    assert d.layer.timer_entries <= 2048  # compacted, not 3000 entries kept for 32 s
    assert d.layer.next_deadline() is None and d.layer.timer_entries == 0
