"""Test peers for RTP: a pcap of RFC 4733 key presses (SIPp plays it with ``play_pcap_audio``)
and a receiver thread that records every RTP packet sent to its port."""

from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from gateway.media.dtmf import event_payload
from gateway.media.rtp import RtpPacket, decode

TELEPHONE_EVENT = 101


def dtmf_packets(key: str, *, timestamp: int, sequence: int, ssrc: int = 0x1234) -> list[bytes]:
    """One key press as RFC 4733 §2.5 sends it: updates every 20 ms with the same timestamp,
    the first with the marker, then the end packet three times (the redundancy a detector
    must not count twice)."""
    packets = []
    for i, duration in enumerate((160, 320, 480, 640)):
        payload = event_payload(key, end=False, duration=duration)
        packets.append(RtpPacket(TELEPHONE_EVENT, sequence + i, timestamp, ssrc, payload, i == 0).encode())
    end = event_payload(key, end=True, duration=800)
    for j in range(3):
        packets.append(RtpPacket(TELEPHONE_EVENT, sequence + 4 + j, timestamp, ssrc, end).encode())
    return packets


def write_dtmf_pcap(path: Path, keys: str, *, first_timestamp: int = 8000) -> None:
    """A pcap (Ethernet / IPv4 / UDP) of RFC 4733 presses of ``keys``, one after the other
    (each its own RTP timestamp). SIPp's ``play_pcap_audio`` replays it to the far end's RTP."""
    records = []
    sequence = 1000
    for i, key in enumerate(keys):
        offset = 0.2 * i
        for j, packet in enumerate(
            dtmf_packets(key, timestamp=first_timestamp + 1600 * i, sequence=sequence)
        ):
            records.append((offset + 0.02 * min(j, 4), packet))
        sequence += 7
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for when, payload in records:
        udp = struct.pack("!HHHH", 6000, 6000, 8 + len(payload), 0) + payload
        loopback = bytes([127, 0, 0, 1])
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, loopback, loopback)
        frame = b"\x00" * 12 + b"\x08\x00" + ip + udp
        seconds = int(when)
        out.append(struct.pack("<IIII", seconds, int((when - seconds) * 1_000_000), len(frame), len(frame)))
        out.append(frame)
    path.write_bytes(b"".join(out))


@dataclass
class RtpReceiver:
    """Collects RTP packets arriving on a loopback UDP port (a thread; stop() to end)."""

    sock: socket.socket = field(default_factory=lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    packets: list[tuple[float, RtpPacket]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.1)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    port: int = 0

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(2048)
            except TimeoutError:
                continue
            except OSError:
                return
            self.packets.append((time.monotonic(), decode(data)))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self.sock.close()
