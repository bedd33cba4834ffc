"""Digest verification of the gateway's users, shared by REGISTER and by requests that cost money.

The registrar challenges REGISTER with 401 / ``WWW-Authenticate`` (RFC 3261 §22.2); call
control challenges an initial INVITE (REFER, MESSAGE, SUBSCRIBE alike) from a registering
trunk's line with 407 / ``Proxy-Authenticate`` (§22.3), the gateway acting as the proxy in front
of the carrier. Both check credentials the same way, here (:class:`DigestVerifier`):

* only credentials for our realm count (§22.4); an algorithm we did not offer, no
  ``qop=auth`` (no nonce count, so no replay protection), a wrong password, an unknown user
  (checked against a decoy HA1 so it costs the same) and a user the ban machinery locked all
  get the same fresh challenge (no user enumeration, no lock oracle) and are reported to the
  :class:`~gateway.security.auth_events.AuthFailureObserver` and counted per source
  (:class:`AuthFailures`);
* the right password on an expired or foreign nonce, or on a nonce count already seen, gets
  ``stale=true`` (RFC 7616 §3.3) so the device retries without asking its user; a replayed
  count is also reported as a failure;
* nonces are stateless (:class:`~gateway.sip.auth.NonceIssuer`, any worker checks any other's);
  nonce counts (RFC 7616 §3.4) are recorded in a :class:`NonceCounts` store: this process's
  memory, or Redis so a request captured on the wire cannot be replayed through another
  worker. A store error fails closed (:class:`NonceStoreError`: the caller answers 5xx, the
  request is not accepted).

Time (``now``) is wall-clock seconds, passed in: nonces carry it between processes.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, get_args

from redis.exceptions import RedisError

from gateway.plugins import Registry, needed_url
from gateway.redis_client import connect
from gateway.registrar.settings import StoreName
from gateway.registrar.trunks import Credential, TrunkLookup
from gateway.security.auth_events import AuthFailureObserver, NoAuthFailureObserver
from gateway.sip.address import Address
from gateway.sip.auth import (
    Algorithm,
    Challenge,
    Credentials,
    DigestError,
    NonceCountTracker,
    NonceIssuer,
    NonceState,
    compute_ha1,
    compute_response,
)
from gateway.sip.headers import AuthHeader
from gateway.sip.message import Request

log = logging.getLogger(__name__)

_NONCE_SLOT = "NONCE-SLOT-8c1f"
_LOGGED_FAILURE_COUNTS = frozenset({1, 10, 100, 1000, 10_000, 100_000})
NONCE_COUNT_PREFIX = "gw:auth:nc:"


class NonceStoreError(Exception):
    """The nonce-count store cannot answer: the request is refused (fail closed)."""


class AuthFailures:
    """Failed authentication attempts per source host, over a sliding ``window`` (seconds).

    ``record`` on each failure, ``count`` for a host now, ``top`` for the operations API.
    Bounded: at most ``capacity`` hosts are tracked, the least recently failing forgotten first.
    """

    def __init__(self, window: float = 300.0, capacity: int = 10_000) -> None:
        self._window = window
        self._capacity = capacity
        self._hosts: OrderedDict[str, list[float]] = OrderedDict()
        self.total = 0

    def record(self, host: str, now: float) -> int:
        """Count a failure of ``host``; returns its failures within the window."""
        self.total += 1
        times = [t for t in self._hosts.pop(host, []) if now - t < self._window]
        times.append(now)
        self._hosts[host] = times[-1000:]
        while len(self._hosts) > self._capacity:
            self._hosts.popitem(last=False)
        return len(times)

    def count(self, host: str, now: float) -> int:
        return sum(1 for t in self._hosts.get(host, ()) if now - t < self._window)

    def top(self, now: float, n: int = 20) -> list[tuple[str, int]]:
        counts = ((h, sum(1 for t in ts if now - t < self._window)) for h, ts in self._hosts.items())
        return sorted((c for c in counts if c[1]), key=lambda c: -c[1])[:n]


# --- nonce-count stores ------------------------------------------------------------------------


class NonceCounts(Protocol):
    """Records each (nonce, nc) once: True the first time, False for a replay.

    ``accept_now`` answers without waiting when the store can (memory), else None and the
    caller awaits ``accept`` (Redis): most REGISTERs and INVITEs then need no task.
    """

    name: str

    def accept_now(self, nonce: str, nc: int, issued: float, now: float) -> bool | None: ...

    async def accept(self, nonce: str, nc: int, issued: float, now: float) -> bool: ...

    async def close(self) -> None: ...


class MemoryNonceCounts:
    """This process's :class:`~gateway.sip.auth.NonceCountTracker` (one worker, or tests)."""

    name = "memory"

    def __init__(self, lifetime: float) -> None:
        self.tracker = NonceCountTracker(lifetime)

    def accept_now(self, nonce: str, nc: int, issued: float, now: float) -> bool:
        return self.tracker.accept(nonce, nc, issued, now)

    async def accept(self, nonce: str, nc: int, issued: float, now: float) -> bool:
        return self.tracker.accept(nonce, nc, issued, now)

    async def close(self) -> None:
        return None


