"""The gateway's RTP endpoint: asyncio datagram sessions paced by ONE shared loop.

* :class:`PortAllocator` hands out even RTP ports of the configured range (RFC 3550 §11: RTP
  on even ports, RTCP on the next odd one, which we do not open) and always takes them back:
  a session's port is released in :meth:`RtpSession.close`, the one place a session ends,
  and the port of a session that failed to open is released there and then.
* :class:`Pacer` sends the next 20 ms packet of every live session from one ``call_at``
  handle (sessions spread over four 5 ms phases of the period, so a burst is a quarter of
  them). Each burst's due time is computed from the start (``t0 + k * 5 ms``),
  never by sleeping 20 ms after the previous one, so lateness does not accumulate; a tick
  that comes more than one period late sends the missed packets (at most a few; beyond that
  the timestamps jump, RFC 3550 §5.1) so the far end's playout clock stays right. Lateness of
  every tick goes into :class:`JitterStats` (the benchmark's figure). No task per session:
  a silent or stuck peer costs nothing but its slot in the pacer's set until its call ends.
* :class:`RtpSession` plays prompts (G.711 frames prepared at load), sends silence between
  them, and turns received RFC 4733 telephone-events into keys.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from gateway.media.dtmf import DtmfDetector
from gateway.media.g711 import SILENCE, Codec
from gateway.media.prompts import FRAME_SAMPLES, SAMPLE_RATE, Prompt
from gateway.media.rtp import RtpError, RtpSender, decode
from gateway.media.sdp import Negotiated

log = logging.getLogger(__name__)

PERIOD = FRAME_SAMPLES / SAMPLE_RATE  # 20 ms
MAX_CATCH_UP = 5


class MediaError(Exception):
    """The endpoint cannot serve a call; ``status`` is the SIP answer (503: no port free)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class PortAllocator:
    """Even ports of ``first``..``last``, handed out round robin (a port just freed is reused
    last, so late packets of an ended call do not land in a new one)."""

    def __init__(self, first: int, last: int) -> None:
        if first > last:
            raise ValueError("empty RTP port range")
        start = first + (first & 1)
        self._free: list[int] = list(range(start, last + 1, 2))
        self._used: set[int] = set()
        self.size = len(self._free)

    @property
    def in_use(self) -> int:
        return len(self._used)

    def take(self) -> int | None:
        if not self._free:
            return None
        port = self._free.pop(0)
        self._used.add(port)
        return port

    def release(self, port: int) -> None:
        if port in self._used:
            self._used.discard(port)
            self._free.append(port)


@dataclass(slots=True)
class JitterStats:
    """Lateness of the pacer's ticks (actual minus scheduled time), in 0.1 ms bins."""

    bins: list[int] = field(default_factory=lambda: [0] * 1001)
    count: int = 0
    maximum: float = 0.0
    packets: int = 0

    def record(self, lateness: float) -> None:
        late = max(lateness, 0.0)
        self.count += 1
        self.maximum = max(self.maximum, late)
        self.bins[min(int(late * 10_000), 1000)] += 1

    def percentile(self, fraction: float) -> float:
        """Lateness (seconds) below which ``fraction`` of the ticks were."""
        wanted = fraction * self.count
        seen = 0
        for index, n in enumerate(self.bins):
            seen += n
            if seen >= wanted and n:
                return (index + 1) / 10_000
        return self.maximum

    def reset(self) -> None:
        self.bins = [0] * 1001
        self.count = 0
        self.maximum = 0.0
        self.packets = 0


