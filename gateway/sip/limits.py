"""Hard limits of the SIP codec, each with the reason it exists.

They bound the work one message can cause (memory, CPU, Python big-int conversion) so a hostile
or broken peer cannot make the parser slow; values are generous for legitimate traffic (the
RFC 4475 ``longreq`` torture message fits easily).
"""

from __future__ import annotations

MAX_DATAGRAM_SIZE = 65_535
"""A UDP datagram carries at most 64 KiB (RFC 768 length field); nothing larger is one message."""

MAX_MESSAGE_SIZE = MAX_DATAGRAM_SIZE
"""Larger messages are refused with 513 Message Too Large (RFC 3261 §21.5.14); over TCP the
framer applies the same ceiling so a peer cannot make us buffer without bound."""

MAX_HEADER_SECTION = 32_768
"""Start line plus header fields. Real INVITEs are 1-3 KiB; 32 KiB leaves room for long Route
sets and identity headers while refusing header floods."""

MAX_LINE_LENGTH = 8_192
"""One (unfolded) header field. Longer lines are floods, not SIP (longreq.dat's longest is <1 KiB)."""

MAX_HEADER_COUNT = 256
"""Header fields per message; every field costs a list entry and a dictionary lookup."""

MAX_VIA_COUNT = 255
"""Max-Forwards never usefully exceeds 255 (RFC 3261 §20.22, RFC 4475 §3.1.2.4), so a message
with more Via entries than that has looped or is forged."""

MAX_LIST_ELEMENTS = 255
"""Comma-separated values in one header field (Contact, Route, Supported ...), same argument."""

MAX_PARAMS = 64
"""Parameters on one header value or URI; each is a dictionary entry."""

MAX_SCALAR_DIGITS = 32
"""Digits accepted in a number (CSeq, Content-Length, Expires ...). Enough to recognise and
report an overlarge value precisely (RFC 4475 scalar02/scalarlg) without converting kilobytes of
digits to an int (Python refuses past 4300 digits anyway)."""

MAX_CSEQ = 2**32 - 1
"""CSeq sequence numbers are 32-bit unsigned (RFC 3261 §8.1.1.5)."""

MAX_FORWARDS_LIMIT = 255
"""Largest meaningful Max-Forwards (RFC 4475 §3.1.2.4 treats larger values as overlarge)."""

MAX_DELTA_SECONDS = 2**32 - 1
"""Expires, Session-Expires and Contact expires are 32-bit (RFC 3261 §20.19, §25.1)."""

DEFAULT_EXPIRES = 3600
"""Registration interval used for a malformed or overlarge Expires (RFC 3261 §10.2.1.1,
RFC 4475 §3.1.2.4)."""
