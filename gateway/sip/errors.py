"""The codec's one error type: what was wrong, and what a server should answer.

A SIP parse failure is not a bug in the caller: it is an answer to send (RFC 3261 §8.2, §16.3)
or a message to drop and count. :class:`SipParseError` carries both decisions.
"""

from __future__ import annotations

import re


class SipParseError(ValueError):
    """A message (or one header field of it) is malformed.

    ``status`` is the response a server should send (400, 413, 505, 513 ...), ``reason`` says
    precisely what was wrong (one printable line; ``make_response`` escapes what a Reason-Phrase
    may not contain). A whole message that fails to parse but can still be answered raises the
    subclass :class:`gateway.sip.message.AnswerableParseError`, which carries the partial
    request; this class alone means the message cannot be answered (a broken response, or a
    request missing the fields a response copies): the caller drops it and counts it.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


# reason-phrase = *(reserved / unreserved / escaped / UTF8-NONASCII / UTF8-CONT / SP / HTAB)
_REASON_CHAR = r"[A-Za-z0-9;/?:@&=+$,\-_.!~*'() \t\x80-\ud7ff\ue000-\U0010ffff]|%[0-9A-Fa-f]{2}"
_REASON_RE = re.compile(f"(?:{_REASON_CHAR})*")
_REASON_CHAR_RE = re.compile(_REASON_CHAR)


def reason_phrase(text: str) -> str:
    """``text`` made a valid Reason-Phrase (RFC 3261 §25.1): other characters are %-escaped."""
    if _REASON_RE.fullmatch(text) is not None:
        return text
    out: list[str] = []
    pos = 0
    while pos < len(text):
        m = _REASON_CHAR_RE.match(text, pos)
        if m is not None:
            out.append(m.group(0))
            pos = m.end()
        else:
            out += [f"%{b:02X}" for b in text[pos].encode("utf-8", "surrogateescape")]
            pos += 1
    return "".join(out)


def describe(text: str, limit: int = 40) -> str:
    """``text`` quoted and cut short for an error reason: one printable line whatever the input."""
    shown = text if len(text) <= limit else text[:limit] + "..."
    # repr() escapes CR, LF, NUL and surrogates, so the result can go into a Reason-Phrase.
    return repr(shown)
