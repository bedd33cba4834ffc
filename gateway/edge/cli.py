"""``gateway ctl edge push|cmd``: sign with the operations key and publish to a site's agent.

    gateway ctl edge push SITE desired.yaml [--config config/gateway.yaml] [--lifetime S]
    gateway ctl edge cmd SITE reconcile|check|report|confirm [--wait S]

The broker and the private key come from the ``edge:`` section of the gateway configuration
(:mod:`gateway.edge.config`). ``push`` validates the desired state before signing it and
publishes it retained, so an agent that is offline gets it when it reconnects (unless it has
expired by then). ``cmd`` waits for the agent's reply on ``edge/<site>/cmd/reply``.

Exit codes as ``gateway ctl``: 0 done; 1 the agent refused or did not answer; 2 usage error,
invalid file or configuration; 3 the broker could not be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import time
from pathlib import Path

import aiomqtt

from edge_agent.model import DesiredState
from edge_agent.mqtt import Topics, client_for
from edge_agent.signing import KeyFileError, load_private_key, sign
from gateway.config import load_config
from gateway.datafile import DataFileError, Problem, load_model
from gateway.edge.config import EdgeOpsConfig

EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3
COMMANDS = ("reconcile", "check", "report", "confirm")


def register_ctl(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``edge`` under ``gateway ctl`` (see :mod:`gateway.mgmt.cli`)."""
    edge = commands.add_parser("edge", help="sign and send desired states and commands to edge agents")
    edge.add_argument("--config", type=Path, default=Path("config/gateway.yaml"), help="gateway config file")
    actions = edge.add_subparsers(dest="action", required=True, metavar="ACTION")
    push = actions.add_parser("push", help="push a desired state (YAML or JSON file) to a site")
    push.add_argument("site")
    push.add_argument("file", type=Path)
    push.add_argument("--lifetime", type=float, default=None, help="seconds the push stays valid")
    cmd = actions.add_parser("cmd", help="run a command on a site's agent and print its reply")
    cmd.add_argument("site")
    cmd.add_argument("command", choices=COMMANDS)
    cmd.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the reply")
    edge.set_defaults(handler=run)


def _ops_config(path: Path) -> EdgeOpsConfig:
    config = load_config(path)  # the whole gateway file is validated; only edge: is used
    if config.edge is None or config.edge.signing_key is None:
        raise DataFileError([Problem(str(path), None, "edge.signing_key", "required by gateway ctl edge")])
    return config.edge


def run(args: argparse.Namespace) -> int:
    try:
        config = _ops_config(args.config)
        assert config.signing_key is not None
        key = load_private_key(config.signing_key)
        now = time.time()
        seq = time.time_ns() // 1000  # microseconds: only moves forward, no shared counter needed
        topics = Topics(args.site)
        if args.action == "push":
            desired = load_model(DesiredState, args.file)
            data = sign(
                key,
                site=args.site,
                channel="desired",
                body=desired.model_dump(mode="json"),
                seq=seq,
                now=now,
                lifetime_s=args.lifetime or config.desired_lifetime_s,
            )
            asyncio.run(_publish(config, topics.desired, data, retain=True))
            sys.stdout.write(f"pushed desired version {desired.version} to {args.site} (seq {seq})\n")
            return 0
        request_id = secrets.token_hex(8)
        body = {"id": request_id, "command": args.command}
        lifetime = config.cmd_lifetime_s
        data = sign(key, site=args.site, channel="cmd", body=body, seq=seq, now=now, lifetime_s=lifetime)
        reply = asyncio.run(_command(config, topics, data, request_id, args.wait))
    except DataFileError as exc:
        sys.stderr.write(f"{exc}\n")
        return EXIT_USAGE
    except KeyFileError as exc:
        sys.stderr.write(f"gateway ctl edge: {exc}\n")
        return EXIT_USAGE
    except aiomqtt.MqttError as exc:
        sys.stderr.write(f"gateway ctl edge: broker {config.mqtt.host}:{config.mqtt.port}: {exc}\n")
        return EXIT_UNREACHABLE
    if reply is None:
        sys.stderr.write(f"gateway ctl edge: no reply from {args.site} within {args.wait}s\n")
        return EXIT_REFUSED
    sys.stdout.write(json.dumps(reply, ensure_ascii=False, indent=2) + "\n")
    return 0 if reply.get("ok") else EXIT_REFUSED


async def _publish(config: EdgeOpsConfig, topic: str, data: bytes, *, retain: bool) -> None:
    async with client_for(config.mqtt, None) as client:
        await client.publish(topic, data, qos=1, retain=retain)


async def _command(
    config: EdgeOpsConfig, topics: Topics, data: bytes, request_id: str, wait_s: float
) -> dict[str, object] | None:
    async with client_for(config.mqtt, None) as client:
        await client.subscribe(topics.cmd_reply, qos=1)  # before publishing: the reply cannot be missed
        await client.publish(topics.cmd, data, qos=1)
        try:
            async with asyncio.timeout(wait_s):
                async for message in client.messages:
                    try:
                        reply = json.loads(message.payload if isinstance(message.payload, bytes) else b"")
                    except ValueError:
                        continue
                    if isinstance(reply, dict) and reply.get("id") == request_id:
                        return reply
        except TimeoutError:
            return None
    return None
