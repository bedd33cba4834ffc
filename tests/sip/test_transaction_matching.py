"""Server matching (RFC 3261 §17.2.3, RFC 2543 fallback), CANCEL lookup (§9.2), Via stamping
(§18.2.1, RFC 3581) and response routing (§18.2.2)."""

from __future__ import annotations

import pytest

from gateway.sip.address import Address
from gateway.sip.headers import parse_via
from gateway.sip.message import make_response
from gateway.sip.transactions import (
    AckReceived,
    CancelReceived,
    RequestReceived,
    ServerTransaction,
    TransactionState,
    response_destination,
    stamp_received,
)
from gateway.sip.transactions.matching import replace_top_via
from tests.sip.test_transaction_support import PEER, PEER_TCP, Driver, request, state_of


def new_tx(d: Driver, **kw: object) -> ServerTransaction:
    events = d.receive(request(**kw))  # type: ignore[arg-type]
    assert len(events) == 1 and isinstance(events[0], RequestReceived)
    return events[0].transaction


def test_same_branch_different_sent_by_is_a_new_transaction() -> None:
    d = Driver()
    first = new_tx(d)
    second = new_tx(d, via_host="192.0.2.99")
    assert first is not second
    assert d.layer.transaction_count == 2


def test_same_branch_different_method_is_a_new_transaction() -> None:
    d = Driver()
    new_tx(d, method="OPTIONS")
    new_tx(d, method="INFO")
    assert d.layer.transaction_count == 2


def test_branch_comparison_ignores_sent_by_host_case_and_stamped_params() -> None:
    d = Driver()
    tx = new_tx(d, via_host="PBX.example.com", rport=True)
    assert d.receive(request(via_host="pbx.example.com", rport=True)) == []
    assert d.layer.counters.retransmissions_absorbed == 1
    assert state_of(tx) is TransactionState.PROCEEDING


def test_cancel_is_its_own_transaction_and_finds_its_invite() -> None:
    d = Driver()
    invite_tx = new_tx(d)
    cancel = request("CANCEL")
    events = d.receive(cancel)
    assert len(events) == 1 and isinstance(events[0], CancelReceived)
    assert events[0].target is invite_tx
    assert events[0].transaction is not invite_tx
    assert events[0].transaction.request.method == "CANCEL"
    assert d.layer.find_cancel_target(cancel) is invite_tx
    assert d.layer.transaction_count == 2
    # CANCEL retransmission matches the CANCEL transaction
    assert d.receive(request("CANCEL")) == []


def test_cancel_without_invite_has_no_target() -> None:
    d = Driver()
    new_tx(d)
    events = d.receive(request("CANCEL", branch="z9hG4bKunknown"))
    assert isinstance(events[0], CancelReceived) and events[0].target is None
    assert d.layer.find_cancel_target(request("CANCEL", via_host="203.0.113.9")) is None


def test_rfc2543_request_matching_without_cookie() -> None:
    d = Driver()
    tx = new_tx(d, branch=None)
    assert d.receive(request(branch=None)) == []  # retransmission
    assert d.layer.transaction_count == 1
    # any change of Request-URI, From tag, Call-ID, CSeq or top Via is another transaction
    for change in (
        {"uri": "sip:carol@example.com"},
        {"from_tag": "other"},
        {"call_id": "other-call"},
        {"cseq": 2},
        {"via_port": 5070},
        {"branch": "1"},
    ):
        events = d.receive(request(**{"branch": None, **change}))  # type: ignore[arg-type]
        assert [type(e) for e in events] == [RequestReceived], change
    assert state_of(tx) is TransactionState.PROCEEDING


def test_rfc2543_request_with_other_to_tag_is_another_transaction() -> None:
    d = Driver()
    new_tx(d, method="BYE", branch=None, to_tag="a")
    events = d.receive(request("BYE", branch=None, to_tag="b"))
    assert [type(e) for e in events] == [RequestReceived]


def test_rfc2543_ack_matches_with_the_response_to_tag() -> None:
    d = Driver()
    tx = new_tx(d, branch=None)
    d.layer.send_response(tx, make_response(tx.request, 486, to_tag="resp-tag"), 0.0)
    wrong = d.receive(request("ACK", branch=None, to_tag="other"))
    assert isinstance(wrong[0], AckReceived) and wrong[0].transaction is None
    assert d.receive(request("ACK", branch=None, to_tag="resp-tag")) == []
    assert state_of(tx) is TransactionState.CONFIRMED


def test_rfc2543_cancel_lookup() -> None:
    d = Driver()
    invite_tx = new_tx(d, branch=None)
    events = d.receive(request("CANCEL", branch=None))
    assert isinstance(events[0], CancelReceived) and events[0].target is invite_tx


def test_stray_ack_goes_to_tu_with_source() -> None:
    d = Driver()
    events = d.receive(request("ACK", to_tag="x"), PEER_TCP)
    assert isinstance(events[0], AckReceived)
    assert events[0].source == PEER_TCP and events[0].transaction is None
    assert d.layer.transaction_count == 0


def test_request_without_via_is_dropped() -> None:
    d = Driver()
    req = request("OPTIONS")
    req.headers.remove("Via")
    assert d.receive(req) == []
    assert d.layer.counters.protocol_errors == 1
    assert d.layer.transaction_count == 0


# --- received / rport (§18.2.1, RFC 3581) -----------------------------------------------------------


def test_stamp_rport_fills_port_and_received() -> None:
    req = request("OPTIONS", via_host="192.0.2.10", rport=True)
    stamp_received(req, Address("udp", "192.0.2.10", 40000))
    via = req.top_via
    assert via.params["rport"] == "40000" and via.received == "192.0.2.10"
    assert len(req.vias) == 1


