"""``gateway account set|get|list``: account states at run time (the operations API comes later).

    gateway account set 62880001 arrears          # a number
    gateway account set acme suspended --group    # a whole group
    gateway account get 62880001 [--group]
    gateway account list [--group]

States are written to the configured store (Redis: ``--redis URL``, ``REDIS_URL`` or
``redis.url``); every gateway process reads them on each new call, so they apply at once.
Exit codes: 0 done, 1 Redis unreachable, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from redis.exceptions import RedisError

from gateway.accounts.policy import AccountState
from gateway.accounts.store import AccountStore, RedisAccountStore, Scope
from gateway.charging.cli import DEFAULT_CONFIG, load_optional_config
from gateway.datafile import DataFileError
from gateway.redis_client import connect


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    account = subparsers.add_parser("account", help="account states (arrears, suspended, cancelled...)")
    commands = account.add_subparsers(dest="account_command", required=True, metavar="COMMAND")
    for name, helptext in (("set", "set the state of a number or group"), ("get", "show a state"),
                           ("list", "list numbers or groups not in the normal state")):
        cmd = commands.add_parser(name, help=helptext)
        if name != "list":
            cmd.add_argument("key", metavar="NUMBER", help="the number (or group name with --group)")
        if name == "set":
            cmd.add_argument("state", choices=[s.value for s in AccountState])
        cmd.add_argument("--group", action="store_true", help="the key is a group name")
        cmd.add_argument("--redis", default=None, help="Redis URL (default: REDIS_URL, then the config)")
        cmd.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
        cmd.set_defaults(handler=account_command)


async def run_account_command(store: AccountStore, args: argparse.Namespace) -> str:
    """Execute one parsed command against a store; returns the text to print."""
    scope = Scope.GROUP if args.group else Scope.NUMBER
    if args.account_command == "set":
        await store.set(scope, args.key, AccountState(args.state))
        return f"{scope.value} {args.key}: {args.state}\n"
    if args.account_command == "get":
        return f"{scope.value} {args.key}: {(await store.get(scope, args.key)).value}\n"
    rows = await store.all(scope)
    return "".join(f"{key}\t{state.value}\n" for key, state in sorted(rows.items()))


def account_command(args: argparse.Namespace) -> int:
    try:
        config = load_optional_config(args.config)
    except DataFileError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    url = args.redis or config.redis.url
    if not url:
        sys.stderr.write("account states live in Redis: give --redis URL, set REDIS_URL or redis.url\n")
        return 2

    async def run() -> str:
        store = RedisAccountStore(connect(url), config.accounts.key_prefix)
        try:
            return await run_account_command(store, args)
        finally:
            await store.close()

    try:
        sys.stdout.write(asyncio.run(run()))
    except RedisError as exc:
        sys.stderr.write(f"Redis: {exc}\n")
        return 1
    return 0
