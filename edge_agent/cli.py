"""The ``edge-agent`` command line.

* ``edge-agent run --config config/edge_agent.yaml``: run until SIGTERM/SIGINT (systemd unit in
  ``deploy/edge-agent.service``);
* ``edge-agent diff --config ... [--desired FILE]``: dry run, print the actions that would be
  applied (and what cannot be) without changing anything;
* ``edge-agent check-config --config ...``: validate the configuration file.

Exit codes: 0 ok, 1 runtime failure, 2 invalid configuration or desired state.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from edge_agent.agent import Agent
from edge_agent.config import AgentConfig, load_config
from edge_agent.model import DesiredState
from edge_agent.netlink import NetlinkAdapter, NetnsMissingError
from edge_agent.reconcile import Owned, describe, plan
from edge_agent.store import StateStore, StoreError
from gateway.datafile import DataFileError, load_model


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-agent", description="IMS fusion gateway edge agent")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text in (
        ("run", "run the agent"),
        ("diff", "show what would be applied (dry run)"),
        ("check-config", "validate the configuration file"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--config", type=Path, default=Path("config/edge_agent.yaml"))
        if name == "diff":
            cmd.add_argument("--desired", type=Path, help="a desired-state YAML file (default: the config's)")
    return parser


async def _run(config: AgentConfig) -> None:
    agent = Agent(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int, _frame: object) -> None:
        loop.call_soon_threadsafe(stop.set)

    # Not loop.add_signal_handler: it routes signals through a wake-up socket that pyroute2's
    # forked netns helpers inherit, so the SIGTERM pyroute2 sends its helper would stop us.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    await agent.start()
    try:
        await stop.wait()
    finally:
        await agent.stop()


async def _diff(config: AgentConfig, desired: DesiredState | None) -> int:
    store = StateStore(config.state_dir)
    saved = store.load()
    target = desired or config.desired or (saved.desired if saved else None)
    if target is None:
        sys.stdout.write("no desired state (none given, none in the config, none saved)\n")
        return 0
    adapter = NetlinkAdapter(config.netns, config.reconcile.rtproto, create_netns=False)
    try:
        observed = await adapter.observe()
        missing = await adapter.unsupported_kinds(set(target.kinds))
    finally:
        adapter.close()
    result = plan(observed, target, saved.owned if saved else Owned(), config.reconcile.rtproto)
    sys.stdout.write(f"desired version {target.version}: {len(result.actions)} action(s)\n")
    for action in result.actions:
        sys.stdout.write(f"  {describe(action)}\n")
    for item in result.unresolved:
        sys.stdout.write(f"  unresolved: {item}\n")
    for kind in missing:
        sys.stdout.write(f"  refused: this kernel does not support link kind {kind}\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config)
        desired = load_model(DesiredState, args.desired) if getattr(args, "desired", None) else None
    except DataFileError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "run":
            asyncio.run(_run(config))
        elif args.command == "diff":
            return asyncio.run(_diff(config, desired))
        else:
            sys.stdout.write(f"{args.config}: ok\n")
    except (StoreError, NetnsMissingError) as exc:
        sys.stderr.write(f"{exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
