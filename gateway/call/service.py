"""Wiring of call control into the running gateway, and its status socket.

``service = await install(gateway, settings, limits=..., trunks=...)`` takes the ``call``
section and the collaborators the composition root (:mod:`gateway.node`) built — the limiter
(:func:`limiter_for`: ``call.limits_backend``, ``redis`` when a Redis URL is set, else
``memory``), the trunk holder, the dialplan holder and the account gate shared with the
registrar and the API — builds the router (the dialplan's, or the static routes of
``call.routes`` over the trunks) and the B2BUA, registers its request handlers, and opens the
status socket. On shutdown: ``await service.drain()`` *before* ``gateway.stop()`` (calls end
with BYE after ``call.drain_grace``), then ``await service.close()``.

Status socket (``call.status_socket``, a UNIX stream socket under ``state_dir``): connect, read
one JSON document until EOF. It holds the B2BUA's :meth:`~gateway.call.b2bua.B2BUA.snapshot`
(active calls: who, where, since when, state; leak counters), the limiter's slots per scope and
the transaction layer's live transaction count. It is what the tests read to prove that every
call leaves nothing behind, and what the operations API can serve.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.accounts.store import AccountGate
from gateway.call.auth import LineAuth
from gateway.call.b2bua import B2BUA
from gateway.call.charging import ChargingObserver
from gateway.call.fraud import SpendAlarm, SpendVelocity
from gateway.call.limits import LIMITERS, Limiter, LimiterContext
from gateway.call.model import CallObserver
from gateway.call.routing import DialplanRouter, Router, StaticRouter
from gateway.call.settings import CallSettings, FraudSettings
from gateway.charging.service import ChargingService, wall_clock
from gateway.registrar.location import Binding
from gateway.registrar.trunks import TrunkLookup
from gateway.routing import DialplanHolder
from gateway.sip.address import Address

if TYPE_CHECKING:
    from gateway.app import Gateway

log = logging.getLogger(__name__)


@dataclass
class CallService:
    b2bua: B2BUA
    limiter: Limiter
    gateway: Gateway
    settings: CallSettings
    status_path: Path | None = None
    accounts: AccountGate | None = None
    """The account gate of the root (closed by it, not here)."""
    velocity: SpendVelocity | None = None
    """The spend-velocity alarm, when ``call.fraud`` sets a limit and charging runs."""
    _server: asyncio.AbstractServer | None = None

    def status(self) -> dict[str, object]:
        return {
            **self.b2bua.snapshot(),
            "limits": self.limiter.snapshot(),
            "limit_refusals": {
                sample.labels["scope"]: int(sample.value)
                for metric in self.gateway.metrics.limit_refusals.collect()
                for sample in metric.samples
                if sample.name.endswith("_total")
            },
            "transactions": self.gateway.transaction_count,
            "transaction_timeouts": self.gateway.transaction_counters.timeouts,  # Timers B, F, H
            "handoffs": {  # worker mode: UDP datagrams handed between workers (transport.handoff)
                sample.labels["direction"]: int(sample.value)
                for metric in self.gateway.metrics.worker_handoffs.collect()
                for sample in metric.samples
                if sample.name.endswith("_total")
            },
        }

    async def _serve_status(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(json.dumps(self.status()).encode())
            await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def open_status(self) -> None:
        path = self.status_path
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._serve_status, path=str(path))

    async def drain(self) -> None:
        """Refuse new calls, let live ones end for ``call.drain_grace`` s, end the rest with BYE."""
        await self.b2bua.drain(self.settings.drain_grace)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            if self.status_path is not None:
                self.status_path.unlink(missing_ok=True)


def limiter_for(settings: CallSettings, *, redis_url: str | None, node_id: str, workers: int) -> Limiter:
    """The limiter ``call.limits_backend`` names (by default ``redis`` when ``redis_url`` is set);
    ``node_id`` owns its slots, which die with it after ``slot_ttl`` (``workers``: one per process)."""
    context = LimiterContext(redis_url, asyncio.get_running_loop().time, node_id, workers, settings.slot_ttl)
    return LIMITERS.create(settings.limits_backend, context)


async def install(
    gateway: Gateway,
    settings: CallSettings,
    *,
    limits: Limiter,
    trunks: TrunkLookup,
    contacts: Callable[[str], Awaitable[list[Binding]]] | None = None,
    router: Router | None = None,
    observer: CallObserver | None = None,
    dialplan: DialplanHolder | None = None,
    charging: ChargingService | None = None,
    accounts: AccountGate | None = None,
    is_up: Callable[[Address], bool] | None = None,
    line_auth: LineAuth | None = None,
    status_path: Path | None = None,
) -> CallService:
    """Build call control from its ``call`` section and serve INVITE / BYE / UPDATE / INFO on
    ``gateway``. ``limits``: the limiter (its builder closes it, after the service).

    The router: ``router`` when given; else the ``dialplan`` holder's plan (shared with the
    operations API and SIGHUP, which swap plans in it) with ``contacts`` (the registrar's
    location lookup) for registered lines; without a dialplan, ``call.routes`` only.
    ``trunks``: the trunk holder (read at each call). ``charging``: the started charging
    service; each call the dialplan classified then yields exactly one stop event
    (:mod:`.charging`); ``observer`` replaces that. ``accounts``: the account-state gate shared
    with the registrar. ``is_up``: OPTIONS qualify state of destinations. ``line_auth``: proxy
    authentication of registered lines (:mod:`gateway.call.auth`); without it a line whose
    trunk requires authentication cannot call (fail closed). ``status_path``: the status socket.
    """
    velocity = spend_velocity(gateway, settings.fraud, charging)
    if router is None:
        if dialplan is not None and contacts is not None:
            holder = dialplan
            router = DialplanRouter(
                lambda: holder.plan, trunks, settings, contacts=contacts,
                clock=_fixed_clock(settings.fixed_time) if settings.fixed_time else wall_clock,
                accounts=accounts, is_up=is_up, line_auth=line_auth, velocity=velocity,
            )
        else:
            router = StaticRouter(trunks, settings, is_up)
    if observer is None and charging is not None:
        observer = ChargingObserver(charging)
    b2bua = B2BUA(gateway, settings, router, limits, observer=observer, trunks=trunks, accounts=accounts)
    b2bua.install()
    service = CallService(b2bua, limits, gateway, settings, status_path, accounts=accounts, velocity=velocity)
    await service.open_status()
    log.info("call control: %d static routes, %s limits", len(settings.routes), limits.name)
    return service


def spend_velocity(
    gateway: Gateway, fraud: FraudSettings, charging: ChargingService | None
) -> SpendVelocity | None:
    """The spend-velocity alarm fed by ``charging``'s events, when ``call.fraud`` sets a limit."""
    if charging is None or (fraud.line_fen_per_hour is None and fraud.group_fen_per_hour is None):
        return None

    def counted(alarm: SpendAlarm) -> None:
        gateway.metrics.spend_alarms.labels(alarm.key.split(":", 1)[0]).inc()

    # Wall-clock time: alarms are shown to operators with when they were raised.
    velocity = SpendVelocity(fraud, clock=time.time, on_alarm=counted)
    charging.observe(velocity.observe)
    return velocity


def read_status(path: str | Path, timeout: float = 2.0) -> dict[str, object]:
    """Read the status socket (blocking; for tests and tools)."""
    import socket  # noqa: PLC0415 - only tools use the blocking client

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    data: dict[str, object] = json.loads(b"".join(chunks))
    return data


def _fixed_clock(at: dt.datetime) -> Callable[[], dt.datetime]:
    """A clock stopped at ``at`` (``call.fixed_time``: tests and demos of time conditions)."""
    return lambda: at
