"""HTTP Digest authentication for SIP (RFC 3261 §22, RFC 7616, RFC 8760): the maths, no I/O.

What lives here:

* ``Digest`` challenges and credentials (RFC 7616 §3.3-§3.4) on top of the codec's
  ``auth-param`` grammar (:mod:`gateway.sip.headers`);
* the hashes for ``MD5``, ``MD5-sess``, ``SHA-256`` and ``SHA-256-sess`` (RFC 8760 §2) with
  ``qop=auth``; HA1 is precomputable so stores need not keep passwords;
* stateless nonces (:class:`NonceIssuer`): a timestamp, randomness and an HMAC, so any process
  holding the key can check a nonce it did not issue, and an expired one is answered with
  ``stale=true`` (RFC 7616 §3.3) rather than as a wrong password;
* nonce-count replay protection (:class:`NonceCountTracker`, RFC 7616 §3.4: "the server
  ... SHOULD check the nc value to detect replays"), a sliding window per nonce so requests
  reordered by UDP still pass, bounded in memory;
* the client side (:func:`authorization_for`) used by outbound registration and tests.

Time is passed in (``now``, seconds since the epoch): nonces are checked by every gateway
process sharing the key, so they carry wall-clock time, the only clock those processes share.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import secrets
import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from gateway.sip import entropy
from gateway.sip.headers import AuthHeader, parse_auth


class DigestError(ValueError):
    """A Digest header that cannot be parsed or is incomplete: answered with ``status``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class Algorithm(enum.Enum):
    """Digest algorithms (RFC 7616 §3.2, RFC 8760 §2). SHA-512-256 is not offered by SIP UAs."""

    MD5 = "MD5"
    MD5_SESS = "MD5-sess"
    SHA256 = "SHA-256"
    SHA256_SESS = "SHA-256-sess"

    @property
    def session(self) -> bool:
        return self.value.endswith("-sess")

    @property
    def base(self) -> Algorithm:
        """The algorithm whose HA1 a ``-sess`` variant builds on (RFC 7616 §3.4.2)."""
        return _BASE[self]

    def digest(self, data: str) -> str:
        """``H(data)``: lower-case hex of the hash of the UTF-8 bytes (RFC 7616 §3.4.1)."""
        return _HASH[self](data.encode("utf-8"), usedforsecurity=False).hexdigest()

    @classmethod
    def parse(cls, text: str | None) -> Algorithm:
        """The algorithm named by a header; absent means MD5 (RFC 7616 §3.3). Case-insensitive."""
        if text is None:
            return cls.MD5
        alg = _BY_NAME.get(text.lower())
        if alg is None:
            raise DigestError(f"unsupported digest algorithm {text!r}", status=401)
        return alg


# Looked up on every authenticated request: plain dictionaries, built once.
_BASE = {
    Algorithm.MD5: Algorithm.MD5, Algorithm.MD5_SESS: Algorithm.MD5,
    Algorithm.SHA256: Algorithm.SHA256, Algorithm.SHA256_SESS: Algorithm.SHA256,
}  # fmt: skip
_HASH = {alg: hashlib.md5 if base is Algorithm.MD5 else hashlib.sha256 for alg, base in _BASE.items()}
_BY_NAME = {alg.value.lower(): alg for alg in Algorithm}


def compute_ha1(algorithm: Algorithm, username: str, realm: str, password: str) -> str:
    """``H(username ":" realm ":" password)`` for the base algorithm; store this, not the password."""
    return algorithm.base.digest(f"{username}:{realm}:{password}")