def test_stamp_received_for_domain_or_other_ip_only() -> None:
    same = request("OPTIONS", via_host="192.0.2.10")
    stamp_received(same, PEER)
    assert "received" not in same.top_via.params
    domain = request("OPTIONS", via_host="pbx.example.com")
    stamp_received(domain, PEER)
    assert domain.top_via.received == "192.0.2.10"
    nat = request("OPTIONS", via_host="10.0.0.5")
    stamp_received(nat, PEER)
    assert nat.top_via.received == "192.0.2.10" and "rport" not in nat.top_via.params


def test_stamp_replaces_a_received_or_rport_the_request_arrived_with() -> None:
    forged = request("OPTIONS", via_host="192.0.2.10", extra=[])
    replace_top_via(forged, parse_via("SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKf;received=198.51.100.9;rport=7"))
    stamp_received(forged, Address("udp", "192.0.2.10", 40000))
    assert forged.top_via.received == "192.0.2.10" and forged.top_via.params["rport"] == "40000"


def test_stamp_touches_only_the_top_via() -> None:
    req = request("OPTIONS", via_host="10.0.0.5", extra=["Via: SIP/2.0/UDP 10.9.9.9;branch=z9hG4bKdown"])
    stamp_received(req, PEER)
    assert [v.host for v in req.vias] == ["10.0.0.5", "10.9.9.9"]
    assert "received" not in req.vias[1].params


def test_stamp_ipv6_source() -> None:
    req = request("OPTIONS", via_host="[2001:db8::1]", rport=True)
    stamp_received(req, Address("udp", "2001:db8::1", 5062))
    assert req.top_via.received == "2001:db8::1" and req.top_via.rport == 5062
    same = request("OPTIONS", via_host="[2001:db8::1]")
    stamp_received(same, Address("udp", "2001:0db8:0::1", 5060))
    assert same.top_via.received is None


def test_layer_stamps_and_answers_to_rport() -> None:
    d = Driver()
    nat_source = Address("udp", "203.0.113.7", 40001)
    events = d.receive(request("OPTIONS", via_host="10.0.0.5", rport=True), nat_source)
    assert isinstance(events[0], RequestReceived)
    tx = events[0].transaction
    assert tx.request.top_via.received == "203.0.113.7"
    assert tx.response_destination == nat_source
    d.layer.send_response(tx, make_response(tx.request, 200), 0.0)
    out = d.drain()
    assert out[0].destination == nat_source
    assert b"received=203.0.113.7;" in out[0].data or b"received=203.0.113.7\r" in out[0].data


@pytest.mark.parametrize(
    ("via", "source", "expected"),
    [
        # reliable: the connection the request came in on
        ("SIP/2.0/TCP 10.0.0.5:5070;branch=z9hG4bK1", Address("tcp", "203.0.113.7", 40001),
         Address("tcp", "203.0.113.7", 40001)),
        # RFC 3581: received + rport
        ("SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bK1;received=203.0.113.7;rport=40001",
         Address("udp", "203.0.113.7", 40001), Address("udp", "203.0.113.7", 40001)),
        # bare rport (not stamped): the source port
        ("SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bK1;rport", Address("udp", "203.0.113.7", 40001),
         Address("udp", "203.0.113.7", 40001)),
        # received, no rport: sent-by port
        ("SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bK1;received=203.0.113.7",
         Address("udp", "203.0.113.7", 40001), Address("udp", "203.0.113.7", 5070)),
        # received, no port anywhere: 5060
        ("SIP/2.0/UDP pbx.example.com;branch=z9hG4bK1;received=203.0.113.7",
         Address("udp", "203.0.113.7", 40001), Address("udp", "203.0.113.7", 5060)),
        # plain sent-by
        ("SIP/2.0/UDP 192.0.2.10:5080;branch=z9hG4bK1", Address("udp", "192.0.2.10", 5080),
         Address("udp", "192.0.2.10", 5080)),
        # maddr is ignored: answers go where the request came from (no reflection)
        ("SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK1;maddr=239.255.255.1;received=192.0.2.11",
         Address("udp", "192.0.2.11", 5060), Address("udp", "192.0.2.11", 5060)),
        # a received / rport the request arrived with is not trusted: the real source is used
        ("SIP/2.0/UDP 192.0.2.10:5080;branch=z9hG4bK1;received=198.51.100.99",
         Address("udp", "192.0.2.10", 40001), Address("udp", "192.0.2.10", 5080)),
        ("SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK1;received=198.51.100.99;rport=7",
         Address("udp", "192.0.2.10", 40001), Address("udp", "192.0.2.10", 40001)),
        # a host name in sent-by: the source address, never a name to resolve
        ("SIP/2.0/UDP victim.example.com:5070;branch=z9hG4bK1",
         Address("udp", "192.0.2.10", 40001), Address("udp", "192.0.2.10", 5070)),
        # IPv6 received
        ("SIP/2.0/UDP [2001:db8::1]:5062;branch=z9hG4bK1;received=2001:db8::2",
         Address("udp", "2001:db8::2", 6000), Address("udp", "2001:db8::2", 5062)),
    ],
)  # fmt: skip
def test_response_destination(via: str, source: Address, expected: Address) -> None:
    assert response_destination(parse_via(via), source) == expected


def test_response_destination_tls_default_port() -> None:
    via = parse_via("SIP/2.0/TLS pbx.example.com;branch=z9hG4bK1;received=203.0.113.7")
    assert response_destination(via, Address("udp", "203.0.113.7", 1)).port == 5061
