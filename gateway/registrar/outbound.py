"""Outbound registration of the gateway at carrier destinations (RFC 3261 §10.2).

For each carrier destination with a ``register`` block, an :class:`OutboundRegistrar`
keeps the gateway registered:

* REGISTER with the same Call-ID and an increasing CSeq for the whole life of the registration
  (§10.2.4); a 401 / 407 is answered once per attempt with Digest credentials (§22.2, RFC 8760
  algorithms via :mod:`gateway.sip.auth`); a 423 takes the peer's ``Min-Expires`` (§10.2.8);
* refresh before expiry: at a random point between 75 % and 85 % of the granted interval, so a
  fleet registered together does not refresh together;
* on failure (no answer, error response, wrong credentials) retry with exponential back-off
  and jitter, capped (:class:`Backoff`): never a retry storm against a carrier in trouble.

State (``REGISTERED`` / ``BACKING_OFF`` ...) and the attempt times are readable for the
operations API, metrics and tests. The REGISTER goes out through a :class:`RequestSender` (the
gateway's transaction layer): it runs one client transaction and returns the final response,
or raises :class:`NoResponseError` after Timer F or a transport error.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from gateway.registrar.trunks import CarrierDestination, OutboundRegistration
from gateway.sip.address import Address
from gateway.sip.auth import Challenge, DigestError, authorization_for
from gateway.sip.errors import SipParseError
from gateway.sip.headers import Headers
from gateway.sip.message import Request, Response

log = logging.getLogger(__name__)


class NoResponseError(Exception):
    """A client transaction ended without a final response (Timer F, transport error)."""


@runtime_checkable
class RequestSender(Protocol):
    """Runs one client transaction (the gateway's transaction layer)."""

    def local_address(self, transport: str) -> Address:
        """The address our Via sent-by names for ``transport`` (where responses come back)."""
        ...

    def contact_address(self, transport: str) -> Address:
        """The address our Contact names for ``transport`` (where new requests should come)."""
        ...

    async def send_request(self, request: Request, destination: Address) -> Response:
        """Send ``request`` (top Via without branch: the layer adds one); the final response."""
        ...


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential back-off with jitter: ``min(cap, base * 2**(n-1))`` scaled into
    ``[1 - jitter, 1]`` at random, for the n-th consecutive failure."""

    base: float = 2.0
    cap: float = 300.0
    jitter: float = 0.5

    def delay(self, failures: int, rand: float) -> float:
        raw: float = min(self.cap, self.base * 2.0 ** min(max(failures, 1) - 1, 30))
        return raw * (1.0 - self.jitter * rand)


def refresh_delay(granted: int, rand: float) -> float:
    """When to refresh a registration granted for ``granted`` seconds: 75-85 % of the way."""
    return granted * (0.75 + 0.10 * rand)


class State(enum.Enum):
    IDLE = "idle"
    REGISTERING = "registering"
    REGISTERED = "registered"
    BACKING_OFF = "backing-off"
    STOPPED = "stopped"


class OutboundRegistrar:
    """Keeps one registration alive; ``await run()`` until cancelled (see the module docstring)."""

    def __init__(
        self,
        trunk: str,
        destination: CarrierDestination,
        sender: RequestSender,
        *,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if destination.registration is None:
            raise ValueError(f"destination {destination.host}:{destination.port} does not register")
        self.trunk = trunk
        self.registration: OutboundRegistration = destination.registration
        transport = destination.transport or "udp"
        self.destination = Address(transport, destination.host, destination.port)
        self._sender = sender
        self._backoff = backoff or Backoff()
        self._rng = rng or random.SystemRandom()
        self._clock = clock
        self.state = State.IDLE
        self.failures = 0
        self.expires_at: float | None = None
        self.attempts: deque[float] = deque(maxlen=100)  # clock times of REGISTER transactions
        self._call_id = f"{uuid.uuid4().hex}@gateway"
        self._tag = uuid.uuid4().hex[:12]
        self._cseq = 0
        self._expires = self.registration.expires
        self._nc = 0
        host = destination.host
        self._aor = self.registration.aor or f"sip:{self.registration.username}@{host}"
        self._uri = f"sip:{Address(transport, host, destination.port).hostport()}"

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    async def run(self) -> None:
        try:
            while True:
                delay = await self._attempt()
                await asyncio.sleep(delay)
        finally:
            self.state = State.STOPPED

    async def _attempt(self) -> float:
        """One registration attempt; returns how long to wait before the next."""
        self.state = State.REGISTERING
        try:
            granted = await self._register()
        except (NoResponseError, OSError, SipParseError, DigestError) as exc:
            return self._failed(str(exc) or type(exc).__name__)
        except Exception:  # a bug must not end the registration for good: log, back off, retry
            log.exception("outbound registration %s failed unexpectedly", self.trunk)
            return self._failed("internal error")
        if granted is None:
            return self._failed("refused")
        self.failures = 0
        self.state = State.REGISTERED
        self.expires_at = self._now() + granted
        return refresh_delay(granted, self._rng.random())

    def _failed(self, why: str) -> float:
        self.failures += 1
        self.state = State.BACKING_OFF
        delay = self._backoff.delay(self.failures, self._rng.random())
        log.warning("outbound registration %s at %s failed (%s, %d in a row); retry in %.1fs",
                    self.trunk, self.destination.hostport(), why, self.failures, delay)
        return delay

    async def _register(self) -> int | None:
        """REGISTER, answering one challenge and one 423; the granted seconds or None."""
        authorization: tuple[str, str] | None = None  # (header name, value)
        challenged = interval_raised = False
        while True:
            response = await self._send(authorization)
            status = response.status
            if 200 <= status < 300:
                return self._granted(response)
            if status in (401, 407) and not challenged:
                challenged = True
                authorization = self._answer(response, status)
                continue
            if status == 423 and not interval_raised and response.min_expires:
                interval_raised = True
                self._expires = max(self._expires, response.min_expires)
                continue
            log.info("outbound registration %s: %d %s", self.trunk, status, response.reason)
            return None

    def _answer(self, response: Response, status: int) -> tuple[str, str]:
        header = response.www_authenticate if status == 401 else response.proxy_authenticate
        if not header:
            raise DigestError(f"{status} without a challenge")
        challenge = Challenge.parse(header[0])  # the peer's most preferred (RFC 8760 §2.4)
        self._nc += 1
        creds = authorization_for(
            challenge, username=self.registration.username, password=self.registration.password,
            method="REGISTER", uri=self._uri, nc=self._nc,
        )
        return ("Authorization" if status == 401 else "Proxy-Authorization", creds.render())

    async def _send(self, authorization: tuple[str, str] | None) -> Response:
        self._cseq += 1
        local = self._sender.local_address(self.destination.transport)
        headers = Headers()
        headers.add("Via", f"SIP/2.0/{local.transport.upper()} {local.hostport()};rport")
        headers.add("Max-Forwards", "70")
        headers.add("From", f"<{self._aor}>;tag={self._tag}")
        headers.add("To", f"<{self._aor}>")
        headers.add("Call-ID", self._call_id)
        headers.add("CSeq", f"{self._cseq} REGISTER")
        user = self.registration.username
        contact = self._sender.contact_address(self.destination.transport)
        headers.add("Contact", f"<sip:{user}@{contact.hostport()};transport={contact.transport}>")
        headers.add("Expires", str(self._expires))
        if authorization is not None:
            headers.add(*authorization)
        self.attempts.append(self._now())
        return await self._sender.send_request(Request("REGISTER", self._uri, headers), self.destination)

    def _granted(self, response: Response) -> int:
        """Seconds granted: our Contact's expires, else Expires, else what we asked (§10.2.4)."""
        for contact in response.contacts:
            if contact.expires is not None and self.registration.username in contact.uri:
                return max(1, contact.expires)
        return max(1, response.expires if response.expires is not None else self._expires)
