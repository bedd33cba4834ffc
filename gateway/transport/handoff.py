"""One UDP address for every worker: the kernel spreads datagrams, the owner gets each one.

Worker processes (:mod:`gateway.workers`) share each UDP listener with SO_REUSEPORT and send
everything — requests and responses — from that shared socket, so a peer sees one address and
one port (a port-restricted NAT in front of an IAD passes only what comes from the address and
port it sent to). Receiving works in two steps:

1. **The kernel spreads.** A classic BPF program attached to the reuseport group
   (``SO_ATTACH_REUSEPORT_CBPF``) returns ``random() mod workers`` as the socket index: the
   datagrams of ONE peer (a carrier SBC, a PBX trunk) land on every worker, where the default
   4-tuple hash would put them all on one. A hash of the Call-ID cannot be computed in classic
   BPF (the header sits at a variable offset in a text message), and a random index needs no
   knowledge of the group's socket order, which the kernel reshuffles when a worker restarts
   (an index past the group's end falls back to the kernel's hash while a worker is down).
2. **The receiver hands on.** The worker that got a datagram asks
   :func:`gateway.sip.ownership.datagram_owner` who owns it (the worker named in the branch
   of a response, the worker that claimed the Call-ID, else the Call-ID's hash) and, when it is
   another worker, sends it there with the peer's source address and the listener it came in
   on. The owner handles it exactly as if it had received it, and answers through its own
   socket on the shared port. (N-1)/N of the datagrams take this extra local hop: one
   ``send`` and one ``recv`` on a unix socket, cheaper than a SIP parse.

The channels are unix datagram socket pairs made by the supervisor before it starts the workers
and inherited by them (:data:`ENVIRONMENT` names the descriptors): nothing on the file system or
in the abstract namespace that another local process could write to (it could otherwise forge a
peer's source address), no name to collide between two gateways, and the receiving end of a
worker outlives its restarts. A pair's sender is connected to its receiver, so the kernel's
``net.unix.max_dgram_qlen`` (10 on some hosts) does not apply, only the socket buffers; a
datagram that does not fit is dropped and counted, like a UDP datagram lost on the wire (the
peer retransmits, RFC 3261 §17).

Claims (rule 2 of :mod:`gateway.sip.ownership`): the Call-ID of a dialog-creating INVITE a
worker sends is told to the other workers before the INVITE leaves, so the callee's requests
inside that dialog find the worker; the claim is withdrawn 32 s (64*T1, late retransmissions)
after the dialog attempt fails or a BYE ends it. A worker that (re)starts tells the others to
forget every claim in its name (its dialogs died with the previous process). A bounded table
keeps a lost withdrawal from growing memory without end.

TCP and TLS are not handed on: a connection stays with the worker that accepted it, which
handles every message on it (a request on it inside another worker's dialog gets 481 there).
Handing a stream message on would also mean relaying the answers back through the holder of the
connection; instead each worker names a TCP/TLS port of its own in its Contact and Via, where a
new connection finds it (:mod:`gateway.transport.manager`).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import socket
import struct
from collections.abc import Callable

from gateway.metrics import Metrics
from gateway.sip.address import Address
from gateway.sip.ownership import call_id_owner, datagram_owner

log = logging.getLogger(__name__)

ENVIRONMENT = "GATEWAY_HANDOFF_FDS"
"""``receive:send0,send1,...``: the inherited descriptors of a worker's hand-off channels."""

SOCKET_BUFFER = 4 * 1024 * 1024
"""Per channel (the kernel caps it at net.core.wmem_max / rmem_max)."""

RELEASE_DELAY = 32.0
"""Seconds a withdrawn claim still routes (64*T1: retransmissions of the final request)."""

MAX_CLAIMS = 200_000
"""Claims held for the other workers; past it the oldest go (a withdrawal lost with a crash)."""

SO_ATTACH_REUSEPORT_CBPF = 51  # linux/asm-generic/socket.h