class Pacer:
    """One ``call_at`` handle sends every live session's packets (see the module docstring).

    Sessions are spread over ``SLOTS`` phases of the 20 ms period (a new session joins the
    emptiest): each wake-up sends one phase's packets, so a burst is a quarter of the sessions
    and the last packet of a burst is that much less late. Each session still sends exactly
    every 20 ms, on its phase's schedule ``t0 + phase * 5 ms + k * 20 ms``.
    """

    SLOTS = 4

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._slots: list[set[RtpSession]] = [set() for _ in range(self.SLOTS)]
        self._slot_of: dict[RtpSession, int] = {}
        self._t0 = 0.0
        self._tick = 0
        self._sent = [0] * self.SLOTS  # periods each phase has sent since t0
        self._handle: asyncio.TimerHandle | None = None
        self.stats = JitterStats()
        """Lateness of each burst's first packet."""
        self.last_packet = JitterStats()
        """Lateness of each burst's last packet: the worst send jitter any session saw."""

    def add(self, session: RtpSession) -> None:
        slot = min(range(self.SLOTS), key=lambda i: len(self._slots[i]))
        self._slots[slot].add(session)
        self._slot_of[session] = slot
        if self._handle is None:
            self._t0 = self._loop.time()
            self._tick = 0
            self._sent = [0] * self.SLOTS
            self._handle = self._loop.call_at(self._t0, self._run)

    def discard(self, session: RtpSession) -> None:
        slot = self._slot_of.pop(session, None)
        if slot is not None:
            self._slots[slot].discard(session)
        if not self._slot_of and self._handle is not None:
            self._handle.cancel()
            self._handle = None

    @property
    def sessions(self) -> int:
        return len(self._slot_of)

    def _run(self) -> None:
        step = PERIOD / self.SLOTS
        now = self._loop.time()
        slot = self._tick % self.SLOTS
        due = self._t0 + self._tick * step
        # Periods this phase owes: all that began by now, minus those already sent. After a stall
        # the missed packets go out at once (up to MAX_CATCH_UP; beyond that the timestamps jump).
        # (+1e-6: a burst running exactly on time must not round down to the previous period)
        owed = int((now - self._t0 - slot * step) / PERIOD + 1e-6) + 1 - self._sent[slot]
        sessions = self._slots[slot]
        if owed > 0:
            self._sent[slot] += owed
            if sessions:
                self.stats.record(now - due)
                packets = min(owed, 1 + MAX_CATCH_UP)
                for session in list(sessions):
                    try:
                        for _ in range(packets):
                            session.send_next()
                        for _ in range(owed - packets):
                            session.sender.skip()
                    except Exception:  # one leg's bug must not stop every other leg's audio
                        log.exception("RTP session on port %s failed; the pacer goes on", session.port)
                self.stats.packets += packets * len(sessions)
                self.last_packet.record(self._loop.time() - due)
        self._tick = max(self._tick + 1, int((now - self._t0) / step) - self.SLOTS + 1)
        if self._slot_of:
            self._handle = self._loop.call_at(self._t0 + self._tick * step, self._run)
        else:
            self._handle = None


