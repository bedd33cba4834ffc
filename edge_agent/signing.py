"""Signed control messages: what operations publish on ``edge/<site>/desired`` and ``cmd``.

Only the operations side may reconfigure a box, so every control message is signed with the
operations Ed25519 key (RFC 8032) and the box holds the matching public key(s). The envelope
signs the exact bytes of the inner document, so no JSON canonicalisation is needed::

    {"v": 1, "payload": "<base64url of the inner JSON>", "sig": "<base64url Ed25519 signature>"}

The inner document binds the message to one site, one channel and one moment::

    {"site": "acme-sh-01", "channel": "desired" | "cmd", "seq": 1733600000123456,
     "issued": 1733600000.1, "expires": 1733600300.1, "body": {...}}

``seq`` only moves forward per site and channel (the signer uses microseconds since the epoch,
so one operations side needs no shared counter); the box persists the highest it accepted, so a
captured message cannot be replayed, even after a reboot. ``expires`` bounds how long a message
stays usable: a box offline for longer than that ignores what was pushed meanwhile rather than
applying a stale change. ``issued`` too far in the future (beyond ``max_skew_s``) is refused: a
signer with a wrong clock would otherwise burn sequence numbers far ahead.

Pure code: the caller passes ``now``; no I/O except :func:`load_public_keys` and
:func:`load_private_key`, which read PEM files (``openssl genpkey -algorithm ed25519``).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ENVELOPE_VERSION = 1
CHANNELS = ("desired", "cmd")


class Refusal(StrEnum):
    """Why a control message was refused (the ``reason`` of a ``control_refused`` event)."""

    MALFORMED = "malformed"
    UNSIGNED = "unsigned"
    BAD_SIGNATURE = "bad_signature"
    WRONG_SITE = "wrong_site"
    WRONG_CHANNEL = "wrong_channel"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    REPLAYED = "replayed"
    NO_KEY = "no_key"


class ControlRefusedError(Exception):
    def __init__(self, reason: Refusal, detail: str, seq: int | None = None) -> None:
        self.reason = reason
        self.detail = detail
        self.seq = seq
        super().__init__(f"{reason.value}: {detail}")


class KeyFileError(Exception):
    """A key file is missing or not an Ed25519 key of the expected kind."""


@dataclass(frozen=True, slots=True)
class Verified:
    site: str
    channel: str
    seq: int
    issued: float
    expires: float
    body: Any
    payload: bytes  # the signed bytes, to recognise a redelivery of the same message


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(
    key: Ed25519PrivateKey,
    *,
    site: str,
    channel: str,
    body: Any,
    seq: int,
    now: float,
    lifetime_s: float,
) -> bytes:
    """The envelope bytes to publish."""
    if channel not in CHANNELS:
        raise ValueError(f"channel must be one of {CHANNELS}")
    if lifetime_s <= 0:
        raise ValueError("lifetime_s must be positive")
    inner = {
        "site": site,
        "channel": channel,
        "seq": seq,
        "issued": now,
        "expires": now + lifetime_s,
        "body": body,
    }
    payload = json.dumps(inner, separators=(",", ":")).encode()
    envelope = {"v": ENVELOPE_VERSION, "payload": _b64encode(payload), "sig": _b64encode(key.sign(payload))}
    return json.dumps(envelope).encode()


def verify(
    data: bytes,
    keys: Sequence[Ed25519PublicKey],
    *,
    site: str,
    channel: str,
    now: float,
    last_seq: int,
    max_skew_s: float,
) -> Verified:
    """Check an envelope; raise :class:`ControlRefusedError` naming the first reason to refuse.

    Order matters: nothing inside the payload is trusted before the signature is checked, so an
    attacker cannot make the box report (or act on) a site or sequence of their choosing.
    ``seq == last_seq`` is returned (not refused): the caller decides whether it is the same
    message delivered again (a retained ``desired`` after a reconnect) or a replay.
    """
    if not keys:
        raise ControlRefusedError(Refusal.NO_KEY, "no operations public key configured on this box")
    try:
        envelope = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ControlRefusedError(Refusal.MALFORMED, f"not JSON: {exc}") from exc
    if not isinstance(envelope, dict) or "sig" not in envelope or "payload" not in envelope:
        raise ControlRefusedError(Refusal.UNSIGNED, "not a signed envelope (no 'payload' and 'sig')")
    if envelope.get("v") != ENVELOPE_VERSION:
        version = envelope.get("v")
        raise ControlRefusedError(Refusal.MALFORMED, f"envelope version {version!r} is not supported")
    if not isinstance(envelope["payload"], str) or not isinstance(envelope["sig"], str):
        raise ControlRefusedError(Refusal.MALFORMED, "'payload' and 'sig' must be base64url strings")
    try:
        payload = _b64decode(envelope["payload"])
        signature = _b64decode(envelope["sig"])
    except (binascii.Error, ValueError) as exc:
        raise ControlRefusedError(Refusal.MALFORMED, f"bad base64url: {exc}") from exc
    for key in keys:
        try:
            key.verify(signature, payload)
            break
        except InvalidSignature:
            continue
    else:
        raise ControlRefusedError(Refusal.BAD_SIGNATURE, "signature does not verify with any configured key")
    try:
        inner = json.loads(payload)
        msg_site, msg_channel = inner["site"], inner["channel"]
        seq, issued, expires = inner["seq"], inner["issued"], inner["expires"]
        body = inner["body"]
        if not (isinstance(msg_site, str) and isinstance(msg_channel, str) and type(seq) is int):
            raise TypeError("site and channel must be strings, seq an integer")
        issued, expires = float(issued), float(expires)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise ControlRefusedError(Refusal.MALFORMED, f"signed document: {exc}") from exc
    if msg_site != site:
        raise ControlRefusedError(Refusal.WRONG_SITE, f"signed for site {msg_site!r}, this is {site!r}", seq)
    if msg_channel != channel:
        raise ControlRefusedError(
            Refusal.WRONG_CHANNEL, f"signed for channel {msg_channel!r}, received on {channel!r}", seq
        )
    if issued > now + max_skew_s:
        raise ControlRefusedError(
            Refusal.NOT_YET_VALID, f"issued {issued - now:.0f}s in the future (clock skew?)", seq
        )
    if expires < now:
        raise ControlRefusedError(Refusal.EXPIRED, f"expired {now - expires:.0f}s ago", seq)
    if seq < last_seq:
        raise ControlRefusedError(Refusal.REPLAYED, f"sequence {seq} is older than accepted {last_seq}", seq)
    return Verified(msg_site, msg_channel, seq, issued, expires, body, payload)


def load_public_keys(paths: Sequence[Path]) -> list[Ed25519PublicKey]:
    """Ed25519 public keys from PEM files (several, so a key can be rotated without a gap)."""
    keys: list[Ed25519PublicKey] = []
    for path in paths:
        try:
            key = serialization.load_pem_public_key(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise KeyFileError(f"{path}: cannot load a public key: {exc}") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise KeyFileError(f"{path}: not an Ed25519 public key")
        keys.append(key)
    return keys


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise KeyFileError(f"{path}: cannot load a private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: not an Ed25519 private key")
    return key
