"""The registrar (RFC 3261 §10.3) with Digest authentication (RFC 7616 / RFC 8760).

:meth:`Registrar.handle` answers one REGISTER: ``handle(request, source) -> Response``. In the
order of RFC 3261 §10.3:

1. The Request-URI names the domain; this gateway is the registrar for whatever domain its
   devices use, so any is accepted.
2. ``Require`` with an option we do not support: 420 with ``Unsupported`` (§8.2.2.3).
3. Authentication (§22, RFC 7616): no credentials for our realm → 401 with one challenge per
   configured algorithm (RFC 8760 §2.4, preferred first). A wrong password and an unknown user
   get the same fresh 401 (no enumeration) and count as a failure of the source host
   (:class:`gateway.registrar.digest.AuthFailures`, and the
   :class:`~gateway.security.auth_events.AuthFailureObserver`: a locked user gets the same
   401). A correct digest on an expired or foreign nonce, or a replayed nonce count, gets
   401 ``stale=true`` so the device retries without asking for a password. Nonce counts are
   kept in memory or, shared by every worker, in Redis (:mod:`gateway.registrar.digest`).
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
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

from gateway.accounts.store import AccountGate, Subscriber
from gateway.registrar.digest import (
    AS_REGISTRAR,
    DigestVerifier,
    NonceCounts,
    NonceStoreError,
    Verdict,
)
from gateway.registrar.location import (
    Binding,
    ContactChange,
    LocationStore,
    LocationStoreError,
    OutOfOrderError,
    RegisterUpdate,
)
from gateway.registrar.settings import RegistrarConfig
from gateway.registrar.trunks import Credential, TrunkLookup
from gateway.security.auth_events import AuthFailureObserver
from gateway.sip.address import Address
from gateway.sip.auth import Algorithm, DigestError
from gateway.sip.errors import SipParseError
from gateway.sip.headers import NameAddr
from gateway.sip.message import Request, Response, make_response
from gateway.sip.uri import SipUri, parse_uri

log = logging.getLogger(__name__)

SUPPORTED_OPTIONS: frozenset[str] = frozenset()  # we implement none of path / outbound / gruu
RETRY_AFTER_STORE_FAILURE = 5  # seconds, on a 500 when the location store is unreachable


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
        trunks: TrunkLookup,
        store: LocationStore,
        nonce_key: bytes,
        *,
        clock: Callable[[], float] = time.time,
        accounts: AccountGate | None = None,
        counts: NonceCounts | None = None,
        observer: AuthFailureObserver | None = None,
        on_authenticated: Callable[[str, float], None] | None = None,
    ) -> None:
        self.config = config
        self.on_authenticated = on_authenticated
        """Told of each source host that proved a password (the edge guard raises its budget)."""
        self.store = store
        self.clock = clock
        self.accounts = accounts
        """Account states: a pre-cancelled or cancelled number may not register (403)."""
        self.verifier = DigestVerifier(
            config.realm, [Algorithm.parse(a) for a in config.algorithms], trunks, nonce_key,
            nonce_lifetime=config.nonce_lifetime, counts=counts, observer=observer,
        )
        self.nonces = self.verifier.nonces
        self.failures = self.verifier.failures
        self._date: tuple[int, str] = (-1, "")

    @property
    def trunks(self) -> TrunkLookup:
        return self.verifier.trunks

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
        update, verdict = result
        if verdict.pending is not None:
            return self._settle(request, update, verdict, now)
        return self._commit(request, update, now)

    async def _settle(
        self, request: Request, update: RegisterUpdate, verdict: Verdict, now: float
    ) -> Response:
        """Record the nonce count in the shared store (Redis) before the binding counts."""
        try:
            settled = await self.verifier.settle(verdict, update.source, now, AS_REGISTRAR)
        except NonceStoreError:
            log.exception("nonce-count store failed on REGISTER %s", update.aor)
            response = make_response(request, 500, "Authentication Service Unavailable")
            response.headers.add("Retry-After", str(RETRY_AFTER_STORE_FAILURE))
            return response
        if settled.credential is None:
            return self._challenge(request, now, stale=settled.stale)
        return await self._commit(request, update, now)

    def _check(
        self, request: Request, source: Address, now: float
    ) -> tuple[RegisterUpdate, Verdict] | Response:
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
        verdict = self.verifier.verify(request, request.authorization, source, now, AS_REGISTRAR)
        if verdict.credential is None:
            return self._challenge(request, now, stale=verdict.stale)
        credential = verdict.credential
        if aor is None or aor not in credential.numbers:
            log.info("REGISTER %s from %s: credential %s does not own it", aor, source.hostport(),
                     credential.username)
            return make_response(request, 403, "Forbidden")
        update = self._update(request, aor, source, credential)
        return update if isinstance(update, Response) else (update, verdict)

    async def _commit(self, request: Request, update: RegisterUpdate, now: float) -> Response:
        if self.on_authenticated is not None:  # the password and its nonce count were accepted
            self.on_authenticated(update.source.host, now)
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
    def clear_credential_cache(self) -> None:
        """Forget precomputed HA1 values (after the trunk file changed)."""
        self.verifier.clear_cache()

    def _challenge(self, request: Request, now: float, *, stale: bool) -> Response:
        response = make_response(request, 401, "Unauthorized")
        for value in self.verifier.challenges(now, stale=stale):
            response.headers.add("WWW-Authenticate", value)
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

