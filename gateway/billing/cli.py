"""``gateway billing statement`` and ``gateway billing rerate``: the monthly statement.

    gateway billing statement --group acme --month 2026-12 [--format json|csv] [--db URL]
    gateway billing rerate --group acme --month 2026-12 --reason "national price corrected"
    gateway billing versions --group acme --month 2026-12

``statement`` prints the month's kept statement, computing and keeping version 1 the first
time. ``rerate`` computes the month again with the tariffs as they are now and keeps it as a
new version (the old one stays as issued). The database is ``--db``, else the config's
``charging.billing_database``, else SQLite in the state directory (as ``billing consume``).
Exit codes: 0 done, 1 database error, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path

from gateway.billing import statement
from gateway.billing.store import StoreError, open_store
from gateway.charging.rating import load_tariffs
from gateway.config import GatewayConfig, load_config
from gateway.datafile import DataFileError

DEFAULT_CONFIG = Path("config/gateway.yaml")


def load_optional_config(path: Path) -> GatewayConfig:
    """The config file if it exists (defaults otherwise); ``REDIS_URL`` applies either way."""
    if path.exists():
        return load_config(path)
    url = os.environ.get("REDIS_URL")
    return GatewayConfig.model_validate({"redis": {"url": url}} if url else {})


def billing_database(config: GatewayConfig, given: str | None) -> str:
    """The billing database URL: given, else the config's, else SQLite in the state directory."""
    return given or config.charging.billing_database or f"sqlite:///{config.state_dir / 'billing.sqlite3'}"


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for name, help_text in (
        ("statement", "the monthly statement of a group (kept; version 1 made on first use)"),
        ("rerate", "rate a month again after a tariff correction: a NEW statement version"),
        ("versions", "list the kept statement versions of a group's month"),
    ):
        parser = commands.add_parser(name, help=help_text)
        parser.add_argument("--group", required=True)
        parser.add_argument("--month", required=True, help="YYYY-MM, in the tariff's time zone")
        parser.add_argument("--db", default=None, metavar="URL", help="billing database (default: config)")
        parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
        parser.add_argument("--tariffs", type=Path, default=None, help="tariff file (default: config)")
        if name != "versions":
            parser.add_argument("--format", choices=("json", "csv"), default="json")
        if name == "rerate":
            parser.add_argument("--reason", required=True, help="why (kept with the new version)")
        parser.set_defaults(handler=_command)


def _command(args: argparse.Namespace) -> int:
    try:
        config = load_optional_config(args.config)
        rater = load_tariffs(args.tariffs or config.charging.tariffs)
        statement.parse_month(args.month)
    except (DataFileError, statement.StatementError) as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    try:
        store = open_store(billing_database(config, args.db))
    except StoreError as exc:
        sys.stderr.write(f"billing database: {exc}\n")
        return 1
    now = dt.datetime.now(dt.UTC)
    try:
        if args.billing_command == "versions":
            for version, created, reason, total in statement.versions(store, args.group, args.month):
                sys.stdout.write(f"v{version}\t{created}\t{total}\t{reason}\n")
            return 0
        if args.billing_command == "rerate":
            body = statement.rerate(store, rater, args.group, args.month, now=now, reason=args.reason)
        else:
            body = statement.issue(store, rater, args.group, args.month, now=now)
    except (StoreError, statement.StatementError) as exc:
        sys.stderr.write(f"{exc}\n")
        return 1
    finally:
        store.close()
    if args.format == "csv":
        sys.stdout.write(statement.to_csv(body))
    else:
        sys.stdout.write(json.dumps(body, ensure_ascii=False, indent=2) + "\n")
    return 0