class RtpSession(asyncio.DatagramProtocol):
    """One IVR leg's RTP: prompts out, telephone-events in."""

    def __init__(
        self,
        endpoint: MediaEndpoint,
        port: int,
        negotiated: Negotiated,
        *,
        on_key: Callable[[str], None],
        on_prompt_end: Callable[[], None],
    ) -> None:
        self.endpoint = endpoint
        self.port = port
        self.negotiated = negotiated
        self.remote = (negotiated.remote_address, negotiated.remote_port)
        self.codec: Codec = negotiated.codec
        self.sender = RtpSender()
        self._on_key = on_key
        self._on_prompt_end = on_prompt_end
        self._dtmf = DtmfDetector()
        self._transport: asyncio.DatagramTransport | None = None
        self._frames: list[bytes] = []
        self._prompts: list[Prompt] = []
        self._position = 0
        self._loop_audio = False
        self._silence = bytes([SILENCE[self.codec]]) * FRAME_SAMPLES
        self.closed = False
        self.last_received: float | None = None
        self.received = 0
        self.sent = 0
        self.send_errors = 0

    # -- asyncio protocol ------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        try:
            packet = decode(data)
        except RtpError:
            return  # RTCP on the RTP port (RFC 5761 mux) or noise: ignored
        self.received += 1
        self.last_received = self.endpoint.loop.time()
        if packet.payload_type == self.negotiated.telephone_event:
            key = self._dtmf.feed(packet.timestamp, packet.payload)
            if key is not None:
                self._on_key(key)

    def update(self, negotiated: Negotiated) -> None:
        """The far end's answer arrived (late offer) or changed: its address, law and events."""
        self.negotiated = negotiated
        self.remote = (negotiated.remote_address, negotiated.remote_port)
        if negotiated.codec is not self.codec:
            self.codec = negotiated.codec
            self._silence = bytes([SILENCE[self.codec]]) * FRAME_SAMPLES
            if self._frames:  # the same prompt, from the same place, in the other law
                self._frames = self._frames_of(self._prompts)

    def error_received(self, exc: Exception) -> None:
        log.debug("RTP port %d: %s", self.port, exc)  # ICMP unreachable from a peer gone away

    # -- playing ------------------------------------------------------------------------------------------
    def play(self, prompts: Sequence[Prompt], *, loop: bool = False) -> None:
        """Play ``prompts`` one after the other (replacing what plays); ``loop``: until stopped."""
        self._prompts = list(prompts)
        self._frames = self._frames_of(self._prompts)
        self._position = 0
        self._loop_audio = loop and bool(self._frames)
        self.sender.talkspurt = True  # RFC 3551 §4.1: marker at the start of new audio

    def _frames_of(self, prompts: Sequence[Prompt]) -> list[bytes]:
        frames: list[bytes] = []
        for prompt in prompts:
            frames += prompt.frames[self.codec]
        return frames

    def stop(self) -> None:
        self._frames = []
        self._position = 0
        self._loop_audio = False

    @property
    def playing(self) -> bool:
        return self._position < len(self._frames)

    def send_next(self) -> None:
        """The pacer's tick: the next frame of the prompt, or silence."""
        frames = self._frames
        if self._position < len(frames):
            payload = frames[self._position]
            self._position += 1
            if self._position == len(frames):
                if self._loop_audio:
                    self._position = 0
                else:
                    self._frames = []
                    self._position = 0
                    self.endpoint.loop.call_soon(self._prompt_finished)
        else:
            payload = self._silence
        transport = self._transport
        if transport is not None and self.remote[1]:  # port 0: no answer yet (late offer)
            try:
                transport.sendto(self.sender.packet(self.codec.payload_type, payload), self.remote)
            except (OSError, ValueError, TypeError) as exc:
                # One leg's bad destination (unreachable, wrong family) costs that packet, never
                # the pacer that serves every other leg.
                self.send_errors += 1
                if self.send_errors == 1:
                    log.warning("RTP to %s:%s failed: %s", self.remote[0], self.remote[1], exc)
                return
            self.sent += 1

    def _prompt_finished(self) -> None:
        if not self.closed:
            self._on_prompt_end()

    def key(self, key: str) -> None:
        """A key that arrived another way (SIP INFO): same path as an RFC 4733 one."""
        self._on_key(key)

    def close(self) -> None:
        """The one place a session ends: out of the pacer, socket closed, port released."""
        if self.closed:
            return
        self.closed = True
        self.endpoint.pacer.discard(self)
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        self.endpoint.ports.release(self.port)
        self.endpoint.sessions.discard(self)


class MediaEndpoint:
    """Opens RTP sessions on ``host`` with ports from ``ports``; one pacer for all of them."""

    def __init__(self, loop: asyncio.AbstractEventLoop, host: str, ports: PortAllocator) -> None:
        self.loop = loop
        self.host = host
        self.ports = ports
        self.pacer = Pacer(loop)
        self.sessions: set[RtpSession] = set()

    async def open(
        self,
        negotiated: Negotiated,
        *,
        on_key: Callable[[str], None],
        on_prompt_end: Callable[[], None],
    ) -> RtpSession:
        """A session on a free port, sending at once (silence until something plays)."""
        for _ in range(self.ports.size):
            port = self.ports.take()
            if port is None:
                break
            session = RtpSession(self, port, negotiated, on_key=on_key, on_prompt_end=on_prompt_end)
            try:
                await self.loop.create_datagram_endpoint(lambda s=session: s, local_addr=(self.host, port))  # type: ignore[misc]
            except OSError as exc:
                log.warning("RTP port %d unusable: %s", port, exc)
                self.ports.release(port)  # in use by something else: try the next one
                continue
            except asyncio.CancelledError:
                session.close()  # the INVITE was CANCELled meanwhile: nothing may stay taken
                raise
            self.sessions.add(session)
            self.pacer.add(session)
            return session
        raise MediaError(503, "No RTP Port Available")

    def close(self) -> None:
        for session in list(self.sessions):
            session.close()
