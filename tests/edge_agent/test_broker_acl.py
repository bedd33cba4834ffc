"""The shipped broker configuration (deploy/mosquitto/) run by a real mosquitto: TLS with client
certificates generated here, identities from the certificate CN, per-site ACLs. Only the port, the
file paths and the run-as user are replaced.

Negative checks are ordered, never timed: a client's publishes are handled in order, so once a
later allowed message has arrived, an earlier forbidden one would have arrived too."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import pytest

from edge_agent.agent import Agent
from edge_agent.config import AgentConfig
from tests.conftest import PROJECT_ROOT
from tests.edge_agent.conftest import OpsKey, Pki, eventually
from tests.support.servers import free_port, require_binary, stop_process, wait_for_tcp

DEPLOY = PROJECT_ROOT / "deploy" / "mosquitto"


@dataclass
class AclBroker:
    port: int
    pki: Pki

    def tls(self, identity: str | None) -> aiomqtt.TLSParameters:
        if identity is None:
            return aiomqtt.TLSParameters(ca_certs=str(self.pki.ca), cert_reqs=ssl.CERT_REQUIRED)
        crt, key = self.pki.workdir / f"{identity}.crt", self.pki.workdir / f"{identity}.key"
        if not crt.exists():
            self.pki.issue(identity, identity)
        return aiomqtt.TLSParameters(
            ca_certs=str(self.pki.ca), certfile=str(crt), keyfile=str(key), cert_reqs=ssl.CERT_REQUIRED
        )

    def client(self, identity: str | None) -> aiomqtt.Client:
        return aiomqtt.Client("127.0.0.1", self.port, tls_params=self.tls(identity), timeout=5)


@pytest.fixture
def acl_broker(tmp_path: Path) -> Iterator[AclBroker]:
    edge_dir = tmp_path / "edge"
    edge_dir.mkdir()
    pki = Pki(edge_dir)
    pki.issue("broker", "127.0.0.1", ip="127.0.0.1")
    (edge_dir / "edge.acl").write_text((DEPLOY / "edge.acl").read_text(encoding="utf-8"), encoding="utf-8")
    port = free_port()
    conf = (DEPLOY / "mosquitto.conf").read_text(encoding="utf-8")
    assert "listener 8883\n" in conf and "persistence true\n" in conf
    conf = conf.replace("listener 8883\n", f"listener {port} 127.0.0.1\n")
    conf = conf.replace("/etc/mosquitto/edge/", f"{edge_dir}/").replace(
        "persistence true", "persistence false"
    )
    conf += "user root\n"  # as root, mosquitto would otherwise drop to a user that cannot read tmp_path
    (tmp_path / "mosquitto.conf").write_text(conf, encoding="utf-8")
    broker = subprocess.Popen(
        [require_binary("mosquitto"), "-c", str(tmp_path / "mosquitto.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_tcp("127.0.0.1", port)
        yield AclBroker(port, pki)
    finally:
        stop_process(broker)


class Inbox:
    """Everything a connected client receives, in order."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.ready = asyncio.Event()

    def topics(self) -> list[str]:
        return [t for t, _ in self.messages]

    async def run(self, client: aiomqtt.Client, topics: list[str]) -> None:
        for topic in topics:
            await client.subscribe(topic, qos=1)
        self.ready.set()
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else b""
            self.messages.append((message.topic.value, payload))


@pytest.fixture
async def inboxes() -> AsyncIterator[list[asyncio.Task[None]]]:
    tasks: list[asyncio.Task[None]] = []
    yield tasks
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def listen(tasks: list[asyncio.Task[None]], client: aiomqtt.Client, topics: list[str]) -> Inbox:
    inbox = Inbox()
    tasks.append(asyncio.create_task(inbox.run(client, topics)))
    await asyncio.wait_for(inbox.ready.wait(), 10)
    return inbox


async def test_no_certificate_no_connection(acl_broker: AclBroker) -> None:
    with pytest.raises(aiomqtt.MqttError):
        async with acl_broker.client(None):
            pass


async def test_a_site_cannot_publish_another_sites_state_nor_read_its_control(
    acl_broker: AclBroker, inboxes: list[asyncio.Task[None]]
) -> None:
    async with acl_broker.client("ops") as ops, acl_broker.client("site-a") as site_a:
        seen_by_ops = await listen(inboxes, ops, ["edge/#"])
        # site-a forges site-b's state and tries operations' topics, then publishes its own events.
        await site_a.publish("edge/site-b/state", b'{"online": true, "forged": true}', qos=1)
        await site_a.publish("edge/site-b/events", b'{"forged": true}', qos=1)
        await site_a.publish("edge/site-a/desired", b'{"self-made": true}', qos=1)
        await site_a.publish("edge/site-a/cmd", b'{"self-made": true}', qos=1)
        await site_a.publish("edge/site-a/state", b'{"online": true}', qos=1)
        await site_a.publish("edge/site-a/events", b'{"marker": true}', qos=1)

        async def marker_seen() -> bool:
            return "edge/site-a/events" in seen_by_ops.topics()

        await eventually(marker_seen, "site-a's own event reaches operations")
        assert seen_by_ops.topics() == ["edge/site-a/state", "edge/site-a/events"]

        # site-a subscribes to site-b's control too; operations push to b, then to a.
        seen_by_a = await listen(inboxes, site_a, ["edge/site-b/desired", "edge/site-b/cmd", "edge/site-a/#"])
        await ops.publish("edge/site-b/desired", b'{"for": "b"}', qos=1)
        await ops.publish("edge/site-b/cmd", b'{"for": "b"}', qos=1)
        await ops.publish("edge/site-a/desired", b'{"for": "a"}', qos=1)

        async def own_desired_seen() -> bool:
            return "edge/site-a/desired" in seen_by_a.topics()

        await eventually(own_desired_seen, "site-a receives its own desired state")
        assert all(t.startswith("edge/site-a/") for t in seen_by_a.topics())


async def test_agent_with_a_site_certificate_reports_to_operations(
    acl_broker: AclBroker, tmp_path: Path, inboxes: list[asyncio.Task[None]], ops_key: OpsKey
) -> None:
    """The agent's own TLS client settings against the shipped broker: connected, its retained
    state (and last will) accepted on its own topic; a signed command answered through the ACL."""
    tls = acl_broker.tls("site-c")
    mqtt = {
        "host": "127.0.0.1",
        "port": acl_broker.port,
        "tls": {"ca_file": tls.ca_certs, "cert_file": tls.certfile, "key_file": tls.keyfile},
        "backoff_initial_s": 0.1,
        "backoff_max_s": 0.5,
    }
    config = {"site": "site-c", "state_dir": str(tmp_path / "state"), "mqtt": mqtt}
    config["control"] = {"public_keys": [str(ops_key.public_file)]}
    agent = Agent(AgentConfig.model_validate(config))
    async with acl_broker.client("ops") as ops:
        seen = await listen(inboxes, ops, ["edge/site-c/state", "edge/site-c/cmd/reply"])
        await agent.start()
        try:
            assert agent.mqtt is not None
            await asyncio.wait_for(agent.mqtt.connected.wait(), 15)
            await ops.publish(
                "edge/site-c/cmd", ops_key.sign("site-c", "cmd", {"id": "r1", "command": "report"})
            )

            async def replied() -> bool:
                return "edge/site-c/cmd/reply" in seen.topics()

            await eventually(replied, "reply to a signed command")
            states = [json.loads(p) for t, p in seen.messages if t == "edge/site-c/state"]
            assert states and states[-1]["online"] is True
        finally:
            await agent.stop()
