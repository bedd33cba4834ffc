"""The edge guard: what the transports ask on every datagram and connection, before parsing,
and the authentication-failure observer of the digest code.

Per message (:meth:`EdgeGuard.admit`), cheapest first: is the source banned (one dict lookup),
is it over its budget (a token bucket), does it announce a scanner's User-Agent (one regex over
the raw bytes). A refused message is dropped silently: an attacker learns nothing, not even that
a SIP service listens (RFC 3261 §26.1 threats; Kamailio ``pike`` + ``htable`` practice).

An address that proved a password to the registrar gets a larger budget for a while (an IAD
registers its eight lines at boot from one address); it is still banned past that budget.

Trusted sources (the addresses of configured trunks, and ``security.exempt``) have their own
budget (none by default) and are never penalised automatically: a carrier SBC or a PBX hitting
a limit must not cut a whole trunk off. Their excess is dropped and counted, their failed
logins neither ban them nor lock a user, and an operator may still ban them by hand.

Bans are added locally at once and written to the shared store in the background; every
``sync_interval`` the local list is replaced by the store's view plus what is not yet written
(:mod:`gateway.security.bans`). When the store is unreachable the local bans stay in force
(fail closed) and the error is logged once per outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

from gateway.registrar.digest import AuthFailures
from gateway.registrar.trunks import CarrierTrunk, PeerTrunk, TrunkTable
from gateway.security.bans import BAN_STORES, BanStore, BanStoreContext, BanStoreError
from gateway.security.flood import Ban, BanList, BanReason, Budget, ScannerMatcher, SourceBudgets
from gateway.security.settings import SecuritySettings
from gateway.sip.address import Address

log = logging.getLogger(__name__)

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Trusted:
    """Source addresses of configured trunks and exempt networks."""

    hosts: frozenset[str]
    networks: tuple[IpNetwork, ...]

    def __contains__(self, host: str) -> bool:
        if host in self.hosts:
            return True
        if not self.networks:
            return False
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)

    @classmethod
    def of(cls, trunks: TrunkTable | None, exempt: Iterable[str] = ()) -> Trusted:
        hosts: set[str] = set()
        networks: list[IpNetwork] = []
        for item in exempt:
            network = ipaddress.ip_network(item, strict=False)
            if network.num_addresses == 1:
                hosts.add(str(network.network_address))
            else:
                networks.append(network)
        for trunk in (trunks.trunks.values() if trunks is not None else ()):
            if isinstance(trunk, PeerTrunk):
                for match in trunk.match:
                    network = match.ip_network()
                    if network.num_addresses == 1:
                        hosts.add(str(network.network_address))
                    else:
                        networks.append(network)
            elif isinstance(trunk, CarrierTrunk):
                hosts.update(str(ipaddress.ip_address(d.host)) for d in trunk.destinations)
        return cls(frozenset(hosts), tuple(networks))


@dataclass(frozen=True, slots=True)
class _TlsRule:
    network: IpNetwork
    port: int | None
    names: frozenset[str]


class TlsPeerPolicy:
    """Peer trunks that authenticate by TLS client certificate (``match.tls_names``): a TLS
    connection accepted from such a trunk's address must present a certificate, verified against
    ``sip.tls.ca_certificates`` (``verify_clients: optional`` or ``required``), naming one of the
    names; otherwise it is closed before any SIP is read (RFC 3261 §26.3.2.2). Addresses of no
    such trunk are not concerned."""

    def __init__(self, trunks: TrunkTable | None) -> None:
        self._rules = [
            _TlsRule(match.ip_network(), match.port, frozenset(match.tls_names))
            for trunk in (trunks.trunks.values() if trunks is not None else ())
            if isinstance(trunk, PeerTrunk)
            for match in trunk.match if match.tls_names
        ]

    def __bool__(self) -> bool:
        return bool(self._rules)

    def check(self, peer: Address, names: frozenset[str]) -> bool:
        try:
            ip = ipaddress.ip_address(peer.host)
        except ValueError:
            return False
        required = [r for r in self._rules if ip in r.network and r.port in (None, peer.port)]
        if not required:
            return True
        if any(names & rule.names for rule in required):
            return True
        wanted = sorted(set().union(*(rule.names for rule in required)))
        log.warning("TLS connection from %s closed: its certificate names %s, the trunk wants one of %s",
                    peer.hostport(), sorted(names) or "nothing", wanted)
        return False


class SecurityMetrics:
    """The guard's counters on the gateway's registry (served by ``/metrics``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.banned_dropped = Counter(
            "security_banned_packets_dropped", "Datagrams and stream messages from banned sources, dropped "
            "before parsing.", registry=registry)
        self.dropped = Counter(
            "security_packets_dropped", "Messages dropped before parsing by the edge guard, by reason "
            "(over_budget: a trusted source over its budget; scanner).", ["reason"], registry=registry)
        self.bans_added = Counter(
            "security_bans_added", "Source addresses banned, by reason (flood, scanner, auth_failures, "
            "operator).", ["reason"], registry=registry)
        self.bans_active = Gauge("security_bans_active", "Bans in force on this worker.", registry=registry)
        self.connections_refused = Counter(
            "security_connections_refused", "TCP connections from banned sources closed at once.",
            registry=registry)
        self.user_lockouts = Counter(
            "security_user_lockouts", "User names locked after repeated authentication failures.",
            registry=registry)
        self.store_errors = Counter(
            "security_ban_store_errors", "Failed reads or writes of the shared ban store.", registry=registry)


def ban_store_for(settings: SecuritySettings, redis_url: str | None) -> BanStore:
    """The store ``security.store`` names (the one rule of :mod:`gateway.plugins`)."""
    return BAN_STORES.create(settings.store, BanStoreContext(redis_url, settings.redis_key))


class EdgeGuard:
    """See the module docstring. ``clock`` is wall-clock time (bans are shared between hosts)."""

    def __init__(
        self,
        settings: SecuritySettings,
        store: BanStore,
        registry: CollectorRegistry,
        *,
        trunks: TrunkTable | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.metrics = SecurityMetrics(registry)
        self.clock = clock
        self.bans = BanList()
        self._trusted = Trusted.of(trunks, settings.exempt)
        flood = settings.flood
        self._budget = Budget(flood.requests, flood.window)
        self._trunk_budget = (
            Budget(flood.trunk_requests, flood.window) if flood.trunk_requests is not None else None
        )
        self._authenticated_budget = Budget(flood.authenticated_requests, flood.window)
        self._authenticated: dict[str, float] = {}  # host -> larger budget until
        self.budgets = SourceBudgets(self._limit_for, max_sources=flood.max_sources)
        self.scanners = ScannerMatcher(settings.scanner_user_agents)
        self.source_failures = AuthFailures(settings.auth_failures.window)
        self.user_failures = AuthFailures(settings.user_lock.window)
        self._locked: dict[str, float] = {}  # user name -> locked until
        self._outbox: list[Ban] = []  # added here, not yet in the store
        self._lock_outbox: dict[str, float] = {}  # user locks added here, not yet in the store
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._store_failing = False
        self._banned_dropped = self.metrics.banned_dropped  # bound once: the hot path
        self._over_budget = self.metrics.dropped.labels("over_budget")
        self._scanner_dropped = self.metrics.dropped.labels("scanner")

    # -- trust -------------------------------------------------------------------------------------
    def trust(self, trunks: TrunkTable | None) -> None:
        """The trunk table changed (reload): trusted addresses and budgets are worked out again."""
        self._trusted = Trusted.of(trunks, self.settings.exempt)
        self.budgets.reset()

    def trusted(self, host: str) -> bool:
        return host in self._trusted

    def _limit_for(self, host: str) -> Budget | None:
        if host in self._trusted:
            return self._trunk_budget
        until = self._authenticated.get(host)
        if until is not None and until > self.clock():
            return self._authenticated_budget
        return self._budget

    def authenticated(self, host: str, now: float) -> None:
        """``host`` proved a password (registrar): a device with many lines behind one address
        (an IAD registering its eight lines at boot) gets ``flood.authenticated_requests``."""
        known = self._authenticated.get(host)
        self._authenticated[host] = now + self.settings.flood.authenticated_for
        if known is None or known <= now:
            self.budgets.forget(host)  # its budget is asked again, now the larger one
            if len(self._authenticated) > self.settings.flood.max_sources:
                self.expire(now)

    def expire(self, now: float) -> None:
        """End the larger budgets of addresses that have not logged in for ``authenticated_for``
        (their buckets are dropped, so the next message is measured against the normal one)."""
        for host in [h for h, until in self._authenticated.items() if until <= now]:
            del self._authenticated[host]
            self.budgets.forget(host)

    # -- the hot path (transports) ---------------------------------------------------------------
    def admit(self, data: bytes, host: str) -> bool:
        """May a message (one datagram, or one framed stream message) from ``host`` be parsed?"""
        now = self.clock()
        if self.bans.banned(host, now):
            self._banned_dropped.inc()
            return False
        if not self.budgets.charge(host, now):
            if host in self._trusted:
                self._over_budget.inc()
            else:
                self._ban(host, BanReason.FLOOD, now)
                self._banned_dropped.inc()
            return False
        if self.scanners.search(data):
            self._scanner_dropped.inc()
            if host not in self._trusted:
                self._ban(host, BanReason.SCANNER, now)
            return False
        return True

    def admit_connection(self, host: str) -> bool:
        """May a TCP connection from ``host`` be kept (checked when accepted)?"""
        if self.bans.banned(host, self.clock()):
            self.metrics.connections_refused.inc()
            return False
        return True

    # -- AuthFailureObserver ---------------------------------------------------------------------
    def auth_failed(self, source_host: str, username: str, now: float) -> None:
        """A digest check failed: ban the source past ``auth_failures``, lock the user past
        ``user_lock`` (gateway.security.auth_events)."""
        if source_host in self._trusted:
            return  # a trunk or exempt address is never penalised automatically (module docstring)
        if self.source_failures.record(source_host, now) >= self.settings.auth_failures.failures:
            self._ban(source_host, BanReason.AUTH_FAILURES, now)
        lock = self.settings.user_lock
        if username and self.user_failures.record(username, now) >= lock.failures \
                and not self.user_locked(username, now):
            self._locked[username] = now + lock.duration
            self._lock_outbox[username] = now + lock.duration
            self._wake.set()
            self.metrics.user_lockouts.inc()
            log.warning("ALERT: user %r locked for %.0f s after %d authentication failures in %.0f s "
                        "(last from %s)", username, lock.duration, lock.failures, lock.window, source_host)

    def user_locked(self, username: str, now: float) -> bool:
        until = self._locked.get(username)
        if until is None:
            return False
        if until > now:
            return True
        del self._locked[username]
        return False

    def locked_users(self, now: float) -> dict[str, float]:
        return {user: until for user, until in self._locked.items() if until > now}

    # -- bans --------------------------------------------------------------------------------------
    def _ban(self, host: str, reason: BanReason, now: float, seconds: float | None = None,
             by: str = "guard") -> Ban:
        ban = Ban(host, now + (seconds if seconds is not None else self.settings.ban_time), reason, by, now)
        self.bans.add(ban)
        self.budgets.forget(host)
        self._outbox.append(ban)
        self._wake.set()
        self.metrics.bans_added.labels(reason.value).inc()
        self.metrics.bans_active.set(len(self.bans))
        log.warning("banned %s for %.0f s: %s", host, ban.until - now, reason.value)
        return ban

    async def add_ban(self, host: str, seconds: float, by: str) -> Ban:
        """An operator's ban, written to the shared store before returning."""
        ban = self._ban(host, BanReason.OPERATOR, self.clock(), seconds, by)
        await self._flush()
        return ban

    async def lift(self, host: str) -> bool:
        """Lift ``host``'s ban here and in the shared store; False when it was not banned."""
        local = self.bans.lift(host) is not None
        self._outbox = [b for b in self._outbox if b.host != host]
        stored = await self.store.lift(host)
        self.metrics.bans_active.set(len(self.bans))
        return local or stored

    async def active(self) -> list[Ban]:
        """Every ban in force: the shared store's (raises BanStoreError) and this worker's."""
        now = self.clock()
        merged = {b.host: b for b in await self.store.active(now)}
        for ban in self.bans.active(now):
            if ban.host not in merged or merged[ban.host].until < ban.until:
                merged[ban.host] = ban
        return sorted(merged.values(), key=lambda b: -b.until)

    # -- shared store ----------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._sync_loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(BanStoreError):
            await self._flush()
        await self.store.close()

    async def _flush(self) -> None:
        batch, self._outbox = self._outbox, []
        try:
            await self.store.add(batch)
        except BanStoreError:
            self._outbox = batch + self._outbox
            raise
        locks, self._lock_outbox = self._lock_outbox, {}
        try:
            await self.store.lock_users(locks)
        except BanStoreError:
            self._lock_outbox = {**locks, **self._lock_outbox}
            raise

    async def sync(self) -> None:
        """Write pending bans, then enforce the store's view (plus what is still pending)."""
        await self._flush()
        now = self.clock()
        bans = await self.store.active(now)
        locks = await self.store.locked_users(now)
        self.bans.replace(bans)
        for ban in self._outbox:
            self.bans.add(ban)
        # A lock any worker set holds on every worker (a guessing run spread over the workers).
        self._locked = {**locks, **self._lock_outbox}
        self.metrics.bans_active.set(len(self.bans))

    async def _sync_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.sync_interval)
            self._wake.clear()
            self.expire(self.clock())
            try:
                await self.sync()
            except BanStoreError as exc:
                self.metrics.store_errors.inc()
                if not self._store_failing:
                    log.error("ban store unavailable (local bans stay in force): %s", exc)
                self._store_failing = True
            else:
                if self._store_failing:
                    log.info("ban store reachable again")
                self._store_failing = False