class RedisNonceCounts:
    """Shared by every worker: one key per (nonce, nc), ``SET NX`` with the nonce's remaining
    lifetime, so a count is accepted once by the whole gateway and disappears with its nonce.
    Every (nonce, nc) pair is remembered, so reordered requests need no window. Any Redis
    error raises :class:`NonceStoreError` (fail closed)."""

    name = "redis"

    def __init__(self, url: str, lifetime: float) -> None:
        self._lifetime = lifetime
        self._client = connect(url)

    def accept_now(self, nonce: str, nc: int, issued: float, now: float) -> None:
        return None

    async def accept(self, nonce: str, nc: int, issued: float, now: float) -> bool:
        ttl_ms = int((issued + self._lifetime - now) * 1000) + 1000  # + skew between workers
        if nc <= 0 or ttl_ms <= 0:
            return False
        try:
            created = await self._client.set(f"{NONCE_COUNT_PREFIX}{nonce}:{nc:x}", b"1", nx=True, px=ttl_ms)
        except RedisError as exc:
            raise NonceStoreError(f"nonce-count store: {exc}") from exc
        return bool(created)

    async def close(self) -> None:
        await self._client.aclose()


@dataclass(frozen=True, slots=True)
class NonceCountsContext:
    """What a nonce-count store factory may need (:mod:`gateway.plugins`)."""

    redis_url: str | None
    lifetime: float


NONCE_COUNTS: Registry[NonceCountsContext, NonceCounts] = Registry(
    "nonce-count store", "registrar.nonce_count_store", names=get_args(StoreName)
)


@NONCE_COUNTS.register("memory")
def _memory_counts(context: NonceCountsContext) -> NonceCounts:
    return MemoryNonceCounts(context.lifetime)


@NONCE_COUNTS.register("redis", needs_redis=True)
def _redis_counts(context: NonceCountsContext) -> NonceCounts:
    return RedisNonceCounts(needed_url(context), context.lifetime)


# --- verification -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verdict:
    """Result of checking credentials.

    ``credential`` on success; otherwise the request is challenged again (``stale`` says how).
    ``pending``: (nonce, nc, issued) still to be recorded by an awaiting store
    (:meth:`DigestVerifier.settle`) before the success counts.
    """

    credential: Credential | None
    stale: bool = False
    pending: tuple[str, int, float] | None = None
    username: str | None = None
    """The user name the credentials claimed (reported on a replay found by :meth:`settle`)."""


@dataclass(frozen=True, slots=True)
class Kind:
    """REGISTER's (401) or a proxy's (407) side of Digest (RFC 3261 §22.2, §22.3)."""

    status: int
    reason: str
    challenge_header: str
    what: str  # in log lines


AS_REGISTRAR = Kind(401, "Unauthorized", "WWW-Authenticate", "REGISTER")
AS_PROXY = Kind(407, "Proxy Authentication Required", "Proxy-Authenticate", "proxy")


