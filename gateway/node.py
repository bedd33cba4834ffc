"""The composition root: the one place that builds a gateway process from its configuration.

:func:`started` builds every subsystem from its own section of :class:`~gateway.config.GatewayConfig`,
in dependency order, and hands each only that section plus the collaborators it needs (call
control never sees the operations API's tokens). Everything is entered on one
:class:`contextlib.AsyncExitStack` as soon as it exists, so whatever started is closed in
reverse order whatever fails later (a taken API port closes the SIP listeners, the registrar's
stores and tasks, charging ...). :func:`serve` runs it until SIGTERM / SIGINT.

Order (what each needs comes first)::

    SIP node (not listening yet) → account gate → edge guard → trunk holder → registrar
    → charging → dialplan holder → call control → switchboard → listen → API → gc, follower

Shutdown keeps the order of DESIGN.md rule 7: stop accepting new calls and drain the live ones
(:meth:`Node.drain`: switchboard, then call control; only after a clean start), then the stack
unwinds: operators' changes stop first (API), the SIP node stops, call control closes, charging
flushes the stop events of the calls that ended, the registrar's stores close last.

Reload (SIGHUP, :class:`Reloader`): trunks, dialplans and tariffs are read and validated — off
the event loop — then swapped together, or not at all: one invalid file refuses the whole reload
(each problem logged with file, line and field; ``gateway_config_reloads_total{result="refused"}``
counted) and the running data keeps serving. What a reload does not change: ``gateway.yaml``
itself (listeners, stores, limits: restart), qualify targets and outbound registrations (they
follow on restart), the switchboard's prompts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import Counter

from gateway import redis_client
from gateway.billing.cli import billing_database
from gateway.config import GatewayConfig
from gateway.datafile import DataFileError, Problem

if TYPE_CHECKING:
    from gateway.accounts.store import AccountGate
    from gateway.app import Gateway
    from gateway.call.service import CallService
    from gateway.charging.rating import Rater
    from gateway.charging.service import ChargingService
    from gateway.mgmt.api import ApiServer
    from gateway.registrar.holder import TrunkHolder
    from gateway.registrar.service import RegistrarService
    from gateway.registrar.trunks import TrunkTable
    from gateway.routing.plan import CompiledPlan
    from gateway.routing.reload import DialplanHolder
    from gateway.security.guard import EdgeGuard
    from gateway.switchboard.service import Switchboard

log = logging.getLogger("gateway")

RELOAD_ATTEMPTS = 3
"""Validations of one reload when an operator's API change swapped data in meanwhile."""


@dataclass
class Node:
    """The running subsystems of one gateway process (None: not configured)."""

    config: GatewayConfig
    gateway: Gateway
    accounts: AccountGate
    trunks: TrunkHolder
    registrar: RegistrarService
    calls: CallService
    guard: EdgeGuard | None = None
    charging: ChargingService | None = None
    dialplan: DialplanHolder | None = None
    switchboard: Switchboard | None = None
    api: ApiServer | None = None
    reloader: Reloader = field(init=False)
    _drained: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        self.reloader = Reloader(self)

    async def drain(self) -> None:
        """Stop taking calls and end the live ones (switchboard IVR calls, then call control's,
        BYE after ``call.drain_grace``) while the SIP node still answers."""
        if self._drained:
            return
        self._drained = True
        if self.switchboard is not None:
            await self.switchboard.close()  # IVR calls end (BYE), RTP ports closed
        await self.calls.drain()

    async def _close_switchboard(self) -> None:
        """Start-up failed after the switchboard was installed: release its ports and socket."""
        if self.switchboard is not None and not self._drained:
            self._drained = True
            await self.switchboard.close()


@dataclass
class _Reloaded:
    table: TrunkTable
    plan: CompiledPlan | None
    rater: Rater | None


