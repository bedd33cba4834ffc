"""Proxy authentication of the requests a registering trunk's lines send (RFC 3261 §22.3).

A line is a customer's number, and a call it places costs the customer money: its source
address alone proves nothing (a UDP source is trivially forged, and the registered address of a
line that has gone quiet is known to whoever saw its REGISTER). So an initial INVITE (REFER,
MESSAGE, SUBSCRIBE alike) whose caller is a line of a registering trunk is answered 407 with a
``Proxy-Authenticate`` challenge per configured algorithm and accepted only with
``Proxy-Authorization`` credentials that own that very line (the authenticated user must be the
calling line; a device credential owns every line of its device). The trunk's ``invite_auth``
says when: ``always`` (default), ``off_net`` (only calls that leave the group), ``never``.

CANCEL and ACK are never challenged (RFC 3261 §22.1: they cannot be resubmitted with
credentials), nor are in-dialog requests (the dialog was set up by an authenticated INVITE).

The Digest checks are the registrar's (:class:`gateway.registrar.digest.DigestVerifier`: same
realm, nonces, nonce-count replay store, failure observer). Without a verifier (a composition
that forgot it) a line that must authenticate is refused 403: fail closed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.registrar.digest import AS_PROXY, DigestVerifier, NonceStoreError
from gateway.registrar.trunks import RegisteringTrunk
from gateway.sip.address import Address
from gateway.sip.auth import DigestError
from gateway.sip.errors import SipParseError
from gateway.sip.message import Request, Response, make_response

log = logging.getLogger(__name__)

RETRY_AFTER_STORE_FAILURE = 5  # seconds, when the nonce-count store cannot answer


@dataclass(frozen=True, slots=True)
class AuthRefusal:
    """How to answer a request that did not authenticate: ``status``, ``reason`` and headers
    (the 407's ``Proxy-Authenticate`` challenges, a 503's ``Retry-After``)."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()

    def answer(self, request: Request, to_tag: str) -> Response:
        response = make_response(request, self.status, self.reason, to_tag=to_tag)
        for name, value in self.headers:
            response.headers.add(name, value)
        return response


class LineAuth:
    """Checks that a request claiming to come from a line carries that line's credentials."""

    def __init__(self, verifier: DigestVerifier | None, clock: Callable[[], float] = time.time) -> None:
        self._verifier = verifier
        self._clock = clock

    @staticmethod
    def required(line: RegisteringTrunk, *, off_net: bool) -> bool:
        """Must a request of ``line`` authenticate, for a call that leaves the group or not?"""
        return line.invite_auth == "always" or (line.invite_auth == "off_net" and off_net)

    def has_credentials(self, request: Request) -> bool:
        """Does ``request`` carry Digest credentials for our realm (RFC 3261 §22.4)?"""
        verifier = self._verifier
        return verifier is not None and any(
            h.is_digest and h.realm == verifier.realm for h in request.proxy_authorization
        )

    async def check(self, request: Request, source: Address, number: str) -> AuthRefusal | None:
        """None when ``request`` authenticates as a credential owning ``number``; else the answer."""
        verifier = self._verifier
        if verifier is None:
            return AuthRefusal(403, "Authentication Not Available")
        now = self._clock()
        try:
            verdict = await verifier.authenticate(request, request.proxy_authorization, source, now, AS_PROXY)
        except (DigestError, SipParseError) as exc:
            return AuthRefusal(exc.status, str(exc))
        except NonceStoreError:
            log.exception("nonce-count store failed on %s from %s", request.method, source.hostport())
            return AuthRefusal(503, "Authentication Service Unavailable",
                               (("Retry-After", str(RETRY_AFTER_STORE_FAILURE)),))
        credential = verdict.credential
        if credential is None:
            challenges = verifier.challenges(now, stale=verdict.stale)
            return AuthRefusal(407, "Proxy Authentication Required",
                               tuple(("Proxy-Authenticate", value) for value in challenges))
        if number not in credential.numbers:
            log.info("%s from %s as %s: credential %s is not that line's", request.method,
                     source.hostport(), number, credential.username)
            return AuthRefusal(403, "Credentials Are Not The Calling Line's")
        return None