def compute_response(
    algorithm: Algorithm,
    ha1: str,
    *,
    nonce: str,
    method: str,
    uri: str,
    qop: str | None,
    nc: str | None = None,
    cnonce: str | None = None,
) -> str:
    """The ``response`` value (RFC 7616 §3.4.1; RFC 2069 form when ``qop`` is absent).

    ``ha1`` is the plain HA1 of the base algorithm; the ``-sess`` step is applied here.
    """
    if algorithm.session:
        if cnonce is None:
            raise DigestError(f"{algorithm.value} needs a cnonce")
        ha1 = algorithm.digest(f"{ha1}:{nonce}:{cnonce}")
    ha2 = algorithm.digest(f"{method}:{uri}")
    if qop is None:
        return algorithm.digest(f"{ha1}:{nonce}:{ha2}")
    if qop != "auth":
        raise DigestError(f"unsupported qop {qop!r}", status=401)
    if nc is None or cnonce is None:
        raise DigestError("qop=auth needs nc and cnonce")
    return algorithm.digest(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


# --- header values ----------------------------------------------------------------------------

# Parameters written as quoted strings (RFC 7616 §3.3, §3.4; RFC 3261 §25.1). ``qop`` is a quoted
# list in a challenge but a bare token in credentials, hence two sets.
_QUOTED_IN_CHALLENGE = frozenset({"realm", "nonce", "opaque", "domain", "qop"})
_QUOTED_IN_CREDENTIALS = frozenset({"username", "realm", "nonce", "uri", "response", "cnonce", "opaque"})


def parse_digest(value: str | AuthHeader, what: str = "Authorization") -> dict[str, str]:
    """Parameters of a ``Digest`` header (names lower-cased, values unquoted).

    Text is parsed with the codec's grammar (:func:`gateway.sip.headers.parse_auth`, raising
    SipParseError 400); a scheme other than Digest is a :class:`DigestError`.
    """
    header = parse_auth(value.strip(), what) if isinstance(value, str) else value
    if not header.is_digest:
        raise DigestError(f"{what} scheme {header.scheme!r} is not Digest")
    return header.params


def render_digest(params: dict[str, str], quoted: frozenset[str]) -> str:
    """A ``Digest`` header value, quoting the parameters named in ``quoted``."""
    return str(AuthHeader("Digest", params, quoted & params.keys()))


@dataclass(frozen=True, slots=True)
class Challenge:
    """A ``WWW-Authenticate`` / ``Proxy-Authenticate`` Digest challenge."""

    realm: str
    nonce: str
    algorithm: Algorithm = Algorithm.MD5
    qop: tuple[str, ...] = ("auth",)
    stale: bool = False
    opaque: str | None = None

    def render(self) -> str:
        params = {"realm": self.realm, "nonce": self.nonce}
        if self.opaque is not None:
            params["opaque"] = self.opaque
        params["algorithm"] = self.algorithm.value
        if self.qop:
            params["qop"] = ",".join(self.qop)
        if self.stale:
            params["stale"] = "true"
        return render_digest(params, _QUOTED_IN_CHALLENGE)

    @classmethod
    def parse(cls, value: str | AuthHeader) -> Challenge:
        params = parse_digest(value, "WWW-Authenticate")
        try:
            realm, nonce = params["realm"], params["nonce"]
        except KeyError as exc:
            raise DigestError(f"challenge lacks {exc.args[0]!r}") from exc
        qop = tuple(q.strip() for q in params.get("qop", "").split(",") if q.strip())
        return cls(
            realm=realm,
            nonce=nonce,
            algorithm=Algorithm.parse(params.get("algorithm")),
            qop=qop,
            stale=params.get("stale", "").lower() == "true",
            opaque=params.get("opaque"),
        )


@dataclass(frozen=True, slots=True)
class Credentials:
    """An ``Authorization`` / ``Proxy-Authorization`` Digest answer."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: Algorithm = Algorithm.MD5
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None
    opaque: str | None = None

    @property
    def nc_value(self) -> int:
        """The nonce count as a number (8 hex digits, RFC 7616 §3.4)."""
        if self.nc is None:
            return 0
        return int(self.nc, 16)

    def render(self) -> str:
        params = {"username": self.username, "realm": self.realm, "nonce": self.nonce, "uri": self.uri,
                  "response": self.response, "algorithm": self.algorithm.value}
        if self.opaque is not None:
            params["opaque"] = self.opaque
        if self.qop is not None and self.nc is not None and self.cnonce is not None:
            params.update(qop=self.qop, nc=self.nc, cnonce=self.cnonce)
        return render_digest(params, _QUOTED_IN_CREDENTIALS)

    @classmethod
    def parse(cls, value: str | AuthHeader) -> Credentials:
        params = parse_digest(value)
        missing = [k for k in ("username", "realm", "nonce", "uri", "response") if k not in params]
        if missing:
            raise DigestError(f"credentials lack {', '.join(missing)}")
        qop = params.get("qop")
        nc = params.get("nc")
        cnonce = params.get("cnonce")
        if qop is not None:
            if nc is None or cnonce is None:
                raise DigestError("qop given without nc and cnonce")
            if len(nc) != 8 or any(c not in "0123456789abcdefABCDEF" for c in nc):
                raise DigestError(f"nc {nc!r} is not 8 hex digits")
        return cls(
            username=params["username"],
            realm=params["realm"],
            nonce=params["nonce"],
            uri=params["uri"],
            response=params["response"],
            algorithm=Algorithm.parse(params.get("algorithm")),
            qop=qop,
            nc=nc,
            cnonce=cnonce,
            opaque=params.get("opaque"),
        )


# --- stateless nonces -------------------------------------------------------------------------


class NonceState(enum.Enum):
    VALID = "valid"
    STALE = "stale"  # ours, but expired: answer with stale=true (RFC 7616 §3.3)
    INVALID = "invalid"  # not ours (forged, another key, garbled)


_NONCE_HEAD = struct.Struct(">Q")  # issue time in milliseconds since the epoch
_NONCE_RANDOM = 8
_NONCE_MAC = 16


class NonceIssuer:
    """Issues and checks stateless nonces: ``b64url(time_ms | random | HMAC-SHA256(key)[:16])``.

    Nothing is stored per nonce, so any gateway process sharing ``key`` accepts the nonces of
    the others and a restart does not force every device to re-authenticate. ``realm`` is bound
    into the MAC so a nonce of one realm is not accepted in another. ``skew`` tolerates clock
    differences between processes for nonces that appear to come from the future.
    """

    def __init__(
        self,
        key: bytes,
        lifetime: float = 300.0,
        *,
        skew: float = 5.0,
        random: Callable[[int], bytes] = entropy.token_bytes,
    ) -> None:
        if len(key) < 16:
            raise ValueError("nonce key must be at least 16 bytes")
        self._key = key
        self.lifetime = lifetime
        self._skew = skew
        self._random = random

    def _mac(self, head: bytes, realm: str) -> bytes:
        # hmac.digest: the one-shot C implementation of hmac.new(...).digest() (same bytes).
        return hmac.digest(self._key, head + realm.encode("utf-8"), "sha256")[:_NONCE_MAC]

    def issue(self, now: float, realm: str) -> str:
        head = _NONCE_HEAD.pack(int(now * 1000)) + self._random(_NONCE_RANDOM)
        return base64.urlsafe_b64encode(head + self._mac(head, realm)).decode("ascii").rstrip("=")

    def issued_at(self, nonce: str) -> float | None:
        """Issue time (seconds) encoded in a well-formed nonce; None if it is not one of ours in shape."""
        raw = self._decode(nonce)
        return None if raw is None else _NONCE_HEAD.unpack_from(raw)[0] / 1000

    @staticmethod
    def _decode(nonce: str) -> bytes | None:
        size = _NONCE_HEAD.size + _NONCE_RANDOM + _NONCE_MAC
        if len(nonce) > 64:
            return None
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except (ValueError, TypeError):
            return None
        return raw if len(raw) == size else None

    def check(self, nonce: str, now: float, realm: str) -> NonceState:
        return self.verify(nonce, now, realm)[0]

    def verify(self, nonce: str, now: float, realm: str) -> tuple[NonceState, float | None]:
        """:meth:`check` and :meth:`issued_at` from one decoding of ``nonce``."""
        raw = self._decode(nonce)
        if raw is None:
            return NonceState.INVALID, None
        head, mac = raw[: -_NONCE_MAC], raw[-_NONCE_MAC:]
        issued = _NONCE_HEAD.unpack_from(head)[0] / 1000
        if not hmac.compare_digest(mac, self._mac(head, realm)):
            return NonceState.INVALID, issued
        if issued > now + self._skew:
            return NonceState.INVALID, issued
        if now - issued > self.lifetime:
            return NonceState.STALE, issued
        return NonceState.VALID, issued


class NonceCountTracker:
    """Nonce-count replay detection (RFC 7616 §3.4) with a sliding window per nonce.

    A (nonce, nc) pair is accepted once. Counts up to ``window - 1`` below the highest seen are
    still accepted once, because UDP may reorder a device's requests. Memory is bounded by
    ``capacity``: when an unexpired entry must be evicted, nonces issued at or before it are from
    then on refused (``floor``), so eviction never reopens a replay.
    """

    def __init__(self, lifetime: float, capacity: int = 100_000, window: int = 64) -> None:
        self._lifetime = lifetime
        self._capacity = capacity
        self._window = window
        # nonce -> (issued, highest nc, bitmap of seen counts below highest; bit 0 = highest)
        self._entries: OrderedDict[str, tuple[float, int, int]] = OrderedDict()
        self._floor = float("-inf")

    def __len__(self) -> int:
        return len(self._entries)

    def accept(self, nonce: str, nc: int, issued: float, now: float) -> bool:
        """Record ``nc`` for ``nonce``; False if it was seen before, too old, or zero."""
        self._expire(now)
        if nc <= 0 or issued <= self._floor:
            return False
        entry = self._entries.get(nonce)
        if entry is None:
            if len(self._entries) >= self._capacity:
                _, (old_issued, _, _) = self._entries.popitem(last=False)
                self._floor = max(self._floor, old_issued)
                if issued <= self._floor:
                    return False
            self._entries[nonce] = (issued, nc, 1)
            return True
        _, highest, seen = entry
        if nc > highest:
            shift = nc - highest
            seen = ((seen << shift) | 1) & ((1 << self._window) - 1) if shift < self._window else 1
            self._entries[nonce] = (issued, nc, seen)
            return True
        offset = highest - nc
        if offset >= self._window or seen & (1 << offset):
            return False
        self._entries[nonce] = (issued, highest, seen | (1 << offset))
        return True

    def _expire(self, now: float) -> None:
        # Entries are kept in first-use order, which follows issue order closely enough: stop at
        # the first live one (a later expired one goes on a following call).
        while self._entries:
            nonce, (issued, _, _) = next(iter(self._entries.items()))
            if now - issued <= self._lifetime:
                return
            del self._entries[nonce]


# --- the client side --------------------------------------------------------------------------


def authorization_for(
    challenge: Challenge,
    *,
    username: str,
    password: str,
    method: str,
    uri: str,
    nc: int = 1,
    cnonce: str | None = None,
) -> Credentials:
    """Answer ``challenge`` (a UAC building ``Authorization``, RFC 3261 §22.2)."""
    ha1 = compute_ha1(challenge.algorithm, username, challenge.realm, password)
    qop = "auth" if "auth" in challenge.qop else None
    if qop is None and challenge.qop:
        raise DigestError(f"no supported qop in {challenge.qop!r}", status=401)
    nc_text = f"{nc:08x}" if qop else None
    cnonce_value = (cnonce or secrets.token_hex(8)) if qop or challenge.algorithm.session else None
    response = compute_response(
        challenge.algorithm, ha1, nonce=challenge.nonce, method=method, uri=uri,
        qop=qop, nc=nc_text, cnonce=cnonce_value,
    )
    return Credentials(
        username=username, realm=challenge.realm, nonce=challenge.nonce, uri=uri, response=response,
        algorithm=challenge.algorithm, qop=qop, nc=nc_text, cnonce=cnonce_value, opaque=challenge.opaque,
    )