# Classic BPF (linux/filter.h): A = random(); A %= count; return A.
_BPF_LD_W_ABS = 0x20
_BPF_ALU_MOD_K = 0x94
_BPF_RET_A = 0x16
_SKF_AD_RANDOM = 0xFFFFF000 + 56  # SKF_AD_OFF + SKF_AD_RANDOM

_DATAGRAM, _CLAIM, _FORGET, _RESTARTED = b"M", b"C", b"F", b"X"
_ENVELOPE = struct.Struct("!cBBH")  # kind, sender, listener, source port; then host, LF, datagram
_BATCH = 64  # datagrams read per wake-up before yielding to the loop


class _SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


def spread_at_random(sock: socket.socket, count: int) -> None:
    """Make the kernel pick a random socket of ``sock``'s reuseport group for each datagram
    (step 1 of the module docstring). The program belongs to the group: the last one attached
    wins, and every worker attaches the same."""
    program = (_SockFilter * 3)(
        _SockFilter(_BPF_LD_W_ABS, 0, 0, _SKF_AD_RANDOM),
        _SockFilter(_BPF_ALU_MOD_K, 0, 0, count),
        _SockFilter(_BPF_RET_A, 0, 0, 0),
    )
    fprog = _SockFprog(len(program), ctypes.cast(program, ctypes.POINTER(_SockFilter)))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, bytes(fprog))


def make_channels(count: int) -> list[tuple[socket.socket, socket.socket]]:
    """The supervisor's side: one (receive, send) pair per worker, kept for its restarts."""
    pairs = []
    for _ in range(count):
        receive, send = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        receive.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
        send.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        pairs.append((receive, send))
    return pairs


def channels_for(index: int, pairs: list[tuple[socket.socket, socket.socket]]) -> tuple[str, list[int]]:
    """The :data:`ENVIRONMENT` value and the descriptors to pass to worker ``index``."""
    receive = pairs[index][0].fileno()
    sends = [send.fileno() for _, send in pairs]
    return f"{receive}:{','.join(map(str, sends))}", [receive, *sends]


Deliver = Callable[[bytes, Address], None]
"""Hands a datagram received for this worker to the UDP listener it came in on."""


