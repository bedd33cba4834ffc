"""Wiring of the registrar into the running gateway.

``await install(gateway, settings, trunks=holder, redis_url=...)`` opens the location store
chosen by the ``registrar`` section (``location_store``; by default ``redis`` when a Redis URL is
given, else ``memory``), agrees on the nonce key and serves REGISTER. The trunks come in a
:class:`~gateway.registrar.holder.TrunkHolder` built by the composition root (:mod:`gateway.node`),
which swaps tables on reload; the registrar reads through it. The returned
:class:`RegistrarService` is what the rest of the gateway uses: ``trunks`` (the holder: peer
identification, limits), :meth:`RegistrarService.contacts` (where to send a call for a number, DIDs of a
registering PBX included), :meth:`RegistrarService.destinations` (a carrier's destinations in
priority / weight order, those qualified down skipped), ``qualifier.snapshot()`` (up/down of
trunk destinations), ``registrar.failures`` (failed authentications per source) and
``registrar.verifier`` (Digest checks, shared with call control's proxy authentication;
nonce counts in memory or Redis).
``await service.close()`` after the gateway has stopped.

When the gateway originates requests (its UAC side, adapted by :class:`GatewaySender`),
``service.start(node=..., machine=...)`` — once the gateway listens — starts outbound carrier
registrations and OPTIONS qualify as tracked tasks. With Redis, each runs under a lease
(:mod:`gateway.cluster.lease`): outbound registration in one process of the cluster (the carrier
sees one registration, re-made by another process within ``registrar.lease_ttl`` when its
holder dies), qualify in one process per node, whose view the node's other workers follow.

The nonce key is shared by every gateway process so each accepts the nonces of the others:
``registrar.nonce_secret`` when configured, else a random key stored once in Redis
(``SET NX``), else (one process, no Redis) a random key of this process.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway import redis_client
from gateway.accounts.store import AccountGate
from gateway.cluster.lease import Leadership, Lease, RedisLease, SoleLease
from gateway.registrar.digest import NONCE_COUNTS, NonceCounts, NonceCountsContext
from gateway.registrar.holder import TrunkHolder
from gateway.registrar.location import (
    LOCATION_STORES,
    Binding,
    LocationContext,
    LocationStore,
    LocationStoreError,
)
from gateway.registrar.outbound import NoResponseError, OutboundRegistrar, RequestSender
from gateway.registrar.qualify import Qualifier, RedisHealthBoard
from gateway.registrar.registrar import Registrar
from gateway.registrar.settings import RegistrarConfig
from gateway.registrar.trunks import CarrierDestination, CarrierTrunk, PeerTrunk
from gateway.security.auth_events import AuthFailureObserver
from gateway.sip.address import Address
from gateway.sip.message import Request, Response

log = logging.getLogger(__name__)

NONCE_KEY_NAME = "gw:auth:nonce-key"
LEASE_PREFIX = "gw:lease:"
QUALIFY_BOARD_PREFIX = "gw:qualify:"


Handler = Callable[[Request, Address], Response | Awaitable[Response | None] | None]


class RequestHandlerHost(Protocol):
    """The part of :class:`gateway.app.Gateway` the registrar needs to serve REGISTER."""

    def add_request_handler(self, method: str, handler: Handler) -> None: ...


class ClientRequestHandle(Protocol):
    """What :meth:`gateway.app.Gateway.send_request` returns (a :class:`gateway.app.ClientRequest`)."""

    @property
    def synthesized(self) -> bool: ...

    async def wait(self) -> Response: ...


@runtime_checkable
class RequestOriginator(RequestHandlerHost, Protocol):
    """A gateway that also originates requests (its UAC side)."""

    def local_address(
        self, transport: str, destination: Address | None = None, *, shared: bool = False
    ) -> Address: ...

    def send_request(self, request: Request, destination: Address) -> ClientRequestHandle: ...


@dataclass(frozen=True, slots=True)
class GatewaySender:
    """The gateway's UAC side as a :class:`RequestSender`: a final response the gateway made up
    itself (408 after Timer F, 503 after a transport error) means no answer came, which outbound
    registration and qualify must tell apart from a real 408 / 503 of the peer."""

    gateway: RequestOriginator

    def local_address(self, transport: str) -> Address:
        return self.gateway.local_address(transport)

    def contact_address(self, transport: str) -> Address:
        return self.gateway.local_address(transport, shared=True)

    async def send_request(self, request: Request, destination: Address) -> Response:
        client = self.gateway.send_request(request, destination)
        response = await client.wait()
        if client.synthesized:
            where = destination.hostport()
            raise NoResponseError(f"{request.method} to {where}: no answer ({response.status})")
        return response


@dataclass
class RegistrarService:
    registrar: Registrar
    trunks: TrunkHolder
    store: LocationStore
    settings: RegistrarConfig
    qualifier: Qualifier | None = None
    outbound: list[OutboundRegistrar] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    sender: RequestSender | None = None
    """The gateway's UAC side, when it has one (outbound registration and qualify use it)."""
    redis_url: str | None = None
    leases: aioredis.Redis | None = None
    """The client of the role leases and the qualify board, when Redis is configured."""

    def start(self, *, node: str, machine: str) -> None:
        """Start outbound registrations and OPTIONS qualify. Call it once the gateway listens:
        our Via and Contact name the listening addresses. ``node``: this process's id (the
        holder's name in a lease); ``machine``: its node's id, shared by the node's workers
        (``node.machine``): the qualify role and view are per node."""
        if self.sender is None:
            log.info("this host originates no requests: no outbound registration or qualify")
            return
        start_client_side(self, self.sender, node=node, machine=machine)

    def destinations(
        self, carrier: CarrierTrunk, rng: random.Random | None = None
    ) -> list[CarrierDestination]:
        """The carrier's destinations to try, in order (see ``CarrierTrunk.ordered_destinations``)."""
        return carrier.ordered_destinations(self.is_up, rng or random.SystemRandom())

    def is_up(self, address: Address) -> bool:
        """Whether OPTIONS qualify lets calls go to ``address`` (always, when qualify is off)."""
        return self.qualifier is None or self.qualifier.is_up(address)

    async def contacts(self, number: str) -> list[Binding]:
        """Where to deliver a call for ``number``: its bindings, or those of its PBX pilot."""
        now = self.registrar.clock()
        bindings = await self.store.lookup(number, now)
        if not bindings:
            pilot = self.trunks.did_pilot(number)
            if pilot is not None:
                bindings = await self.store.lookup(pilot, now)
        return bindings

    async def close(self) -> None:
        """Stop outbound registration and qualify, then release the store."""
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()
        if self.leases is not None:
            await self.leases.aclose()
        await self.store.close()
        await self.registrar.verifier.counts.close()