class Reloader:
    """Reloads trunks, dialplans and tariffs together (see the module docstring)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.metric = Counter(
            "gateway_config_reloads", "Reloads of trunks, dialplans and tariffs (SIGHUP), by result.",
            ["result"], registry=node.gateway.metrics.registry,
        )
        self._task: asyncio.Task[bool] | None = None
        self._again = False

    def request(self) -> None:
        """SIGHUP: reload now, or once more after the reload under way (files may have changed
        after it read them)."""
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.get_running_loop().create_task(self._run(), name="config-reload")

    async def _run(self) -> bool:
        ok = await self.reload()
        while self._again:
            self._again = False
            ok = await self.reload()
        return ok

    async def wait(self) -> bool | None:
        """The outcome of the last requested reload (None: none requested)."""
        return await self._task if self._task is not None else None

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _running(self) -> tuple[object, ...]:
        node = self.node
        return (node.trunks.table, node.dialplan.plan if node.dialplan is not None else None,
                node.charging.rater if node.charging is not None else None)

    async def reload(self) -> bool:
        """Validate every file, then swap all of them; False (logged, counted) when refused."""
        for _ in range(RELOAD_ATTEMPTS):
            before = self._running()
            # Reading and compiling happen in a thread: the event loop keeps serving calls.
            outcome = await asyncio.to_thread(self._prepare)
            if isinstance(outcome, list):
                for problem in outcome:
                    log.error("reload refused, old configuration kept: %s", problem)
                self.metric.labels("refused").inc()
                return False
            if all(a is b for a, b in zip(self._running(), before, strict=True)):
                # No API change came in meanwhile: swap everything, with no await in between.
                self._swap(outcome)
                self.metric.labels("ok").inc()
                return True
            log.info("reload: data changed by an operator while validating; validating again")
        log.error("reload refused: data kept changing while it was validated")
        self.metric.labels("refused").inc()
        return False

    def _prepare(self) -> _Reloaded | list[Problem]:
        node, problems = self.node, list[Problem]()
        table = node.trunks.table
        try:
            table = node.trunks.prepare()
        except DataFileError as exc:
            problems += exc.problems
        plan = None
        if node.dialplan is not None:
            try:  # checked against the new trunk names: a dialplan naming a removed trunk refuses
                plan = node.dialplan.prepare(list(table.trunks))
            except DataFileError as exc:
                problems += exc.problems
        rater = None
        if node.charging is not None:
            from gateway.charging.rating import load_tariffs  # noqa: PLC0415 - charging is optional

            try:
                rater = load_tariffs(node.config.charging.tariffs)
            except DataFileError as exc:
                problems += exc.problems
        return problems or _Reloaded(table, plan, rater)

    def _swap(self, new: _Reloaded) -> None:
        node = self.node
        node.trunks.swap(new.table)
        if node.dialplan is not None and new.plan is not None:
            node.dialplan.swap(new.plan, list(new.table.trunks))
        if node.charging is not None and new.rater is not None:
            node.charging.rater = new.rater  # calls rated from now on use the new tariffs
        log.info("reloaded: %d trunks, dialplan %s, tariffs %s", len(new.table.trunks),
                 new.plan.digest()[:12] if new.plan is not None else "none",
                 node.config.charging.tariffs if new.rater is not None else "none")


async def start_charging(config: GatewayConfig) -> ChargingService | None:
    """The charging service of the ``charging`` section, started; None (logged) when its tariff
    file does not exist, so a minimal configuration still runs (calls are then not charged)."""
    from gateway.charging.service import ChargingService  # noqa: PLC0415

    if not config.charging.tariffs.is_file():
        log.warning("charging disabled: tariff file %s not found", config.charging.tariffs)
        return None
    from gateway.charging.spool import abandoned_spools  # noqa: PLC0415

    # Segments of workers that no longer run (the worker count shrank, or went to or from one)
    # are taken over by the single process or worker 0, so no spooled event is left behind.
    own = config.state_dir / config.charging.spool.directory
    adopt = abandoned_spools(own, workers=config.node.workers, worker_index=config.node.worker_index)
    service = ChargingService.from_settings(
        config.charging, node_id=config.node.id, state_dir=config.state_dir, redis_url=config.redis.url,
        adopt=adopt,
    )
    await service.start()
    return service


@contextlib.asynccontextmanager
async def started(config: GatewayConfig) -> AsyncIterator[Node]:
    """The gateway built from ``config`` and listening; closed in reverse order on exit, and
    whatever had started when something fails to start (the exception then propagates:
    ``OSError`` for a port in use, ``DataFileError`` for a bad data file)."""
    # Imported here: `gateway --help` and the other CLIs stay light.
    from gateway.accounts.store import AccountGate  # noqa: PLC0415
    from gateway.app import Gateway  # noqa: PLC0415
    from gateway.call.auth import LineAuth  # noqa: PLC0415
    from gateway.call.charging import ChargingObserver  # noqa: PLC0415
    from gateway.call.service import install as install_calls  # noqa: PLC0415
    from gateway.call.service import limiter_for  # noqa: PLC0415
    from gateway.collector import CycleCollector  # noqa: PLC0415
    from gateway.mgmt.api import start_api  # noqa: PLC0415
    from gateway.mgmt.dialplans import ActiveVersionFollower, load_holder  # noqa: PLC0415
    from gateway.mgmt.monitor import CallObservers, Monitor  # noqa: PLC0415
    from gateway.registrar.holder import OVERRIDES_FILE, OverridesFollower, TrunkHolder  # noqa: PLC0415
    from gateway.registrar.service import install as install_registrar  # noqa: PLC0415
    from gateway.security.guard import EdgeGuard, ban_store_for  # noqa: PLC0415
    from gateway.switchboard.service import install as install_switchboard  # noqa: PLC0415

    async with contextlib.AsyncExitStack() as stack:
        # One bounded pool of Redis connections per process and server, shared by every
        # client built below; closed last, after every user of it.
        redis_client.share_pools(config.redis.max_connections, config.redis.pool_timeout)
        stack.push_async_callback(redis_client.close_pools)
        gateway = Gateway(config.sip, config.node, config.overload)
        # One account-state gate: the registrar refuses cancelled lines, call control bars
        # calls, the API changes states.
        accounts = AccountGate.from_settings(config.accounts, config.redis.url)
        stack.push_async_callback(accounts.store.close)
        # The edge guard: bans, budgets and scanner drops before parsing; told of digest failures.
        guard = None
        if config.security.enabled:
            guard = EdgeGuard(config.security, ban_store_for(config.security, config.redis.url),
                              gateway.metrics.registry)
            stack.push_async_callback(guard.close)
        # One trunk holder: every reader reads through it; SIGHUP and the API swap tables in it.
        trunks = TrunkHolder.load(config.registrar.trunks, config.state_dir / OVERRIDES_FILE)
        registrar = await install_registrar(
            gateway, config.registrar, trunks=trunks, redis_url=config.redis.url, accounts=accounts,
            observer=guard, on_authenticated=guard.authenticated if guard is not None else None,
        )
        stack.push_async_callback(registrar.close)
        if guard is not None:
            # Trunk addresses get their own budget and are never auto-banned, after each reload too.
            guard.trust(trunks.table)
            trunks.on_swap(guard.trust)
            gateway.set_packet_filter(guard)
        _follow_tls_peers(gateway, trunks)
        # Lines authenticate their calls with the registrar's Digest checks (407, RFC 3261
        # §22.3); their failures reach the same guard through the shared verifier.
        line_auth = LineAuth(registrar.registrar.verifier)
        charging = await start_charging(config)
        if charging is not None:
            stack.push_async_callback(charging.close)  # after the calls: their stop events flushed
        # One dialplan holder for call control, the switchboard, the API and SIGHUP.
        dialplan = load_holder(config.dialplans, config.state_dir, list(trunks.trunks)) \
            if config.dialplans else None
        monitor = Monitor(gateway.metrics.registry)
        observer = CallObservers(monitor.calls, ChargingObserver(charging) if charging is not None else None)
        status = config.call.status_socket
        limits = limiter_for(config.call, redis_url=config.redis.url, node_id=config.node.id,
                             workers=config.node.workers)
        stack.push_async_callback(limits.close)  # after call control closed (it holds slots)
        calls = await install_calls(
            gateway, config.call, limits=limits, trunks=trunks, contacts=registrar.contacts,
            charging=charging, dialplan=dialplan, observer=observer, accounts=accounts,
            is_up=registrar.is_up, line_auth=line_auth,
            status_path=None if status is None else config.state_dir / status,  # absolute stays
        )
        stack.push_async_callback(calls.close)
        gateway.set_dialog_counter(lambda: 2 * len(calls.b2bua.calls))  # each B2BUA call: two dialogs
        node = Node(config, gateway, accounts, trunks, registrar, calls, guard=guard, charging=charging,
                    dialplan=dialplan)
        if dialplan is not None and config.switchboard.enabled:
            # In front of call control: switchboard numbers are answered by its IVR.
            board_status = config.switchboard.status_socket
            node.switchboard = await install_switchboard(
                gateway, config.switchboard, b2bua=calls.b2bua, trunks=trunks,
                contacts=registrar.contacts, dialplan=dialplan, charging=charging, line_auth=line_auth,
                status_path=None if board_status is None else config.state_dir / board_status,
            )
            stack.push_async_callback(node._close_switchboard)
        await gateway.start()
        stack.push_async_callback(gateway.stop)
        if guard is not None:
            guard.start()
        # Outbound registration and qualify need the listening addresses.
        registrar.start(node=config.node.id, machine=config.node.machine)
        if config.api.enabled:
            node.api = await start_api(
                gateway, config.api, node_id=config.node.id, state_dir=config.state_dir,
                accounts=accounts.store, billing_database=billing_database(config, None),
                tariffs=config.charging.tariffs, redis_url=config.redis.url, edge=config.edge,
                registrar=registrar, calls=calls, dialplan=dialplan, charging=charging, monitor=monitor,
                guard=guard,
            )
            stack.push_async_callback(node.api.close)  # operators' changes stop first
        collector = CycleCollector(config.gc, gateway.metrics.registry)
        collector.start()
        stack.push_async_callback(collector.stop)
        if not config.node.first:
            # A worker other than the first follows the trunk changes and dialplan versions
            # worker 0's API applies.
            overrides = OverridesFollower(trunks)
            overrides.start()
            stack.push_async_callback(overrides.close)
            if dialplan is not None:
                follower = ActiveVersionFollower(dialplan, config.state_dir, config.dialplans)
                follower.start()
                stack.push_async_callback(follower.close)
        stack.push_async_callback(node.reloader.close)
        gateway.watch_load()  # last: start-up work is not overload
        yield node


def _follow_tls_peers(gateway: Gateway, trunks: TrunkHolder) -> None:
    """Peer trunks that must show a TLS client certificate (``match.tls_names``): checked on each
    accepted TLS connection, by the policy of the current trunk table."""
    from gateway.security.guard import TlsPeerPolicy  # noqa: PLC0415

    active = False

    def follow(table: TrunkTable) -> None:
        nonlocal active
        check = TlsPeerPolicy(table)
        if check or active:  # once set, a reload that drops every such trunk must clear it
            gateway.set_certificate_check(check.check)
            active = True

    follow(trunks.table)
    trunks.on_swap(follow)


async def serve(config: GatewayConfig) -> None:
    """Run the gateway until SIGTERM or SIGINT, reloading on SIGHUP; stop it in order."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # A SIGHUP while starting (its default action would end the process) reloads once the node
    # is up: the files may have changed after start-up read them.
    early: list[bool] = []
    loop.add_signal_handler(signal.SIGHUP, lambda: early.append(True))
    try:
        async with started(config) as node:
            loop.add_signal_handler(signal.SIGHUP, node.reloader.request)
            if early:
                node.reloader.request()
            await stop.wait()
            log.info("signal received, shutting down")
            loop.add_signal_handler(signal.SIGHUP, lambda: log.warning("SIGHUP ignored: shutting down"))
            await node.drain()  # calls end (BYE) before the gateway stops answering
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
