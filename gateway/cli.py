"""The ``gateway`` command line: ``gateway run``, ``gateway dialplan ...``, ``gateway billing ...``.

Each subsystem contributes its own sub-commands from its own ``cli`` module through
``register(subparsers)``; this module only assembles them and maps errors to exit codes.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

# Modules that contribute sub-commands; each defines ``register(subparsers) -> None`` and sets
# ``handler`` defaults (a callable taking the parsed namespace and returning an exit code).
COMMAND_MODULES: tuple[str, ...] = (
    "gateway.runtime_cli",
    "gateway.charging.cli",
    "gateway.accounts.cli",
    "gateway.routing.cli",
    "gateway.mgmt.cli",
)

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="IMS fusion gateway")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