def store_for(settings: RegistrarConfig, redis_url: str | None) -> LocationStore:
    """The location store the section names (see the module docstring)."""
    return LOCATION_STORES.create(settings.location_store, LocationContext(redis_url))


def counts_for(settings: RegistrarConfig, redis_url: str | None) -> NonceCounts:
    """The nonce-count store the section names (``registrar.nonce_count_store``)."""
    context = NonceCountsContext(redis_url, settings.nonce_lifetime)
    return NONCE_COUNTS.create(settings.nonce_count_store, context)


async def nonce_key(settings: RegistrarConfig, redis_url: str | None) -> bytes:
    """The key nonces are signed with (see the module docstring)."""
    if settings.nonce_secret is not None:
        return settings.nonce_secret.encode("utf-8")
    if redis_url:
        client = redis_client.connect(redis_url)
        try:
            await client.set(NONCE_KEY_NAME, secrets.token_hex(32), nx=True)
            shared = await client.get(NONCE_KEY_NAME)
            if isinstance(shared, bytes) and shared:
                return shared
        except RedisError as exc:
            log.warning("cannot share the nonce key through Redis (%s); using a key of this process", exc)
        finally:
            await client.aclose()
    return secrets.token_bytes(32)


async def install(
    gateway: RequestHandlerHost,
    settings: RegistrarConfig,
    *,
    trunks: TrunkHolder,
    redis_url: str | None = None,
    clock: Callable[[], float] = time.time,
    accounts: AccountGate | None = None,
    observer: AuthFailureObserver | None = None,
    on_authenticated: Callable[[str, float], None] | None = None,
) -> RegistrarService:
    """Build the registrar from its ``registrar`` section and serve REGISTER on ``gateway``.
    ``trunks``: the trunk holder (HA1 values cached from a table are forgotten when it swaps);
    ``redis_url``: shared stores when set. ``observer`` is told of every failed authentication
    (REGISTER and the proxy authentication of call control, which shares
    ``service.registrar.verifier``) and says which users are locked.
    """
    store = store_for(settings, redis_url)
    registrar = Registrar(
        settings, trunks, store, await nonce_key(settings, redis_url), clock=clock, accounts=accounts,
        counts=counts_for(settings, redis_url), observer=observer, on_authenticated=on_authenticated,
    )
    trunks.on_swap(lambda _table: registrar.clear_credential_cache())
    gateway.add_request_handler("REGISTER", registrar.handle)
    log.info("registrar: %d trunks, %d credentials, %s location store", len(trunks.trunks),
             len(trunks.table.credentials), store.name)
    service = RegistrarService(registrar, trunks, store, settings, redis_url=redis_url)
    if isinstance(gateway, RequestOriginator):
        service.sender = GatewaySender(gateway)
    return service


