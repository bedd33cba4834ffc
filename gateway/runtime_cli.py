"""``gateway run --config FILE``: load and validate the configuration, set up logging and run
the gateway built by the composition root (:func:`gateway.node.serve`) until SIGTERM or SIGINT;
SIGHUP reloads trunks, dialplans and tariffs (see :mod:`gateway.node`). With
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
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from gateway.config import LoggingConfig, check_workers, load_config
from gateway.datafile import DataFileError
from gateway.workers import Supervisor

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
    from gateway.node import serve  # noqa: PLC0415 - keep `gateway --help` light

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
