"""Sans-I/O SIP core (RFC 3261): codec, framing, transactions, dialogs, digest maths.

Nothing here does I/O or reads a clock: callers feed bytes and ``now`` and get back events,
bytes to send and the next timer deadline.
"""
