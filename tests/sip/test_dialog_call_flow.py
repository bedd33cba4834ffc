"""A whole call between two transaction layers over a lossless in-memory network, with a Dialog
on each side: INVITE, 180, 200, ACK (matched by the UAS's INVITE transaction, 2xx
retransmissions stop), BYE, 200; nothing left behind."""

from __future__ import annotations

import random

from gateway.sip.address import Address
from gateway.sip.dialog import Dialog, DialogState
from gateway.sip.message import Request, Response, make_response, parse_message
from gateway.sip.transactions import (
    AckReceived,
    RequestReceived,
    ResponseReceived,
    TimerConfig,
    TransactionEvent,
    TransactionLayer,
)
from tests.sip.test_dialog import state_of

ALICE = Address("udp", "192.0.2.1", 5060)
BOB = Address("udp", "192.0.2.2", 5060)


class Network:
    """Two layers; whatever one sends reaches the other (parsed from the bytes)."""

    def __init__(self) -> None:
        self.layers = {
            ALICE: TransactionLayer(TimerConfig(), rng=random.Random(1)),
            BOB: TransactionLayer(TimerConfig(), rng=random.Random(2)),
        }
        self.now = 0.0
        self.log: list[tuple[Address, str]] = []  # (sender, first line)

    def flush(self) -> dict[Address, list[TransactionEvent]]:
        """Deliver everything queued, until quiet; returns the events each side got."""
        events: dict[Address, list[TransactionEvent]] = {ALICE: [], BOB: []}
        moved = True
        while moved:
            moved = False
            for sender, layer in self.layers.items():
                for transmit in layer.take_outgoing():
                    moved = True
                    self.log.append((sender, transmit.data.split(b"\r\n", 1)[0].decode()))
                    receiver = transmit.destination
                    events[receiver] += self.layers[receiver].receive(
                        parse_message(transmit.data), sender, self.now
                    )
        return events

    def advance(self, until: float) -> dict[Address, list[TransactionEvent]]:
        events: dict[Address, list[TransactionEvent]] = {ALICE: [], BOB: []}
        while True:
            due = [(d, a) for a, layer in self.layers.items() if (d := layer.next_deadline()) is not None]
            if not due:
                break
            deadline, who = min(due, key=lambda item: item[0])
            if deadline > until:
                break
            self.now = deadline
            events[who] += self.layers[who].handle_timers(self.now)
            for side, got in self.flush().items():
                events[side] += got
        self.now = until
        return events


def _invite() -> Request:
    text = (
        "INVITE sip:bob@192.0.2.2 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.1:5060;rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@example.com>;tag=alice1\r\n"
        "To: <sip:bob@example.com>\r\n"
        "Call-ID: flow-1@192.0.2.1\r\n"
        "CSeq: 1 INVITE\r\n"
        "Contact: <sip:alice@192.0.2.1:5060>\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    msg = parse_message(text.encode())
    assert isinstance(msg, Request)
    return msg


def _answer(request: Request, status: int) -> Response:
    resp = make_response(request, status, to_tag="bob1")
    resp.headers.add("Contact", "<sip:bob@192.0.2.2:5060>")
    return resp


def test_call_flow() -> None:
    net = Network()
    alice, bob = net.layers[ALICE], net.layers[BOB]
    invite = _invite()
    invite_tx = alice.send_request(invite, BOB, net.now)
    got = net.flush()
    (new,) = got[BOB]
    assert isinstance(new, RequestReceived)
    server_tx, incoming = new.transaction, new.request

    ringing = _answer(incoming, 180)
    bob_dialog = Dialog.uas(incoming, ringing)
    bob.send_response(server_tx, ringing, net.now)
    got = net.flush()
    (provisional,) = got[ALICE]
    assert isinstance(provisional, ResponseReceived)
    alice_dialog = Dialog.uac(invite, provisional.response)
    assert state_of(alice_dialog) is state_of(bob_dialog) is DialogState.EARLY

    net.advance(1.0)
    ok = _answer(incoming, 200)
    bob_dialog.send_response(incoming, ok)
    bob.send_response(server_tx, ok, net.now)
    got = net.flush()
    (answered,) = got[ALICE]
    assert isinstance(answered, ResponseReceived) and answered.response.status == 200
    alice_dialog.receive_response(invite, answered.response)
    assert state_of(alice_dialog) is DialogState.CONFIRMED

    ack = alice_dialog.create_ack(invite, via=f"SIP/2.0/UDP 192.0.2.1:5060;branch={alice.new_branch()}")
    alice.send_ack(invite_tx, ack, BOB)
    got = net.flush()
    (acked,) = got[BOB]
    assert isinstance(acked, AckReceived) and acked.transaction is server_tx
    bob_dialog.receive_request(acked.request)
    assert state_of(bob_dialog) is DialogState.CONFIRMED
    assert alice_dialog.id.call_id == bob_dialog.id.call_id
    assert (alice_dialog.id.local_tag, alice_dialog.id.remote_tag) == (
        bob_dialog.id.remote_tag,
        bob_dialog.id.local_tag,
    )

    net.advance(5.0)
    bye = alice_dialog.create_request("BYE", via="SIP/2.0/UDP 192.0.2.1:5060")
    alice.send_request(bye, BOB, net.now)
    got = net.flush()
    (bye_in,) = got[BOB]
    assert isinstance(bye_in, RequestReceived) and bye_in.request.cseq.seq == 2
    bob_dialog.receive_request(bye_in.request)
    assert state_of(bob_dialog) is DialogState.TERMINATED
    bob.send_response(bye_in.transaction, make_response(bye_in.request, 200), net.now)
    got = net.flush()
    bye_ok = [e for e in got[ALICE] if isinstance(e, ResponseReceived)]
    alice_dialog.receive_response(bye, bye_ok[0].response)
    assert state_of(alice_dialog) is DialogState.TERMINATED

    net.advance(100.0)
    assert alice.transaction_count == bob.transaction_count == 0
    assert invite_tx.terminated and server_tx.terminated
    # lossless network: exactly one of each message, the 2xx never re-sent after its ACK
    sent = [line for _, line in net.log]
    assert sent == [
        "INVITE sip:bob@192.0.2.2 SIP/2.0",
        "SIP/2.0 180 Ringing",
        "SIP/2.0 200 OK",
        "ACK sip:bob@192.0.2.2:5060 SIP/2.0",
        "BYE sip:bob@192.0.2.2:5060 SIP/2.0",
        "SIP/2.0 200 OK",
    ]
    assert alice.counters.timeouts == bob.counters.timeouts == 0