def start_client_side(service: RegistrarService, sender: RequestSender, *, node: str, machine: str) -> None:
    """Start outbound registrations and OPTIONS qualify of static peers and carrier destinations,
    as tracked tasks (cancelled by :meth:`RegistrarService.close`), each under its lease."""

    def track(coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        service.tasks.add(task)
        task.add_done_callback(service.tasks.discard)

    if service.redis_url:
        service.leases = redis_client.connect(service.redis_url, timeout=1.0)
    holder = node  # a worker started again after a crash takes its own role back at once

    def lease(key: str) -> Lease:
        if service.leases is None:
            return SoleLease(holder)
        return RedisLease(service.leases, f"{LEASE_PREFIX}{key}", holder)

    ttl = service.settings.lease_ttl
    targets: list[tuple[str, Address]] = []
    for trunk in service.trunks.trunks.values():
        if not trunk.enabled:
            continue
        if isinstance(trunk, CarrierTrunk):
            for d in trunk.destinations:
                address = Address(d.transport or trunk.transport, d.host, d.port)
                targets.append((f"{trunk.name}/{address.hostport()}", address))
                if d.registration is not None:
                    service.outbound.append(OutboundRegistrar(trunk.name, d, sender))
        elif isinstance(trunk, PeerTrunk):
            for m in trunk.match:
                if m.host is not None and m.port is not None:  # a network range has no one address
                    targets.append((trunk.name, Address(m.transport or trunk.transport, m.host, m.port)))
    if service.outbound:
        registering = Leadership(lease("outbound-registration"), "outbound registration", ttl,
                                 [registrar.run for registrar in service.outbound])
        track(registering.run())
    qualify = service.settings.qualify
    if qualify.enabled and (targets or qualify.contacts):
        qualifier = service.qualifier = Qualifier(sender, interval=qualify.interval,
                                                  failures_to_down=qualify.failures_to_down,
                                                  successes_to_up=qualify.successes_to_up)
        qualifier.watch(targets)
        probing = Leadership(lease(f"qualify:{machine}"), "qualify", ttl, [qualifier.run])
        track(probing.run())
        if service.leases is not None:  # other workers may probe: follow their view meanwhile
            qualifier.board = RedisHealthBoard(service.leases, f"{QUALIFY_BOARD_PREFIX}{machine}")
            track(qualifier.follow(lambda: probing.leading))
        if qualify.contacts:
            track(_watch_contacts(service, qualifier, targets, qualify.interval))


async def _watch_contacts(
    service: RegistrarService, qualifier: Qualifier, static: list[tuple[str, Address]], interval: float
) -> None:
    """Keep the qualify targets = static trunks + the source address of every live binding."""
    while True:
        now = service.registrar.clock()
        contacts: list[tuple[str, Address]] = []
        try:
            async for aor in service.store.aors(now):
                contacts += [(aor, b.source) for b in await service.store.lookup(aor, now)]
        except LocationStoreError as exc:
            log.warning("qualify: cannot list registered contacts: %s", exc)
        else:
            qualifier.watch(static + contacts)
        await asyncio.sleep(interval)
