"""Which worker process owns a SIP datagram (pure: bytes in, a worker index out).

Several worker processes share one UDP address (see :mod:`gateway.workers`); the kernel hands
each datagram to any of them. The worker that receives a datagram asks :func:`datagram_owner`
which worker holds the transaction or dialog it belongs to and hands it over when that is
another one (:mod:`gateway.transport.handoff`). The rules, in order:

1. A **response** whose top Via branch carries a worker marker (:func:`branch_marker`: every
   branch a worker's transaction layer draws, ``z9hG4bK-w07-...``) goes to that worker: the
   response to a client transaction returns to the worker that sent the request (RFC 3261
   §17.1.3 matches responses by that branch), whatever Call-ID the request had.
2. Any message whose **Call-ID** a worker has claimed (the dialogs it creates toward a peer:
   the B-leg INVITE of a call, whose Call-ID call control draws) goes to that worker: the
   requests the callee sends inside that dialog (BYE, re-INVITE, UPDATE) carry it (§12.2).
3. Anything else (new requests from peers, their retransmissions, the CANCEL of an INVITE and
   the ACK of its failure, in-dialog requests of dialogs the peer created) goes to
   ``crc32(Call-ID) mod workers``: every message of one Call-ID reaches the same worker, so
   §9.2 CANCEL matching and §17.2.3 ACK matching see the INVITE's transaction.

The scan is a few byte searches on the header block, not a parse: the receiving worker pays
microseconds for a datagram it hands on, and a message too broken to find a Call-ID in is kept
by the worker that received it (which answers 400 or drops it, as it would have anyway).
Header names are matched without regard to case and in their compact forms (``i``, ``v``, RFC
3261 §7.3.3); CRC-32 is used because it is stable across processes (Python's ``hash`` is salted
per process) and cheap.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping

MARKER = "-w"
"""After the magic cookie in our branches: ``z9hG4bK-wNN-`` names worker NN (two digits)."""

_COOKIE = b"z9hg4bk"  # matched on the lower-cased header block
_BRANCH_MARK = _COOKIE + MARKER.encode()
_CALL_ID = re.compile(rb"\n(?:call-id|i)[ \t]*:[ \t]*([^\r\n]*)")
_VIA = re.compile(rb"\n(?:via|v)[ \t]*:([^\r\n]*)")
_BRANCH = re.compile(rb";[ \t]*branch[ \t]*=[ \t]*([^;,\s]*)")


def branch_marker(worker: int) -> str:
    """What follows ``z9hG4bK`` in the branches worker ``worker`` draws."""
    if not 0 <= worker <= 99:
        raise ValueError(f"worker index {worker} is not in 0..99")
    return f"{MARKER}{worker:02d}-"


def call_id_owner(call_id: bytes, workers: int) -> int:
    """Rule 3: the worker a Call-ID hashes to."""
    return zlib.crc32(call_id) % workers


def _head(data: bytes) -> bytes:
    end = data.find(b"\r\n\r\n")
    if end < 0:
        end = data.find(b"\n\n")
    return data if end < 0 else data[:end + 2]


def _branch_worker(lowered_head: bytes, workers: int) -> int | None:
    """Rule 1 on a lower-cased response head: the worker named in the top Via's branch."""
    via = _VIA.search(lowered_head)
    if via is None:
        return None
    # The first Via value of the field: a comma may list several (§7.3.1); ours is the first.
    branch = _BRANCH.search(via.group(1).split(b",", 1)[0])
    if branch is None:
        return None
    token = branch.group(1)
    if not token.startswith(_BRANCH_MARK):
        return None
    digits = token[len(_BRANCH_MARK):len(_BRANCH_MARK) + 2]
    if len(digits) != 2 or not digits.isdigit() or token[len(_BRANCH_MARK) + 2:len(_BRANCH_MARK) + 3] != b"-":
        return None
    worker = int(digits)
    return worker if worker < workers else None


def datagram_owner(data: bytes, workers: int, claimed: Mapping[bytes, int]) -> int | None:
    """The worker that owns ``data`` (rules 1-3 of the module docstring), or None when no
    Call-ID can be found (the receiving worker keeps it). ``claimed``: Call-ID -> worker."""
    head = _head(data)
    lowered = head.lower()
    if lowered.startswith(b"sip/"):
        worker = _branch_worker(lowered, workers)
        if worker is not None:
            return worker
    found = _CALL_ID.search(lowered)
    if found is None:
        return None
    call_id = head[found.start(1):found.end(1)].strip()
    if not call_id:
        return None
    owner = claimed.get(call_id)
    if owner is not None and owner < workers:
        return owner
    return call_id_owner(call_id, workers)
