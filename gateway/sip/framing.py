"""Stream framing for SIP over TCP (and later TLS): sans-I/O, fed arbitrary chunks.

A byte stream carries no message boundaries, so RFC 3261 §18.3 makes Content-Length mandatory
on stream transports: the header section ends at the first empty line, the body is exactly
Content-Length octets. :class:`StreamFramer` is fed whatever ``data_received`` got and returns
whole messages (as bytes, for the codec) plus keep-alive events:

* RFC 5626 §3.5.1 CRLF keep-alive: a double CRLF between messages is a *ping* (the transport
  answers with one CRLF, the *pong*); a single CRLF between messages is a pong (or the stray
  CRLF that RFC 3261 §7.5 tells us to ignore before a start line) and is consumed silently.
* Framing errors (no or bad Content-Length, several different Content-Length values, a header
  section or message over the limit) cannot be recovered from on a stream: the framer emits
  one :class:`FramingError` carrying the SIP status to answer with and the header bytes (so the
  caller may still build an answer), and then refuses further input; the caller closes the
  connection after answering when it can.

Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.sip.limits import MAX_HEADER_SECTION, MAX_MESSAGE_SIZE

_CRLF = b"\r\n"
_PING = b"\r\n\r\n"
_HEADER_END = b"\r\n\r\n"
# Header-name forms of Content-Length (RFC 3261 §7.3.3 compact form "l"), lower case.
_CONTENT_LENGTH_NAMES = (b"content-length", b"l")
# Longest decimal Content-Length we accept before calling the value absurd (RFC 4475 §3.1.2.4 spirit).
_MAX_LENGTH_DIGITS = 10


@dataclass(frozen=True, slots=True)
class FramedMessage:
    """One whole SIP message: start line, headers, empty line and exactly Content-Length octets."""

    data: bytes


@dataclass(frozen=True, slots=True)
class KeepAlivePing:
    """A double-CRLF ping (RFC 5626 §3.5.1); answer with :data:`PONG` on the same connection."""


@dataclass(frozen=True, slots=True)
class FramingError:
    """The stream cannot be framed any further.

    ``status`` and ``reason`` are the SIP answer (400 or 513); ``head`` is the start line and
    header section received so far (possibly empty), from which an answer can be addressed.
    """

    status: int
    reason: str
    head: bytes


FrameEvent = FramedMessage | KeepAlivePing | FramingError

PONG = _CRLF
"""The answer to a :class:`KeepAlivePing` (RFC 5626 §3.5.1: a single CRLF)."""


def content_length(head: bytes) -> int | str:
    """The Content-Length of a header section (start line included), or why it has none.

    Returns the value, or an error text for the Reason-Phrase. Folded header lines (RFC 3261
    §7.3.1) are honoured; several Content-Length fields are accepted only when they agree
    (RFC 4475 §3.3.9 shows why disagreeing ones leave the framing unknown).
    """
    found: int | None = None
    # Unfold continuation lines: a line starting with SP or HTAB belongs to the previous one.
    lines = head.split(_CRLF)
    fields: list[bytes] = []
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += b" " + line.strip()
        else:
            fields.append(line)
    for field in fields:
        name, colon, value = field.partition(b":")
        if not colon or name.strip().lower() not in _CONTENT_LENGTH_NAMES:
            continue
        text = value.strip()
        if not text.isdigit() or len(text) > _MAX_LENGTH_DIGITS:
            return "Invalid Content-Length"
        length = int(text)
        if found is not None and found != length:
            return "Conflicting Content-Length values"
        found = length
    if found is None:
        return "Content-Length required on stream transports"
    return found


class StreamFramer:
    """Cuts a SIP byte stream into messages; see the module docstring for the rules.

    The framer keeps its place between chunks: a header section still incomplete is not
    searched again from its start on every read (only the octets after what was searched,
    with three of overlap for a terminator split between reads), and once a header section is
    complete its Content-Length is parsed once and the framer waits for the body's octets.
    A peer trickling a large message in small pieces thus costs linear time, not quadratic.
    """

    __slots__ = ("_buffer", "_failed", "_searched", "_total", "max_header_section", "max_message")

    def __init__(
        self, max_message: int = MAX_MESSAGE_SIZE, max_header_section: int = MAX_HEADER_SECTION
    ) -> None:
        self.max_message = max_message
        self.max_header_section = min(max_header_section, max_message)
        self._buffer = bytearray()
        self._failed = False
        # Of the message at the start of the buffer: octets already searched for the end of the
        # header section, and its whole length once that section was parsed (None before).
        self._searched = 0
        self._total: int | None = None

    @property
    def buffered(self) -> int:
        """Octets received but not yet part of a whole message."""
        return len(self._buffer)

    @property
    def failed(self) -> bool:
        """True once a :class:`FramingError` was emitted; further input is ignored."""
        return self._failed

    def feed(self, data: bytes) -> list[FrameEvent]:
        """Add received octets; return every event they complete, in stream order."""
        if self._failed:
            return []
        buffer = self._buffer
        buffer += data
        events: list[FrameEvent] = []
        start = 0
        size = len(buffer)
        while start < size:
            total = self._total
            if total is not None:  # header section parsed on an earlier read: wait for the body
                if size - start < total:
                    break
                events.append(FramedMessage(bytes(buffer[start : start + total])))
                start += total
                self._total, self._searched = None, 0
                continue
            # Between messages: CRLF keep-alives (RFC 5626 §3.5.1) and stray CRLFs (RFC 3261 §7.5).
            if not self._searched and (buffer[start] == 0x0D or buffer[start] == 0x0A):
                if buffer.startswith(_PING, start):
                    events.append(KeepAlivePing())
                    start += 4
                    continue
                if buffer.startswith(_CRLF, start):
                    if size - start < 4 and _PING.startswith(bytes(buffer[start:])):
                        break  # half a ping or a pong: the next octets decide
                    start += 2  # a pong, consumed silently
                    continue
                if buffer[start] == 0x0D and size - start == 1:
                    break
                start += 1  # a bare CR or LF between messages: ignore it like a stray CRLF
                continue
            end = buffer.find(_HEADER_END, start + self._searched)
            if end < 0:
                if size - start > self.max_header_section:
                    events.append(self._fail(513, "Header Section Too Large", b""))
                    start = size
                    break
                # Resume three octets back: the terminator may be split between two reads.
                self._searched = max(0, size - start - 3)
                break
            head_end = end + 4
            if head_end - start > self.max_header_section:
                events.append(self._fail(513, "Header Section Too Large", bytes(buffer[start:end])))
                start = size
                break
            head = bytes(buffer[start:end])
            length = content_length(head)
            if isinstance(length, str):
                events.append(self._fail(400, length, head))
                start = size
                break
            if head_end - start + length > self.max_message:
                events.append(self._fail(513, "Message Too Large", head))
                start = size
                break
            self._total, self._searched = head_end - start + length, 0  # the loop takes it from here
        if start:
            del buffer[:start]
        return events

    def _fail(self, status: int, reason: str, head: bytes) -> FramingError:
        self._failed = True
        self._buffer.clear()
        self._total, self._searched = None, 0
        return FramingError(status, reason, head)
