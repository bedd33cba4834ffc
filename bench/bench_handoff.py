"""What the hand-off between workers costs per datagram: ``python -m bench.bench_handoff``.

With N workers behind one UDP address (gateway.transport.handoff), every datagram is asked who
owns it (gateway.sip.ownership: a few byte searches), and (N-1)/N of them take one extra local
hop: a ``send`` on a unix datagram socket pair in the worker that received it, a ``recv`` in
the owner. Measured in one process, one core: median µs of CPU (``time.process_time``) over 31
batches, for a ~700-byte INVITE and a 200 OK carrying a worker's branch; the hop is both sides.
Compare with ``bench.bench_codec`` (a parse) and the ~1.1 ms of CPU a whole call costs.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from gateway.metrics import Metrics
from gateway.sip.address import Address
from gateway.sip.ownership import datagram_owner
from gateway.transport.handoff import Handoff, make_channels

INVITE = (
    b"INVITE sip:13800138000@192.0.2.5:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Trunk" <sip:02155550001@192.0.2.10>;tag=1928301774\r\n'
    b"To: <sip:13800138000@192.0.2.5>\r\n"
    b"Call-ID: a84b4c76e66710@192.0.2.10\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:02155550001@192.0.2.10:5060>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 260\r\n\r\n"
) + b"v=0\r\n" * 52
OK = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.5:5060;branch=z9hG4bK-w01-0123456789abcdef;rport=5060\r\n"
    b"From: <sip:02155550001@192.0.2.5>;tag=8a8f1c\r\nTo: <sip:13800138000@192.0.2.9>;tag=77\r\n"
    b"Call-ID: 5f1e0c2a9b7d4e3f8a6b1c2d\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
)
BATCH = 64  # what the owner reads per wake-up


def median_us(run: Callable[[], None], per_batch: int, batches: int = 31) -> float:
    times = []
    for _ in range(batches):
        start = time.process_time()
        run()
        times.append((time.process_time() - start) / per_batch * 1e6)
    return statistics.median(times)


def main() -> None:
    claimed: dict[bytes, int] = {}
    for name, data in (("INVITE", INVITE), ("200 OK", OK)):
        def owners(data: bytes = data) -> None:
            for _ in range(20_000):
                datagram_owner(data, 2, claimed)

        us = median_us(owners, 20_000)
        print(f"owner of a {name:6} ({len(data)} bytes): {us:6.2f} µs")
    pairs = make_channels(2)
    owner = Handoff(0, pairs[0][0], [send for _, send in pairs], Metrics())
    receiver = Handoff(1, pairs[1][0], [send for _, send in pairs], Metrics())
    for sock in (owner._receive, *owner._sends):
        sock.setblocking(False)
    got: list[int] = []
    owner._deliver = lambda data, source: got.append(len(data))
    source = Address("udp", "192.0.2.10", 5060, 0)

    def hop() -> None:
        for _ in range(20_000 // BATCH):
            for _ in range(BATCH):
                receiver.forward(0, INVITE, source)
            owner._readable()

    us = median_us(hop, 20_000 // BATCH * BATCH)
    assert len(got) == 31 * (20_000 // BATCH * BATCH), len(got)
    print(f"hop of an INVITE to its owner (send + recv + envelope): {us:6.2f} µs")


if __name__ == "__main__":
    main()
