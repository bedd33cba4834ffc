"""The shared pacing loop on a fake loop clock: every session sends once per 20 ms period on
its phase's schedule; after a stall the missed packets go out at once, without duplicates; a
failing leg never stops the others."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, cast

from gateway.media.endpoint import PERIOD, Pacer, RtpSession
from gateway.media.g711 import Codec
from gateway.media.sdp import Negotiated


@dataclass
class FakeHandle:
    when: float
    callback: Any
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class FakeLoop:
    now: float = 100.0
    handles: list[FakeHandle] = field(default_factory=list)

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Any) -> FakeHandle:
        handle = FakeHandle(when, callback)
        self.handles.append(handle)
        return handle

    def run_until(self, until: float, *, lateness: float = 0.0) -> None:
        """Fire due handles in order; each fires ``lateness`` after it was due."""
        while True:
            live = [h for h in self.handles if not h.cancelled]
            if not live:
                return
            handle = min(live, key=lambda h: h.when)
            if handle.when > until:
                return
            self.handles.remove(handle)
            self.now = max(self.now, handle.when + lateness)
            handle.callback()


class FakeSender:
    def __init__(self) -> None:
        self.skipped = 0

    def skip(self) -> None:
        self.skipped += 1


class FakeSession:
    def __init__(self, loop: FakeLoop) -> None:
        self.loop = loop
        self.sender = FakeSender()
        self.sent_at: list[float] = []

    def send_next(self) -> None:
        self.sent_at.append(self.loop.now)


def setup(n: int) -> tuple[FakeLoop, Pacer, list[FakeSession]]:
    loop = FakeLoop()
    pacer = Pacer(cast(asyncio.AbstractEventLoop, loop))
    sessions = [FakeSession(loop) for _ in range(n)]
    for s in sessions:
        pacer.add(cast(RtpSession, s))
    return loop, pacer, sessions


def test_each_session_sends_every_20ms_on_its_own_phase() -> None:
    loop, pacer, sessions = setup(8)
    loop.run_until(100.0 + 1.0 - 1e-9)
    for s in sessions:
        assert len(s.sent_at) == 50  # one second
        gaps = {round(b - a, 6) for a, b in zip(s.sent_at, s.sent_at[1:], strict=False)}
        assert gaps == {PERIOD}
    phases = {round((s.sent_at[0] - 100.0) / (PERIOD / Pacer.SLOTS)) for s in sessions}
    assert phases == {0, 1, 2, 3}  # spread over the four phases, two sessions each
    assert pacer.stats.packets == 400 and pacer.stats.maximum == 0.0


def test_a_stall_is_caught_up_once_and_never_sends_twice() -> None:
    loop, pacer, sessions = setup(4)
    loop.run_until(100.1)
    loop.now = 100.2  # the loop was blocked for ~100 ms
    loop.run_until(101.0 - 1e-9)
    for s in sessions:
        assert len(s.sent_at) + s.sender.skipped == 50  # every period accounted for exactly once
        assert s.sender.skipped == 0  # within MAX_CATCH_UP: the missed packets were sent
    assert pacer.stats.maximum > 0.09


def test_a_long_stall_skips_timestamps_beyond_the_catch_up() -> None:
    loop, _pacer, sessions = setup(1)
    loop.run_until(100.05)
    loop.now = 101.0  # a one-second stall
    loop.run_until(102.0 - 1e-9)
    s = sessions[0]
    assert len(s.sent_at) + s.sender.skipped == 100 and s.sender.skipped > 40


def test_the_last_session_leaving_stops_the_loop_handle() -> None:
    loop, pacer, sessions = setup(2)
    for s in sessions:
        pacer.discard(cast(RtpSession, s))
    assert pacer.sessions == 0 and all(h.cancelled for h in loop.handles)
    pacer.add(cast(RtpSession, sessions[0]))  # a new session restarts it
    loop.run_until(loop.now + 0.05)
    assert len(sessions[0].sent_at) >= 3


class BrokenSession(FakeSession):
    """A leg whose every send fails (a bug, or a destination the socket refuses)."""

    port = 40000

    def send_next(self) -> None:
        raise RuntimeError("boom")


def test_a_failing_session_never_stops_the_pacer_or_the_other_sessions() -> None:
    loop, pacer, sessions = setup(3)
    broken = BrokenSession(loop)
    pacer.add(cast(RtpSession, broken))
    loop.run_until(100.0 + 1.0 - 1e-9)
    assert all(len(s.sent_at) == 50 for s in sessions)


class RefusingTransport:
    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        raise OSError(101, "Network is unreachable")


def test_an_rtp_send_error_is_counted_not_raised() -> None:
    endpoint = cast(Any, type("Endpoint", (), {"loop": None})())
    negotiated = Negotiated(Codec.PCMU, None, "192.0.2.1", 4000)
    session = RtpSession(endpoint, 40002, negotiated, on_key=lambda key: None, on_prompt_end=lambda: None)
    session.connection_made(cast(asyncio.DatagramTransport, RefusingTransport()))
    for _ in range(3):
        session.send_next()
    assert (session.sent, session.send_errors) == (0, 3)
