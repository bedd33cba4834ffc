"""Transaction layer benchmark: µs per whole transaction, messages pre-parsed (codec excluded).

Run on one core: ``.venv/bin/python -m bench.bench_transactions``. Each figure is the median
of several batches of N transactions (plain ``time.perf_counter``):

* INVITE server, UDP: receive INVITE, TU answers 486 (make_response + serialise), receive ACK,
  Timer I expiry;
* INVITE server with 2xx: receive INVITE, TU answers 200, the ACK (own branch) matched;
* non-INVITE client, UDP: send OPTIONS, receive 200, Timer K expiry;
* retransmission storm: N INVITE client transactions with nobody answering, through every
  Timer A firing to Timer B.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable

from gateway.sip.address import Address
from gateway.sip.message import Request, Response, make_response, parse_message
from gateway.sip.transactions import RequestReceived, TransactionLayer

N = 2000
PEER = Address("udp", "192.0.2.10", 5060)
TEMPLATE = (
    "{method} sip:62881001@gw.acme.example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK{branch};rport\r\n"
    "Max-Forwards: 70\r\n"
    "From: <sip:62880001@acme.example.com>;tag=f{n}\r\n"
    "To: <sip:62881001@acme.example.com>{to_tag}\r\n"
    "Call-ID: c{n}@acme.example.com\r\n"
    "CSeq: 1 {method}\r\n"
    "Contact: <sip:62880001@192.0.2.10:5060>\r\n"
    "Content-Length: 0\r\n\r\n"
)


def _request(method: str, n: int, branch: str, to_tag: str = "") -> Request:
    msg = parse_message(TEMPLATE.format(method=method, n=n, branch=branch, to_tag=to_tag).encode())
    assert isinstance(msg, Request)
    return msg


def _drive_timers(layer: TransactionLayer) -> None:
    while (deadline := layer.next_deadline()) is not None:
        layer.handle_timers(deadline)
        layer.take_outgoing()


def invite_server_486() -> Callable[[], None]:
    invites = [_request("INVITE", n, f"i{n}") for n in range(N)]
    acks = [_request("ACK", n, f"i{n}", ";tag=t") for n in range(N)]

    def run() -> None:
        layer = TransactionLayer(rng=random.Random(1))
        for invite, ack in zip(invites, acks, strict=True):
            event = layer.receive(invite, PEER, 0.0)[0]
            assert isinstance(event, RequestReceived)
            layer.send_response(event.transaction, make_response(invite, 486, to_tag="t"), 0.0)
            layer.receive(ack, PEER, 0.0)
            layer.take_outgoing()
        _drive_timers(layer)
        assert layer.transaction_count == 0

    return run


def invite_server_200() -> Callable[[], None]:
    invites = [_request("INVITE", n, f"i{n}") for n in range(N)]
    acks = [_request("ACK", n, f"a{n}", ";tag=t") for n in range(N)]

    def run() -> None:
        layer = TransactionLayer(rng=random.Random(1))
        for invite, ack in zip(invites, acks, strict=True):
            event = layer.receive(invite, PEER, 0.0)[0]
            assert isinstance(event, RequestReceived)
            layer.send_response(event.transaction, make_response(invite, 200, to_tag="t"), 0.0)
            layer.receive(ack, PEER, 0.0)
            layer.take_outgoing()
        _drive_timers(layer)
        assert layer.transaction_count == 0

    return run


def non_invite_client() -> Callable[[], None]:
    def run() -> None:
        layer = TransactionLayer(rng=random.Random(1))
        for n in range(N):
            request = _request("OPTIONS", n, f"o{n}")
            tx = layer.send_request(request, PEER, 0.0)
            ok = parse_message(make_response(request, 200, to_tag="t").to_bytes())
            assert isinstance(ok, Response) and tx.branch
            layer.receive(ok, PEER, 0.0)
            layer.take_outgoing()
        _drive_timers(layer)
        assert layer.transaction_count == 0

    return run


def retransmission_storm() -> Callable[[], None]:
    def run() -> None:
        layer = TransactionLayer(rng=random.Random(1))
        for n in range(N):
            layer.send_request(_request("INVITE", n, f"s{n}"), PEER, 0.0)
        layer.take_outgoing()
        _drive_timers(layer)
        assert layer.counters.timeouts == N

    return run


def measure(name: str, factory: Callable[[], Callable[[], None]]) -> None:
    run = factory()
    samples = []
    for _ in range(5):
        start = time.perf_counter()
        run()
        samples.append((time.perf_counter() - start) / N * 1e6)
    print(f"{name:<55} {statistics.median(samples):8.1f} µs/transaction")


def main() -> None:
    measure("INVITE server UDP: INVITE, 486, ACK, Timer I", invite_server_486)
    measure("INVITE server UDP: INVITE, 200, ACK (2xx), Timer L", invite_server_200)
    measure("non-INVITE client UDP: OPTIONS, 200 (parse incl.), K", non_invite_client)
    measure("INVITE client UDP unanswered: 6 retransmits + Timer B", retransmission_storm)


if __name__ == "__main__":
    main()