class Handoff:
    """This worker's end of the hand-off channels: who owns a datagram, forwarding, claims."""

    def __init__(
        self, index: int, receive: socket.socket, sends: list[socket.socket], metrics: Metrics
    ) -> None:
        self.index = index
        self.count = len(sends)
        self._receive = receive
        self._sends = sends
        self._metrics = metrics
        self._deliver: Deliver | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.claimed: dict[bytes, int] = {}  # Call-ID -> the worker whose dialog it is
        self._releases: dict[bytes, asyncio.TimerHandle] = {}  # our claims being withdrawn
        self._sent = metrics.worker_handoffs.labels("sent")
        self._received = metrics.worker_handoffs.labels("received")
        self._failed = metrics.worker_handoffs.labels("failed")

    @classmethod
    def from_environment(cls, index: int, count: int, metrics: Metrics) -> Handoff:
        """The channels the supervisor passed down; ValueError naming :data:`ENVIRONMENT` when
        they are missing or do not match the worker count (a worker started by hand)."""
        value = os.environ.get(ENVIRONMENT, "")
        receive, _, sends = value.partition(":")
        try:
            fds = [int(receive), *(int(fd) for fd in sends.split(","))]
        except ValueError:
            raise ValueError(f"{ENVIRONMENT} is {value!r}: worker processes are started by "
                             "`gateway run --workers N`, which passes their hand-off channels") from None
        if len(fds) != count + 1 or not 0 <= index < count:
            raise ValueError(f"{ENVIRONMENT} names {len(fds) - 1} channels for {count} workers")
        sockets = [socket.socket(fileno=fd) for fd in fds]
        for sock in sockets:
            sock.setblocking(False)
        return cls(index, sockets[0], sockets[1:], metrics)

    def start(self, deliver: Deliver) -> None:
        """Start receiving; tell the others to drop the claims a previous process of ours made."""
        self._deliver = deliver
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._receive.fileno(), self._readable)
        self._broadcast(_ENVELOPE.pack(_RESTARTED, self.index, 0, 0))

    def owner(self, data: bytes) -> int | None:
        """The worker that owns this datagram (None: the one that received it keeps it)."""
        return datagram_owner(data, self.count, self.claimed)

    def forward(self, owner: int, data: bytes, source: Address) -> None:
        """Hand ``data``, received from ``source``, to worker ``owner``."""
        header = _ENVELOPE.pack(_DATAGRAM, self.index, source.listener or 0, source.port)
        if self._send(owner, b"".join((header, source.host.encode("ascii"), b"\n", data))):
            self._sent.inc()

    # -- claims ---------------------------------------------------------------------------------
    def claim(self, call_id: str) -> None:
        """We are creating a dialog with this Call-ID: its in-dialog requests come to us."""
        key = call_id.encode("utf-8", "surrogateescape")
        pending = self._releases.pop(key, None)
        if pending is not None:  # a retry on the same Call-ID (after 401/407): still ours
            pending.cancel()
            return
        if key in self.claimed or call_id_owner(key, self.count) == self.index:
            return
        self.claimed[key] = self.index
        self._broadcast(_ENVELOPE.pack(_CLAIM, self.index, 0, 0) + key)

    def release(self, call_id: str) -> None:
        """The dialog attempt failed or a BYE ended it: withdraw our claim after
        :data:`RELEASE_DELAY`."""
        key = call_id.encode("utf-8", "surrogateescape")
        if self.claimed.get(key) != self.index or key in self._releases or self._loop is None:
            return
        self._releases[key] = self._loop.call_later(RELEASE_DELAY, self._withdraw, key)

    def _withdraw(self, key: bytes) -> None:
        del self._releases[key]
        if self.claimed.get(key) == self.index:
            del self.claimed[key]
        self._broadcast(_ENVELOPE.pack(_FORGET, self.index, 0, 0) + key)

    # -- the channels ---------------------------------------------------------------------------
    def _broadcast(self, message: bytes) -> None:
        for worker in range(self.count):
            if worker != self.index:
                self._send(worker, message)

    def _send(self, worker: int, message: bytes) -> bool:
        try:
            self._sends[worker].send(message)
        except OSError as exc:  # a full buffer (the owner is behind): lost like a UDP datagram
            self._failed.inc()
            log.debug("hand-off to worker %d failed: %s", worker, exc)
            return False
        return True

    def _readable(self) -> None:
        for _ in range(_BATCH):
            try:
                message = self._receive.recv(65_600)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.error("hand-off channel of worker %d failed: %s", self.index, exc)
                return
            try:
                self._handle(message)
            except Exception:
                log.exception("bad hand-off message of %d bytes", len(message))

    def _handle(self, message: bytes) -> None:
        kind, sender, listener, port = _ENVELOPE.unpack_from(message)
        body = message[_ENVELOPE.size:]
        if kind == _DATAGRAM:
            host, _, data = body.partition(b"\n")
            self._received.inc()
            assert self._deliver is not None
            self._deliver(data, Address("udp", host.decode("ascii"), port, listener))
        elif kind == _CLAIM:
            claimed = self.claimed
            claimed[body] = sender
            if len(claimed) > MAX_CLAIMS:  # the oldest of another worker's (ours are live dialogs)
                oldest = next((key for key, owner in claimed.items() if owner != self.index), None)
                if oldest is not None:
                    del claimed[oldest]
        elif kind == _FORGET:
            if self.claimed.get(body) == sender:
                del self.claimed[body]
        elif kind == _RESTARTED:
            self.claimed = {key: owner for key, owner in self.claimed.items() if owner != sender}

    def close(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self._receive.fileno())
        for handle in self._releases.values():
            handle.cancel()
        self._releases.clear()
        for sock in (self._receive, *self._sends):
            sock.close()
