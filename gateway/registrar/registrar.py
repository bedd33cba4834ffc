"""The registrar (RFC 3261 §10.3) with Digest authentication (RFC 7616 / RFC 8760).

:meth:`Registrar.handle` answers one REGISTER: ``handle(request, source) -> Response``. In the
order of RFC 3261 §10.3:

1. The Request-URI names the domain; this gateway is the registrar for whatever domain its
   devices use, so any is accepted.
2. ``Require`` with an option we do not support: 420 with ``Unsupported`` (§8.2.2.3).
3. Authentication (§22, RFC 7616): no credentials for our realm → 401 with one challenge per
   configured algorithm (RFC 8760 §2.4, preferred first). A wrong password and an unknown user
   get the same fresh 401 (no enumeration) and count as a failure of the source host
   (:class:`AuthFailures`). A correct digest on an expired or foreign nonce, or a replayed
   nonce count, gets 401 ``stale=true`` so the device retries without asking for a password.
   ``qop=auth`` is required: without it there is no nonce count, hence no replay protection.
4. Authorisation (step 6 of §10.3): the authenticated credential must own the To number,
   else 403. A To URI that is not sip/sips is 400 (RFC 4475 §3.3.8 "unksm2") — checked first.
5. Contacts (step 7): ``*`` only alone and with ``Expires: 0`` (else 400); each contact's expiry
   from its ``expires`` parameter, else the ``Expires`` header, else the default; a non-zero
   expiry below ``min_expires`` is 423 with ``Min-Expires`` (§10.3 step 7, §21.4.17), above
   ``max_expires`` it is shortened. Call-ID / CSeq ordering and the all-or-nothing commit are the
   location store's (:func:`gateway.registrar.location.merge`); an out-of-order REGISTER fails
   with 500 (the RFC says only that "the request fails").
6. 200 OK lists every current binding with its remaining ``expires`` and a ``Date`` (step 8).

NAT (RFC 3581): each binding keeps the transport address the REGISTER came from, so requests to
the number go back through the device's NAT pinhole; devices keep it open with CRLF or OPTIONS
keep-alives, which the gateway answers.

Time: the registrar reads a wall clock (``clock``, default :func:`time.time`) because nonces and
bindings are shared between gateway processes and kept across restarts; tests pass a fake one.
"""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from gateway.accounts.store import AccountGate, Subscriber
from gateway.registrar.location import (
    Binding,
    ContactChange,
    LocationStore,
    LocationStoreError,
    OutOfOrderError,
    RegisterUpdate,
)
from gateway.registrar.settings import RegistrarConfig
from gateway.registrar.trunks import Credential, TrunkTable
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
from gateway.sip.errors import SipParseError
from gateway.sip.headers import NameAddr
from gateway.sip.message import Request, Response, make_response
from gateway.sip.uri import SipUri, parse_uri

log = logging.getLogger(__name__)

SUPPORTED_OPTIONS: frozenset[str] = frozenset()  # we implement none of path / outbound / gruu
_NONCE_SLOT = "NONCE-SLOT-8c1f"
RETRY_AFTER_STORE_FAILURE = 5  # seconds, on a 500 when the location store is unreachable
_LOGGED_FAILURE_COUNTS = frozenset({1, 10, 100, 1000, 10_000, 100_000})