class DigestVerifier:
    """Checks Digest credentials against the trunk table; see the module docstring."""

    def __init__(
        self,
        realm: str,
        algorithms: Sequence[Algorithm],
        trunks: TrunkLookup,
        nonce_key: bytes,
        *,
        nonce_lifetime: float,
        counts: NonceCounts | None = None,
        observer: AuthFailureObserver | None = None,
    ) -> None:
        self.realm = realm
        self.algorithms = tuple(algorithms)
        self.trunks = trunks
        self.nonces = NonceIssuer(nonce_key, nonce_lifetime)
        self.counts: NonceCounts = counts or MemoryNonceCounts(nonce_lifetime)
        self.observer: AuthFailureObserver = observer or NoAuthFailureObserver()
        self.failures = AuthFailures()
        # Unknown users are checked against a fake HA1 so they cost the same as known ones.
        self._decoy_key = hmac.new(nonce_key, b"decoy", hashlib.sha256).digest()
        self._ha1_cache: dict[tuple[str, str, Algorithm], str] = {}
        # Challenges rendered once around a placeholder nonce (our nonces need no quoting).
        self._templates: dict[bool, list[tuple[str, str]]] = {}
        for stale in (False, True):
            self._templates[stale] = []
            for algorithm in self.algorithms:
                text = Challenge(realm=realm, nonce=_NONCE_SLOT, algorithm=algorithm, stale=stale).render()
                before, _, after = text.partition(_NONCE_SLOT)
                self._templates[stale].append((before, after))

    def challenges(self, now: float, *, stale: bool) -> list[str]:
        """Challenge values, one per configured algorithm (RFC 8760 §2.4), on one fresh nonce."""
        nonce = self.nonces.issue(now, self.realm)
        return [before + nonce + after for before, after in self._templates[stale]]

    def clear_cache(self) -> None:
        """Forget precomputed HA1 values (after the trunk file changed)."""
        self._ha1_cache.clear()

    def _ha1(self, credential: Credential, algorithm: Algorithm) -> str:
        key = (credential.username, credential.password, algorithm.base)
        ha1 = self._ha1_cache.get(key)
        if ha1 is None:
            ha1 = self._ha1_cache[key] = compute_ha1(algorithm, credential.username, self.realm,
                                                     credential.password)
        return ha1

    def _failed(self, kind: Kind, username: str, source: Address, now: float) -> None:
        failures = self.failures.record(source.host, now)
        self.observer.auth_failed(source.host, username, now)
        if failures in _LOGGED_FAILURE_COUNTS:  # a password-guessing run must not flood the log
            log.warning("%s auth failed for %r from %s (%d failures from that host lately)",
                        kind.what, username, source.hostport(), failures)

    def verify(
        self, request: Request, headers: Sequence[AuthHeader], source: Address, now: float, kind: Kind
    ) -> Verdict:
        """Check the credentials for our realm among ``headers`` (Authorization or
        Proxy-Authorization). Malformed credentials raise DigestError / SipParseError (400)."""
        creds = None
        for header in headers:
            # Credentials for another realm or scheme are someone else's (RFC 3261 §22.4).
            if header.is_digest and header.realm == self.realm:
                try:
                    creds = Credentials.parse(header)
                except DigestError as exc:
                    if exc.status != 401:
                        raise  # malformed: 400
                    # An algorithm we do not know: answered like a wrong password, with a challenge.
                    self._failed(kind, header.params.get("username", ""), source, now)
                    return Verdict(None)
                break
        if creds is None:
            return Verdict(None)
        credential = self.trunks.credential(creds.username)
        if credential is not None:
            ha1 = self._ha1(credential, creds.algorithm)
        else:
            ha1 = hmac.new(self._decoy_key, creds.username.encode(), hashlib.sha256).hexdigest()
        # Only what we offered counts: an algorithm not offered, or no qop=auth (no nonce count,
        # so no replay protection), is refused like a wrong password.
        offered = creds.algorithm in self.algorithms and creds.qop == "auth"
        expected = compute_response(
            creds.algorithm, ha1, nonce=creds.nonce, method=request.method, uri=creds.uri,
            qop="auth", nc=creds.nc or "00000000", cnonce=creds.cnonce or "",
        )
        right = offered and hmac.compare_digest(expected, creds.response.lower())
        # A locked user's right password is answered as a wrong one (no oracle).
        if not right or credential is None or self.observer.user_locked(creds.username, now):
            self._failed(kind, creds.username, source, now)
            return Verdict(None)
        # The password is right: anything wrong with the nonce is staleness (RFC 7616 §3.3).
        state, issued = self.nonces.verify(creds.nonce, now, self.realm)
        if state is not NonceState.VALID or issued is None:
            return Verdict(None, stale=True)
        accepted = self.counts.accept_now(creds.nonce, creds.nc_value, issued, now)
        if accepted is False:
            self._replayed(kind, creds.username, source, now)
            return Verdict(None, stale=True)
        if accepted:
            return Verdict(credential, username=creds.username)
        return Verdict(credential, pending=(creds.nonce, creds.nc_value, issued), username=creds.username)

    def _replayed(self, kind: Kind, username: str, source: Address, now: float) -> None:
        log.info("%s nonce count replay for %r from %s", kind.what, username, source.hostport())
        self._failed(kind, username, source, now)

    async def settle(self, verdict: Verdict, source: Address, now: float, kind: Kind) -> Verdict:
        """Record a pending nonce count in the store; a replay turns success into ``stale``.
        Raises :class:`NonceStoreError` when the store cannot answer."""
        if verdict.pending is None:
            return verdict
        nonce, nc, issued = verdict.pending
        if not await self.counts.accept(nonce, nc, issued, now):
            self._replayed(kind, verdict.username or "", source, now)
            return Verdict(None, stale=True)
        return Verdict(verdict.credential, username=verdict.username)

    async def authenticate(
        self, request: Request, headers: Sequence[AuthHeader], source: Address, now: float, kind: Kind
    ) -> Verdict:
        """:meth:`verify` then :meth:`settle`."""
        return await self.settle(self.verify(request, headers, source, now, kind), source, now, kind)

