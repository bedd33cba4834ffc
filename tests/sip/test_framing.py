"""Stream framing (RFC 3261 §18.3, RFC 5626 §3.5.1): chunking, pipelining, keep-alives, errors."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.sip import framing
from gateway.sip.framing import (
    FramedMessage,
    FrameEvent,
    FramingError,
    KeepAlivePing,
    StreamFramer,
    content_length,
)
from tests.conftest import RFC4475_DIR


def rfc4475_stream_messages() -> list[tuple[str, bytes]]:
    """Torture messages that frame on a stream: those with one valid Content-Length, cut to it."""
    out = []
    for path in sorted(RFC4475_DIR.glob("*.dat")):
        data = path.read_bytes()
        head, sep, body = data.partition(b"\r\n\r\n")
        length = content_length(head)
        if not sep or isinstance(length, str) or length > len(body):
            continue
        out.append((path.name, head + sep + body[:length]))
    return out


STREAM_MESSAGES = rfc4475_stream_messages()


def options(n: int, body: bytes = b"") -> bytes:
    return (
        f"OPTIONS sip:ping@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK{n}\r\n"
        f"Call-ID: c{n}\r\nCSeq: {n} OPTIONS\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def feed_chunks(framer: StreamFramer, data: bytes, cuts: list[int]) -> list[FrameEvent]:
    events: list[FrameEvent] = []
    previous = 0
    for cut in [*sorted(cuts), len(data)]:
        events += framer.feed(data[previous:cut])
        previous = cut
    return events


def test_rfc4475_messages_frame_and_most_are_kept() -> None:
    # Every file except those whose Content-Length is absent, negative, duplicated or too large.
    names = {name for name, _ in STREAM_MESSAGES}
    assert {"clerr.dat", "ncl.dat", "mcl01.dat", "inv2543.dat"}.isdisjoint(names)
    assert len(names) >= 40


@pytest.mark.parametrize(("name", "message"), STREAM_MESSAGES, ids=[n for n, _ in STREAM_MESSAGES])
def test_every_message_byte_by_byte(name: str, message: bytes) -> None:
    framer = StreamFramer()
    events: list[FrameEvent] = []
    for i in range(len(message)):
        events += framer.feed(message[i : i + 1])
    assert events == [FramedMessage(message)]
    assert framer.buffered == 0


@pytest.mark.parametrize(("name", "message"), STREAM_MESSAGES, ids=[n for n, _ in STREAM_MESSAGES])
def test_every_message_in_random_chunkings(name: str, message: bytes) -> None:
    rng = random.Random(name)
    for _ in range(20):
        framer = StreamFramer()
        cuts = rng.sample(range(1, len(message)), k=min(len(message) - 1, rng.randint(1, 12)))
        assert feed_chunks(framer, message, cuts) == [FramedMessage(message)]


def test_all_messages_pipelined_in_one_stream_with_keepalives() -> None:
    messages = [m for _, m in STREAM_MESSAGES]
    stream = b"\r\n\r\n".join(messages) + b"\r\n"
    framer = StreamFramer()
    events = framer.feed(stream)
    expected: list[FrameEvent] = []
    for i, message in enumerate(messages):
        if i:
            expected.append(KeepAlivePing())
        expected.append(FramedMessage(message))
    assert events == expected
    # The trailing single CRLF is half of a possible ping: kept until the next octets decide.
    assert framer.buffered == 2
    assert framer.feed(options(1)) == [FramedMessage(options(1))]
    assert framer.buffered == 0


@given(st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=6), st.data())
def test_pipelined_chunked_property(kinds: list[int], data: st.DataObject) -> None:
    """Any mix of messages, pings and pongs, cut anywhere, frames to the same events."""
    stream = b""
    expected: list[FrameEvent] = []
    for n, kind in enumerate(kinds):
        if kind == 0:
            stream += b"\r\n\r\n"
            expected.append(KeepAlivePing())
        elif kind == 1:
            stream += b"\r\n"  # a pong: consumed silently
        msg = options(n, b"x" * (n * 7) + b"\r\n\r\n" if kind == 3 else b"")
        stream += msg
        expected.append(FramedMessage(msg))
    cuts = data.draw(st.lists(st.integers(min_value=1, max_value=len(stream) - 1), max_size=10))
    assert feed_chunks(StreamFramer(), stream, cuts) == expected


def test_double_crlf_alone_is_a_ping_and_single_crlf_waits() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n") == []
    assert framer.feed(b"\r\n") == [KeepAlivePing()]
    assert framer.feed(b"\r\n\r\n\r\n\r\n") == [KeepAlivePing(), KeepAlivePing()]
    assert framer.buffered == 0


def test_pong_before_a_message_is_ignored() -> None:
    assert StreamFramer().feed(b"\r\n" + options(5)) == [FramedMessage(options(5))]


def test_body_containing_blank_lines_is_framed_by_content_length() -> None:
    body = b"\r\n\r\n\x00binary\r\n\r\n"
    assert StreamFramer().feed(options(1, body) + options(2)) == [
        FramedMessage(options(1, body)),
        FramedMessage(options(2)),
    ]


def test_compact_and_spaced_content_length_names() -> None:
    assert content_length(b"OPTIONS x SIP/2.0\r\nl: 12") == 12
    assert content_length(b"OPTIONS x SIP/2.0\r\nContent-Length   : 150") == 150
    assert content_length(b"OPTIONS x SIP/2.0\r\nContent-Length:\r\n  7") == 7
    assert content_length(b"OPTIONS x SIP/2.0\r\nContent-Length: 7\r\nl: 7") == 7


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (b"", "Content-Length required on stream transports"),
        (b"Content-Length: -999\r\n", "Invalid Content-Length"),
        (b"Content-Length: 99999999999999999999\r\n", "Invalid Content-Length"),
        (b"Content-Length: 13\r\nContent-Length: 5\r\n", "Conflicting Content-Length values"),
    ],
)
def test_bad_content_length_is_a_400_framing_error_and_stops(header: bytes, reason: str) -> None:
    head = b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: x\r\n" + header
    framer = StreamFramer()
    events = framer.feed(head + b"\r\nbody" + options(1))
    assert events == [FramingError(400, reason, head.removesuffix(b"\r\n"))]
    assert framer.failed
    assert framer.feed(options(2)) == []


def test_oversized_message_and_header_section_are_513() -> None:
    framer = StreamFramer(max_message=1000, max_header_section=500)
    [error] = framer.feed(options(1, b"x" * 2000))
    assert isinstance(error, FramingError)
    assert (error.status, error.reason) == (513, "Message Too Large")
    framer = StreamFramer(max_message=1000, max_header_section=500)
    [error] = framer.feed(b"OPTIONS sip:a@b SIP/2.0\r\nX: " + b"y" * 600)
    assert isinstance(error, FramingError)
    assert (error.status, error.head) == (513, b"")


def test_whole_message_at_the_limit_is_accepted() -> None:
    message = options(1, b"z" * 100)
    assert StreamFramer(max_message=len(message)).feed(message) == [FramedMessage(message)]


def test_the_framer_keeps_its_place_between_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """A message trickled in one octet at a time has its header section parsed once, not once
    per read (a slow sender must not cost quadratic work)."""
    calls: list[bytes] = []
    original = framing.content_length

    def counting(head: bytes) -> int | str:
        calls.append(head)
        return original(head)

    monkeypatch.setattr(framing, "content_length", counting)
    body = b"v=0\r\n" * 200
    message = (b"MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n"
               + b"X-Pad: " + b"x" * 3000 + b"\r\n"
               + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    framer = StreamFramer()
    events = [event for i in range(len(message)) for event in framer.feed(message[i : i + 1])]
    assert events == [FramedMessage(message)]
    assert len(calls) == 1 and framer.buffered == 0
