"""A port-restricted NAT for one UDP peer, in a thread: what most IADs sit behind.

The inside peer (a SIPp instance) talks to ``inside``; everything it sends leaves from the
``outside`` socket toward ``remote`` (the gateway's shared SIP address), and only datagrams
from exactly ``remote`` (address AND port) come back in: anything else that reaches the outside
socket is dropped and recorded in ``dropped``, as a port-restricted cone NAT would (RFC 4787
§4.1: "address and port-dependent filtering"). A gateway whose workers answer from several
ports loses those answers here, and SIPp then times out.

The outside socket may be bound to a chosen address and port: binding it to the inside peer's
port on another loopback address stands for a port-preserving NAT, so a peer whose Via has no
``rport`` is still answered through the NAT (RFC 3261 §18.2.2: the source address, the Via's
port).
"""

from __future__ import annotations

import selectors
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

Endpoint = tuple[str, int]
BUFFER = 4 * 1024 * 1024


class PortRestrictedNat:
    """See the module docstring; use :func:`port_restricted_nat` to run one."""

    def __init__(self, *, outside: Endpoint, remote: Endpoint, inside_peer: Endpoint | None = None) -> None:
        self.remote = remote
        self.inside_peer = inside_peer  # None: learned from the first datagram inside
        self._inside = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._outside = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for sock in (self._inside, self._outside):
            # A thread on a loaded machine may not run for a while: room for a burst, so that
            # the NAT itself loses nothing (what is lost must be what it filters out).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER)
        self._inside.bind(("127.0.0.1", 0))
        self._outside.bind(outside)
        self.inside: Endpoint = self._inside.getsockname()
        self.outside: Endpoint = self._outside.getsockname()
        self.passed = 0  # datagrams let in from ``remote``
        self.dropped: list[Endpoint] = []  # sources of datagrams filtered out
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"nat-{self.outside[1]}", daemon=True)

    def _run(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._inside, selectors.EVENT_READ)
            selector.register(self._outside, selectors.EVENT_READ)
            while not self._stop.is_set():
                for key, _ in selector.select(timeout=0.1):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    data, source = sock.recvfrom(65535)
                    if sock is self._inside:
                        if self.inside_peer is None:
                            self.inside_peer = source
                        self._outside.sendto(data, self.remote)
                    elif source == self.remote and self.inside_peer is not None:
                        self.passed += 1
                        self._inside.sendto(data, self.inside_peer)
                    else:
                        self.dropped.append(source)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._inside.close()
        self._outside.close()


@contextmanager
def port_restricted_nat(
    *, outside: Endpoint, remote: Endpoint, inside_peer: Endpoint | None = None
) -> Iterator[PortRestrictedNat]:
    nat = PortRestrictedNat(outside=outside, remote=remote, inside_peer=inside_peer)
    nat.start()
    try:
        yield nat
    finally:
        nat.stop()