class AuthFailures:
    """Failed authentication attempts per source host, over a sliding ``window`` (seconds).

    The hook the security work builds on (blocking, alarms): ``record`` on each failure,
    ``count`` for a host now, ``top`` for the operations API. Bounded: at most ``capacity``
    hosts are tracked, the least recently failing forgotten first.
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


@dataclass(frozen=True, slots=True)
class _Outcome:
    """Result of checking credentials: the credential on success, or how to challenge."""

    credential: Credential | None
    stale: bool = False


def binding_key(uri: SipUri, instance: str | None, reg_id: int | None) -> str:
    """Which stored binding a Contact refers to.

    With ``+sip.instance`` the device's identity is the instance (RFC 5627 §3.2, RFC 5626 §6), so
    a device whose NAT mapping changed updates its binding instead of adding one. Otherwise the
    Contact URI compared as RFC 3261 §19.1.4 says for the parts that matter here (scheme, user,
    case-insensitive host, port, transport).
    """
    if instance is not None:
        return f"instance:{instance}:{reg_id if reg_id is not None else ''}"
    transport = (uri.params.get("transport") or "").lower()
    return f"{uri.scheme}:{uri.user or ''}@{uri.host.lower()}:{uri.port or ''};{transport}"


class Registrar:
    """Answers REGISTER requests; see the module docstring."""

    def __init__(
        self,
        config: RegistrarConfig,
        trunks: TrunkTable,
        store: LocationStore,
        nonce_key: bytes,
        *,
        clock: Callable[[], float] = time.time,
        accounts: AccountGate | None = None,
        auth_observer: AuthFailureObserver | None = None,
        on_authenticated: Callable[[str, float], None] | None = None,
    ) -> None:
        self.config = config
        self.on_authenticated = on_authenticated
        """Told of each source host that proved a password (the edge guard raises its budget)."""
        self.auth_observer: AuthFailureObserver = auth_observer or NoAuthFailureObserver()
        """Told of every failed digest check; a user it reports locked fails like a wrong password."""
        self.trunks = trunks
        self.store = store
        self.clock = clock
        self.accounts = accounts
        """Account states: a pre-cancelled or cancelled number may not register (403)."""
        self.nonces = NonceIssuer(nonce_key, config.nonce_lifetime)
        self.replays = NonceCountTracker(config.nonce_lifetime)
        self.failures = AuthFailures()
        self.algorithms = tuple(Algorithm.parse(a) for a in config.algorithms)
        # Unknown users are checked against a fake HA1 so they cost the same as known ones.
        self._decoy_key = hmac.new(nonce_key, b"decoy", hashlib.sha256).digest()
        self._ha1_cache: dict[tuple[str, str, Algorithm], str] = {}
        self._date: tuple[int, str] = (-1, "")
        # Challenges rendered once around a placeholder nonce (our nonces need no quoting):
        # the 401 is half of all REGISTER traffic.
        self._templates: dict[bool, list[tuple[str, str]]] = {}
        for stale in (False, True):
            self._templates[stale] = []
            for algorithm in self.algorithms:
                challenge = Challenge(realm=config.realm, nonce=_NONCE_SLOT, algorithm=algorithm, stale=stale)
                text = challenge.render()
                before, _, after = text.partition(_NONCE_SLOT)
                self._templates[stale].append((before, after))

    def handle(self, request: Request, source: Address) -> Response | Awaitable[Response]:
        """Answer a REGISTER. Challenges and refusals are answered at once (no task: half of all
        REGISTERs are the first, unauthenticated one); only a binding update awaits the store."""
        now = self.clock()
        try:
            result = self._check(request, source, now)
        except SipParseError as exc:
            return make_response(request, exc.status, exc.reason)
        except DigestError as exc:
            return make_response(request, exc.status, str(exc))
        if isinstance(result, Response):
            return result
        return self._commit(request, result, now)

    def _check(self, request: Request, source: Address, now: float) -> RegisterUpdate | Response:
        """Steps 2-7 up to the store: the update to apply, or the response that ends it here."""
        unsupported = [opt for opt in request.require if opt.lower() not in SUPPORTED_OPTIONS]
        if unsupported:
            response = make_response(request, 420, "Bad Extension")
            response.headers.add("Unsupported", ", ".join(unsupported))
            return response
        to_uri = parse_uri(request.to.uri)
        if not isinstance(to_uri, SipUri):
            return make_response(request, 400, "To is not a sip or sips URI")
        aor = to_uri.user
        outcome = self._authenticate(request, source, now)
        if outcome.credential is None:
            return self._challenge(request, now, stale=outcome.stale)
        credential = outcome.credential
        if aor is None or aor not in credential.numbers:
            log.info("REGISTER %s from %s: credential %s does not own it", aor, source.hostport(),
                     credential.username)
            return make_response(request, 403, "Forbidden")
        return self._update(request, aor, source, credential)

    async def _commit(self, request: Request, update: RegisterUpdate, now: float) -> Response:
        adds = any(change.expires > 0 for change in update.changes)
        if self.accounts is not None and adds:  # removing a binding is always allowed
            trunk = self.trunks.trunks.get(update.trunk) if update.trunk is not None else None
            refusal = await self.accounts.check_registration(
                Subscriber(update.aor, trunk.group if trunk is not None else None)
            )
            if refusal is not None:
                log.info("REGISTER %s refused: %s", update.aor, refusal.reason)
                return make_response(request, refusal.status, refusal.reason)
        try:
            if update.changes or update.remove_all:
                bindings = await self.store.update(update, now)
            else:  # no Contact: a query of the current bindings (RFC 3261 §10.2.3)
                bindings = await self.store.lookup(update.aor, now)
        except OutOfOrderError:
            return make_response(request, 500, "Out-of-order REGISTER")
        except LocationStoreError:
            log.exception("location store failed on REGISTER %s", update.aor)
            response = make_response(request, 500, "Location Service Unavailable")
            response.headers.add("Retry-After", str(RETRY_AFTER_STORE_FAILURE))
            return response
        return self._ok(request, bindings, now)

    # -- authentication ---------------------------------------------------------------------------
    def _authenticate(self, request: Request, source: Address, now: float) -> _Outcome:
        creds = None
        for header in request.authorization:
            # Credentials for another realm or scheme are someone else's (RFC 3261 §22.4).
            if header.is_digest and header.realm == self.config.realm:
                try:
                    creds = Credentials.parse(header)
                except DigestError as exc:
                    if exc.status != 401:
                        raise  # malformed: 400
                    # An algorithm we do not know: answered like a wrong password, with a challenge.
                    self.auth_observer.auth_failed(source.host, "", now)
                    self.failures.record(source.host, now)
                    return _Outcome(None)
                break
        if creds is None:
            return _Outcome(None)
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
        if not (offered and hmac.compare_digest(expected, creds.response.lower())) or credential is None:
            self.auth_observer.auth_failed(source.host, creds.username, now)
            failures = self.failures.record(source.host, now)
            if failures in _LOGGED_FAILURE_COUNTS:  # a password-guessing run must not flood the log
                log.warning("REGISTER auth failed for %r from %s (%d failures from that host lately)",
                            creds.username, source.hostport(), failures)
            return _Outcome(None)
        if self.auth_observer.user_locked(creds.username, now):
            # Locked after a guessing run: the same 401 as a wrong password, so no oracle.
            self.auth_observer.auth_failed(source.host, creds.username, now)
            return _Outcome(None)
        # The password is right: anything wrong with the nonce is staleness (RFC 7616 §3.3).
        state, issued = self.nonces.verify(creds.nonce, now, self.config.realm)
        if state is not NonceState.VALID or issued is None:
            return _Outcome(None, stale=True)
        if not self.replays.accept(creds.nonce, creds.nc_value, issued, now):
            log.info("REGISTER nonce count replay for %r from %s", creds.username, source.hostport())
            return _Outcome(None, stale=True)
        if self.on_authenticated is not None:
            self.on_authenticated(source.host, now)
        return _Outcome(credential)

    def clear_credential_cache(self) -> None:
        """Forget precomputed HA1 values (after the trunk file changed)."""
        self._ha1_cache.clear()

    def _ha1(self, credential: Credential, algorithm: Algorithm) -> str:
        key = (credential.username, credential.password, algorithm.base)
        ha1 = self._ha1_cache.get(key)
        if ha1 is None:
            ha1 = self._ha1_cache[key] = compute_ha1(
                algorithm, credential.username, self.config.realm, credential.password
            )
        return ha1

    def _challenge(self, request: Request, now: float, *, stale: bool) -> Response:
        response = make_response(request, 401, "Unauthorized")
        nonce = self.nonces.issue(now, self.config.realm)
        for before, after in self._templates[stale]:
            response.headers.add("WWW-Authenticate", before + nonce + after)
        return response

    # -- contacts -----------------------------------------------------------------------------------
    def _update(
        self, request: Request, aor: str, source: Address, credential: Credential
    ) -> RegisterUpdate | Response:
        config = self.config
        contacts = request.contacts
        header_expires = request.expires
        base = RegisterUpdate(
            aor=aor, call_id=request.call_id, cseq=request.cseq.seq, source=source,
            max_contacts=config.max_contacts, user_agent=request.headers.get("User-Agent"),
            trunk=credential.trunk.name,
        )
        if any(c.is_wildcard for c in contacts):
            # RFC 3261 §10.3 step 6: "*" only alone and with Expires: 0.
            if len(contacts) != 1 or header_expires != 0:
                return make_response(request, 400, "Contact * needs Expires: 0 and no other Contact")
            return replace(base, remove_all=True)
        changes: list[ContactChange] = []
        for contact in contacts:
            uri = parse_uri(contact.uri)
            if not isinstance(uri, SipUri):
                return make_response(request, 400, "Contact is not a sip or sips URI")
            expires = contact.expires
            if expires is None:
                expires = header_expires if header_expires is not None else config.default_expires
            if 0 < expires < config.min_expires:
                response = make_response(request, 423, "Interval Too Brief")
                response.headers.add("Min-Expires", str(config.min_expires))
                return response
            expires = min(expires, config.max_expires)
            instance = contact.params.get("+sip.instance")
            changes.append(ContactChange(
                key=binding_key(uri, contact.instance, contact.reg_id),
                contact=contact.uri, expires=expires, q=contact.q, instance=instance, reg_id=contact.reg_id,
            ))
        return replace(base, changes=tuple(changes))

    def _ok(self, request: Request, bindings: list[Binding], now: float) -> Response:
        response = make_response(request, 200, "OK")
        for b in bindings:
            contact = NameAddr(b.contact, params={"expires": str(b.expires_in(now))})
            if b.q is not None:
                contact.params["q"] = f"{b.q:g}"
            if b.instance is not None:
                contact.params["+sip.instance"] = b.instance
            if b.reg_id is not None:
                contact.params["reg-id"] = str(b.reg_id)
            response.headers.add("Contact", str(contact))
        response.headers.add("Date", self._date_header(now))
        return response

    def _date_header(self, now: float) -> str:
        """The Date value for ``now`` (RFC 3261 §20.17: whole seconds), formatted once a second."""
        second = int(now)
        if self._date[0] != second:
            self._date = (second, email.utils.formatdate(second, usegmt=True))
        return self._date[1]

