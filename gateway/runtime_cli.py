"""``gateway run --config FILE``: load and validate the configuration, run the gateway until
SIGTERM or SIGINT, then shut down in order (see :meth:`gateway.app.Gateway.stop`). With
``node.workers`` above 1 (or ``--workers N``) it supervises that many worker processes instead
(:mod:`gateway.workers`).

Exit codes: 0 after a clean shutdown, 2 for an invalid configuration (every problem is written
to stderr as ``file:line: field: message``), 1 when the gateway cannot start (a port in use).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from gateway import redis_client
from gateway.collector import CycleCollector
from gateway.config import GatewayConfig, LoggingConfig, check_workers, load_config
from gateway.datafile import DataFileError
from gateway.workers import Supervisor

if TYPE_CHECKING:
    from gateway.charging.service import ChargingService

log = logging.getLogger("gateway")

DEFAULT_CONFIG = "config/gateway.yaml"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("run", help="run the gateway until SIGTERM / SIGINT")
    parser.add_argument(
        "--config", default=DEFAULT_CONFIG, help=f"configuration file (default: {DEFAULT_CONFIG})"
    )
    parser.add_argument(
        "--workers", type=int, default=None, metavar="N",
        help="worker processes sharing the SIP ports (overrides node.workers; see gateway.workers)",
    )
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)  # set by the supervisor
    parser.set_defaults(handler=run_command)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors (``logging.json: true``)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        call_id = getattr(record, "call_id", None)  # logging.info(..., extra={"call_id": uid})
        if call_id is not None:
            entry["call_id"] = call_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(config: LoggingConfig) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if config.json_format:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.level)


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when installed (noticeably faster sockets), else asyncio's default."""
    try:
        import uvloop  # noqa: PLC0415 - optional dependency
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


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


async def serve(config: GatewayConfig) -> None:
    """Start the gateway, wait for SIGTERM or SIGINT, stop it."""
    from gateway.accounts.store import AccountGate  # noqa: PLC0415 - keep `gateway --help` light
    from gateway.app import Gateway  # noqa: PLC0415
    from gateway.call.auth import LineAuth  # noqa: PLC0415
    from gateway.call.charging import ChargingObserver  # noqa: PLC0415
    from gateway.call.service import install as install_calls  # noqa: PLC0415
    from gateway.mgmt.api import start_api  # noqa: PLC0415
    from gateway.mgmt.dialplans import ActiveVersionFollower, load_holder  # noqa: PLC0415
    from gateway.mgmt.monitor import CallObservers, Monitor  # noqa: PLC0415
    from gateway.registrar.service import install as install_registrar  # noqa: PLC0415
    from gateway.security.guard import EdgeGuard, TlsPeerPolicy, ban_store_for  # noqa: PLC0415
    from gateway.switchboard.service import install as install_switchboard  # noqa: PLC0415

    loop = asyncio.get_running_loop()
    redis_client.share_pools(config.redis.max_connections, config.redis.pool_timeout)  # per worker
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    gateway = Gateway(config)
    # One account-state gate: the registrar refuses cancelled lines, call control bars calls.
    accounts = AccountGate.from_settings(config.accounts, config.redis.url)
    # The edge guard: bans, budgets and scanner drops before parsing; told of digest failures.
    guard = EdgeGuard(
        config.security, ban_store_for(config.security, config.redis.url), gateway.metrics.registry
    ) if config.security.enabled else None
    registrar = await install_registrar(gateway, config, accounts=accounts, observer=guard,
                                        on_authenticated=guard.authenticated if guard is not None else None)
    if guard is not None:
        guard.trust(registrar.trunks)  # trunk addresses get their own budget, never auto-banned
        gateway.set_packet_filter(guard)
    tls_peers = TlsPeerPolicy(registrar.trunks)
    if tls_peers:  # peer trunks that must show a TLS client certificate (match.tls_names)
        gateway.set_certificate_check(tls_peers.check)
    # Lines authenticate their calls with the registrar's Digest checks (407, RFC 3261 §22.3);
    # their failures reach the same guard through the shared verifier.
    line_auth = LineAuth(registrar.registrar.verifier)
    charging = await start_charging(config)
    # One dialplan holder for call control and the operations API (which swaps plans in it).
    dialplan = load_holder(config.dialplans, config.state_dir, list(registrar.trunks.trunks)) \
        if config.dialplans else None
    monitor = Monitor(gateway.metrics.registry)
    observer = CallObservers(monitor.calls, ChargingObserver(charging) if charging is not None else None)
    calls = await install_calls(
        gateway, config, trunks=registrar.trunks, contacts=registrar.contacts, charging=charging,
        dialplan=dialplan, observer=observer, accounts=accounts, is_up=registrar.is_up,
        line_auth=line_auth,
    )
    gateway.set_dialog_counter(lambda: 2 * len(calls.b2bua.calls))  # each B2BUA call: two dialogs
    switchboard = (  # in front of call control: switchboard numbers are answered by its IVR
        await install_switchboard(gateway, config, b2bua=calls.b2bua, trunks=registrar.trunks,
                                  contacts=registrar.contacts, dialplan=dialplan, charging=charging,
                                  line_auth=line_auth)
        if dialplan is not None and config.switchboard.enabled else None
    )
    api = None
    # A worker other than the first follows the dialplan versions the first one's API applies.
    follower = ActiveVersionFollower(dialplan, config.state_dir, config.dialplans) \
        if dialplan is not None and not config.node.first else None
    collector = CycleCollector(config.gc, gateway.metrics.registry)
    try:
        await gateway.start()
        if guard is not None:
            guard.start()
        registrar.start(config)  # outbound registration and qualify need the listening addresses
        if config.api.enabled:
            api = await start_api(gateway, config, registrar=registrar, calls=calls, dialplan=dialplan,
                                  charging=charging, monitor=monitor,
                                  accounts=calls.accounts.store if calls.accounts is not None else None,
                                  guard=guard)
        collector.start()
        if follower is not None:
            follower.start()
        await stop.wait()
        log.info("signal received, shutting down")
        if switchboard is not None:
            await switchboard.close()  # IVR calls end (BYE), RTP ports closed
        await calls.drain()  # calls end (BYE) before the gateway stops answering
    finally:
        await collector.stop()
        if follower is not None:
            await follower.close()
        if api is not None:
            await api.close()  # operators' changes stop first
        await gateway.stop()
        if guard is not None:
            await guard.close()
        await calls.close()
        if charging is not None:
            await charging.close()  # after the calls: their stop events are flushed
        await registrar.close()
        await redis_client.close_pools()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def run(main: Coroutine[Any, Any, None]) -> None:
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(main)


def run_command(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
        if args.workers is not None:
            node = config.node.model_copy(update={"workers": args.workers})
            config = config.model_copy(update={"node": node})
            check_workers(config, args.config)
    except DataFileError as exc:
        for problem in exc.problems:
            sys.stderr.write(f"{problem}\n")
        return 2
    configure_logging(config.logging)
    if args.worker is not None:
        config = config.for_worker(args.worker)
    elif config.node.workers > 1:
        supervisor = Supervisor(
            args.config, config.node.workers, stop_grace=config.call.drain_grace + config.sip.shutdown_grace
        )
        return asyncio.run(supervisor.run())
    try:
        run(serve(config))
    except DataFileError as exc:  # a data file the config names (trunks ...) is invalid
        for problem in exc.problems:
            sys.stderr.write(f"{problem}\n")
        return 2
    except OSError as exc:
        log.error("cannot start: %s", exc)  # e.g. a listening port already in use
        return 1
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were installed
        return 130
    return 0
