"""Reachability checks: the three-step verification of the private-line procedure ([002]
L533–664) — (1) the operator link's next hop (transmission), (2) the core address (end-to-end
routing), (3) the customer's server (intranet) — plus SIP OPTIONS to the local devices (IAD,
IP-PBX) the box looks after.

Probes, each sent ``count`` times with a timeout; latency (min/avg/max) and loss per target:

* ``icmp``: echo request over a raw socket (RFC 792), matched on identifier, sequence, source;
* ``udp``: a datagram to a closed-by-convention port (33434): an answer or an ICMP port
  unreachable (ECONNREFUSED on the connected socket) both prove the host is reachable;
* ``sip``: a minimal OPTIONS over UDP (RFC 3261 §11); any final response proves the SIP
  server alive, and its status is reported.

Sockets are opened inside the managed network namespace when one is configured.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import struct
import threading
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any

from pyroute2 import netns as pyroute2_netns

from edge_agent import __version__
from edge_agent.config import ChecksConfig, ProbeKind, TargetConfig

log = logging.getLogger(__name__)

ICMP_ECHO_REQUEST = 8
ICMP_ECHO_REPLY = 0


@dataclass(slots=True)
class ProbeResult:
    probe: ProbeKind
    sent: int = 0
    received: int = 0
    rtt_ms: list[float] = field(default_factory=list)
    status: int | None = None
    error: str | None = None

    def summary(self) -> dict[str, Any]:
        loss = 100.0 * (self.sent - self.received) / self.sent if self.sent else 100.0
        out: dict[str, Any] = {
            "probe": self.probe,
            "sent": self.sent,
            "received": self.received,
            "loss_pct": round(loss, 1),
        }
        if self.rtt_ms:
            out["rtt_min_ms"] = round(min(self.rtt_ms), 3)
            out["rtt_avg_ms"] = round(sum(self.rtt_ms) / len(self.rtt_ms), 3)
            out["rtt_max_ms"] = round(max(self.rtt_ms), 3)
        if self.status is not None:
            out["sip_status"] = self.status
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass(slots=True)
class TargetResult:
    name: str
    role: str
    address: str
    probes: list[ProbeResult]

    @property
    def ok(self) -> bool:
        return all(p.received > 0 for p in self.probes)

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "address": self.address,
            "ok": self.ok,
            "probes": [p.summary() for p in self.probes],
        }


def _socket_in_netns(netns: str, kind: int, proto: int) -> socket.socket:
    """Create the socket from a short-lived thread that first joins ``netns``: setns(2) with
    CLONE_NEWNET moves only the calling thread, and a socket belongs to the namespace it was
    created in. No fork (a forked helper would share asyncio's signal wake-up socket)."""
    made: list[socket.socket] = []
    failed: list[OSError] = []

    def work() -> None:
        try:
            pyroute2_netns.setns(netns, flags=0)
            made.append(socket.socket(socket.AF_INET, kind, proto))
        except OSError as exc:
            failed.append(exc)

    thread = threading.Thread(target=work, name=f"netns-socket-{netns}")
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return made[0]


async def open_socket(netns: str | None, kind: int, proto: int = 0) -> socket.socket:
    """A non-blocking IPv4 socket, inside ``netns`` when given."""
    if netns is None:
        sock = socket.socket(socket.AF_INET, kind, proto)
    else:
        sock = await asyncio.to_thread(_socket_in_netns, netns, kind, proto)
    sock.setblocking(False)
    return sock


def _checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return int(~total & 0xFFFF)


def icmp_echo(ident: int, seq: int, payload: bytes) -> bytes:
    header = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, ident, seq)
    return struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, _checksum(header + payload), ident, seq) + payload


def parse_echo_reply(packet: bytes) -> tuple[IPv4Address, int, int] | None:
    """(source, identifier, sequence) of an echo reply in a raw IPv4 packet, else None."""
    if len(packet) < 20:
        return None
    ihl = (packet[0] & 0x0F) * 4
    if len(packet) < ihl + 8 or packet[ihl] != ICMP_ECHO_REPLY:
        return None
    ident, seq = struct.unpack("!HH", packet[ihl + 4 : ihl + 8])
    return IPv4Address(packet[12:16]), ident, seq


def sip_options(target: IPv4Address, port: int, local: tuple[str, int], cseq: int) -> tuple[bytes, str]:
    """A minimal OPTIONS request (RFC 3261 §11, mandatory headers of §8.1.1) and its Call-ID."""
    call_id = f"{secrets.token_hex(8)}@{local[0]}"
    lines = [
        f"OPTIONS sip:{target}:{port} SIP/2.0",
        f"Via: SIP/2.0/UDP {local[0]}:{local[1]};branch=z9hG4bK{secrets.token_hex(8)};rport",
        "Max-Forwards: 70",
        f"From: <sip:edge-agent@{local[0]}>;tag={secrets.token_hex(4)}",
        f"To: <sip:{target}:{port}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} OPTIONS",
        f"Contact: <sip:edge-agent@{local[0]}:{local[1]}>",
        "Accept: application/sdp",
        f"User-Agent: edge-agent/{__version__}",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), call_id


def parse_sip_response(data: bytes, call_id: str) -> int | None:
    """Status code of a response carrying ``call_id`` (long or compact ``i`` form), else None."""
    try:
        text = data.decode("utf-8", errors="replace")
        status_line, _, rest = text.partition("\r\n")
        version, code, _reason = status_line.split(" ", 2)
        if version != "SIP/2.0":
            return None
        for line in rest.split("\r\n"):
            name, sep, value = line.partition(":")
            if sep and name.strip().lower() in ("call-id", "i") and value.strip() == call_id:
                return int(code)
    except ValueError:
        return None
    return None


class Checker:
    """Runs the configured probes; every probe is bounded by ``timeout_s``."""

    def __init__(self, config: ChecksConfig, netns: str | None) -> None:
        self.config = config
        self.netns = netns
        self._ident = os.getpid() & 0xFFFF

    async def run(self, targets: tuple[TargetConfig, ...] | None = None) -> list[TargetResult]:
        chosen = self.config.targets if targets is None else targets
        return list(await asyncio.gather(*(self._target(t) for t in chosen)))

    async def _target(self, target: TargetConfig) -> TargetResult:
        results = []
        for kind in target.probes:
            result = ProbeResult(kind)
            try:
                if kind == "icmp":
                    await self._icmp(target, result)
                elif kind == "udp":
                    await self._udp(target, result)
                else:
                    await self._sip(target, result)
            except OSError as exc:
                result.error = f"{exc.strerror or exc}"
            if result.received == 0:
                log.info("check %s (%s) %s: no answer (%s)", target.name, target.address, kind, result.error)
            results.append(result)
        return TargetResult(target.name, target.role, str(target.address), results)

    async def _icmp(self, target: TargetConfig, result: ProbeResult) -> None:
        loop = asyncio.get_running_loop()
        sock = await open_socket(self.netns, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        with sock:
            for seq in range(1, self.config.count + 1):
                result.sent += 1
                sent_at = loop.time()
                packet = icmp_echo(self._ident, seq, b"edge-agent")
                await loop.sock_sendto(sock, packet, (str(target.address), 0))
                deadline = sent_at + self.config.timeout_s
                # A raw socket sees every ICMP packet: skip what is not our reply.
                while (remaining := deadline - loop.time()) > 0:
                    try:
                        packet = await asyncio.wait_for(loop.sock_recv(sock, 2048), remaining)
                    except TimeoutError:
                        break
                    if parse_echo_reply(packet) == (target.address, self._ident, seq):
                        result.received += 1
                        result.rtt_ms.append((loop.time() - sent_at) * 1000)
                        break

    async def _udp(self, target: TargetConfig, result: ProbeResult) -> None:
        loop = asyncio.get_running_loop()
        sock = await open_socket(self.netns, socket.SOCK_DGRAM)
        with sock:
            await loop.sock_connect(sock, (str(target.address), target.udp_port))
            for _ in range(self.config.count):
                result.sent += 1
                sent_at = loop.time()
                await loop.sock_sendall(sock, b"edge-agent probe")
                try:
                    await asyncio.wait_for(loop.sock_recv(sock, 2048), self.config.timeout_s)
                except TimeoutError:
                    continue
                except ConnectionRefusedError:
                    pass  # ICMP port unreachable: the host answered
                result.received += 1
                result.rtt_ms.append((loop.time() - sent_at) * 1000)

    async def _sip(self, target: TargetConfig, result: ProbeResult) -> None:
        loop = asyncio.get_running_loop()
        sock = await open_socket(self.netns, socket.SOCK_DGRAM)
        with sock:
            await loop.sock_connect(sock, (str(target.address), target.sip_port))
            local = sock.getsockname()
            for cseq in range(1, self.config.count + 1):
                result.sent += 1
                request, call_id = sip_options(target.address, target.sip_port, local, cseq)
                sent_at = loop.time()
                await loop.sock_sendall(sock, request)
                deadline = sent_at + self.config.timeout_s
                while (remaining := deadline - loop.time()) > 0:
                    try:
                        data = await asyncio.wait_for(loop.sock_recv(sock, 65535), remaining)
                    except TimeoutError:
                        break
                    except ConnectionRefusedError:
                        result.error = "port unreachable"
                        break
                    status = parse_sip_response(data, call_id)
                    if status is not None and status >= 200:
                        result.received += 1
                        result.status = status
                        result.rtt_ms.append((loop.time() - sent_at) * 1000)
                        break


def summaries(results: list[TargetResult]) -> list[dict[str, Any]]:
    return [r.summary() for r in results]
