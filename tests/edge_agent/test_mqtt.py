"""MQTT against a real mosquitto: desired state pushed over MQTT is applied and reported;
commands get replies; the broker is stopped and restarted while the agent runs and the telemetry
queued meanwhile arrives in order. Plus the on-disk queue on its own."""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest
import yaml

from edge_agent.agent import Agent
from edge_agent.config import AgentConfig
from edge_agent.mqtt import DiskQueue
from edge_agent.reconcile import satisfied
from gateway.cli import main as gateway_main
from tests.conftest import PROJECT_ROOT
from tests.edge_agent.conftest import (
    PROTO,
    Collector,
    GatedRelay,
    OpsKey,
    Pki,
    Topology,
    agent_config,
    eventually,
    make_ops_key,
    mqtt_section,
    observe,
    publish,
    site_desired,
    start_collector,
)
from tests.support.servers import MosquittoServer, free_port, require_binary, stop_process, wait_for_tcp


@pytest.mark.netns
async def test_desired_over_mqtt_is_applied_and_reported(
    topology: Topology,
    tmp_path: Path,
    mosquitto: MosquittoServer,
    collector_task: list[asyncio.Task[None]],
    ops_key: OpsKey,
) -> None:
    site = f"s{topology.site[:8]}"
    base = f"edge/{site}"
    control = {"public_keys": [str(ops_key.public_file)]}
    agent = Agent(
        agent_config(topology, tmp_path, site=site, mqtt=mqtt_section(mosquitto.port), control=control)
    )
    seen = await start_collector(
        collector_task, mosquitto.port, [f"{base}/state", f"{base}/events", f"{base}/cmd/reply"]
    )
    await agent.start()
    try:
        # Operations publish the desired state retained; the agent validates, applies, reports.
        desired = ops_key.sign(site, "desired", site_desired(4).model_dump(mode="json"))
        await publish(mosquitto.port, f"{base}/desired", desired, retain=True)

        async def reported() -> bool:
            states = seen.on(f"{base}/state")
            return bool(states) and states[-1].get("desired_version") == 4 and states[-1]["converged"]

        await eventually(reported, "state with desired_version 4")
        assert satisfied(await observe(topology.site), site_desired(), PROTO) == []
        state = seen.on(f"{base}/state")[-1]
        assert state["online"] is True and state["agent_version"]
        assert {
            "name": "br-lan",
            "kind": "bridge",
            "up": True,
            "mtu": 1500,
            "master": None,
            "managed": True,
        } in state["links"]
        assert any(
            r["dst"] == "10.166.8.0/24" and r["managed"] and r["proto"] == PROTO for r in state["routes"]
        )
        assert any(e["type"] == "desired_applied" and e["version"] == 4 for e in seen.on(f"{base}/events"))

        # The state is retained: a newcomer (the gateway's operations side) gets it at once.
        late = await start_collector(collector_task, mosquitto.port, ["edge/+/state"])
        await eventually(lambda: _has(late, f"{base}/state"), "retained state for a late subscriber")

        # An invalid document is refused whole, with the field named; nothing changes.
        bad = site_desired(5).model_dump(mode="json")
        bad["routes"][0]["gateway"] = "not-an-ip"
        await publish(mosquitto.port, f"{base}/desired", ops_key.sign(site, "desired", bad))

        async def refused() -> bool:
            return any(e["type"] == "desired_refused" for e in seen.on(f"{base}/events"))

        await eventually(refused, "desired_refused event")
        event = next(e for e in seen.on(f"{base}/events") if e["type"] == "desired_refused")
        assert "routes[0].gateway" in event["problems"][0]
        assert agent.applied is not None and agent.applied.version == 4

        # Commands carry request ids; replies echo them.
        await publish(
            mosquitto.port, f"{base}/cmd", ops_key.sign(site, "cmd", {"id": "req-1", "command": "reconcile"})
        )
        await publish(
            mosquitto.port, f"{base}/cmd", ops_key.sign(site, "cmd", {"id": "req-2", "command": "bogus"})
        )

        async def replied() -> bool:
            return {r["id"] for r in seen.on(f"{base}/cmd/reply")} >= {"req-1", "req-2"}

        await eventually(replied, "command replies")
        replies = {r["id"]: r for r in seen.on(f"{base}/cmd/reply")}
        assert replies["req-1"]["ok"] is True and replies["req-1"]["result"]["actions"] == []
        assert replies["req-2"]["ok"] is False and "unknown command" in replies["req-2"]["error"]
    finally:
        await agent.stop()
        await publish(mosquitto.port, f"{base}/desired", b"", retain=True)  # clear the retained message
    assert seen.on(f"{base}/state")[-1]["online"] is False  # a clean stop says so itself


@pytest.mark.netns
async def test_unsigned_forged_expired_replayed_and_other_site_control_is_refused(
    topology: Topology,
    tmp_path: Path,
    mosquitto: MosquittoServer,
    collector_task: list[asyncio.Task[None]],
    ops_key: OpsKey,
) -> None:
    site = f"g{topology.site[:8]}"
    base = f"edge/{site}"
    control = {"public_keys": [str(ops_key.public_file)]}
    agent = Agent(
        agent_config(topology, tmp_path / "s", site=site, mqtt=mqtt_section(mosquitto.port), control=control)
    )
    seen = await start_collector(collector_task, mosquitto.port, [f"{base}/events", f"{base}/cmd/reply"])
    intruder = make_ops_key(tmp_path, "intruder")
    older = ops_key.sign(site, "desired", site_desired(1).model_dump(mode="json"))
    newer = ops_key.sign(site, "desired", site_desired(2).model_dump(mode="json"))
    command = ops_key.sign(site, "cmd", {"id": "once", "command": "report"})
    await agent.start()
    try:
        assert agent.mqtt is not None
        await asyncio.wait_for(agent.mqtt.connected.wait(), 10)  # subscribed: nothing published is lost
        doc = site_desired(3).model_dump(mode="json")
        for payload in (
            json.dumps(doc).encode(),  # unsigned
            intruder.sign(site, "desired", doc),  # signed, but not by operations
            ops_key.sign(site, "desired", doc, now=time.time() - 3600, lifetime_s=60),  # expired
            ops_key.sign("another-site", "desired", doc),  # valid for another box only
        ):
            await publish(mosquitto.port, f"{base}/desired", payload)
        await publish(mosquitto.port, f"{base}/desired", newer)
        await publish(mosquitto.port, f"{base}/desired", older)  # captured earlier, replayed now
        await publish(mosquitto.port, f"{base}/cmd", command)
        await publish(mosquitto.port, f"{base}/cmd", command)  # the same command replayed

        def refusals() -> list[str]:
            return [e["reason"] for e in seen.on(f"{base}/events") if e["type"] == "control_refused"]

        async def all_reported() -> bool:
            return len(refusals()) >= 6 and bool(seen.on(f"{base}/cmd/reply"))

        await eventually(all_reported, "six refusals and one reply")
        assert refusals() == ["unsigned", "bad_signature", "expired", "wrong_site", "replayed", "replayed"]
        assert agent.applied is not None and agent.applied.version == 2
        applied = [e["version"] for e in seen.on(f"{base}/events") if e["type"] == "desired_applied"]
        assert applied == [2]
        assert [r["id"] for r in seen.on(f"{base}/cmd/reply")] == ["once"]
    finally:
        await agent.stop()
    # A restart remembers what was accepted: the replay is still refused.
    again = Agent(
        agent_config(topology, tmp_path / "s", site=site, mqtt=mqtt_section(mosquitto.port), control=control)
    )
    await again.start()
    try:
        assert again.mqtt is not None
        await asyncio.wait_for(again.mqtt.connected.wait(), 10)
        count = len(seen.on(f"{base}/events"))
        await publish(mosquitto.port, f"{base}/cmd", command)

        async def refused_after_restart() -> bool:
            return any(e["type"] == "control_refused" for e in seen.on(f"{base}/events")[count:])

        await eventually(refused_after_restart, "replay refused after a restart")
    finally:
        await again.stop()


@pytest.mark.netns
async def test_gateway_ctl_edge_push_and_cmd_sign_what_the_agent_accepts(
    topology: Topology,
    tmp_path: Path,
    mosquitto: MosquittoServer,
    ops_key: OpsKey,
    capsys: pytest.CaptureFixture[str],
) -> None:
    site = f"c{topology.site[:8]}"
    control = {"public_keys": [str(ops_key.public_file)]}
    agent = Agent(
        agent_config(topology, tmp_path, site=site, mqtt=mqtt_section(mosquitto.port), control=control)
    )
    gateway_yaml = tmp_path / "gateway.yaml"
    edge = {"mqtt": mqtt_section(mosquitto.port), "signing_key": str(ops_key.private_file)}
    gateway_yaml.write_text(yaml.safe_dump({"edge": edge}), encoding="utf-8")
    desired_yaml = tmp_path / "desired.yaml"
    desired_yaml.write_text(yaml.safe_dump(site_desired(7).model_dump(mode="json")), encoding="utf-8")
    ctl = ["ctl", "edge", "--config", str(gateway_yaml)]
    await agent.start()
    try:
        assert agent.mqtt is not None
        await asyncio.wait_for(agent.mqtt.connected.wait(), 10)
        assert await asyncio.to_thread(gateway_main, [*ctl, "push", site, str(desired_yaml)]) == 0

        async def applied() -> bool:
            return agent.applied is not None and agent.applied.version == 7

        await eventually(applied, "pushed version applied")
        assert await asyncio.to_thread(gateway_main, [*ctl, "cmd", site, "report", "--wait", "10"]) == 0
        assert json.loads(capsys.readouterr().out.split("\n", 1)[1])["result"]["desired_version"] == 7
    finally:
        await agent.stop()
        await publish(mosquitto.port, f"edge/{site}/desired", b"", retain=True)
    without_key = tmp_path / "nokey.yaml"
    without_key.write_text(yaml.safe_dump({"edge": {"mqtt": mqtt_section(mosquitto.port)}}), encoding="utf-8")
    code = gateway_main(["ctl", "edge", "--config", str(without_key), "push", site, str(desired_yaml)])
    assert code == 2 and "edge.signing_key" in capsys.readouterr().err


async def _has(collector: Collector, topic: str) -> bool:
    return bool(collector.on(topic))


@pytest.mark.netns
async def test_broker_restart_delivers_queued_telemetry_in_order(
    topology: Topology, tmp_path: Path, mosquitto: MosquittoServer, collector_task: list[asyncio.Task[None]]
) -> None:
    site = f"r{topology.site[:8]}"
    base = f"edge/{site}"
    relay = GatedRelay(mosquitto.port)
    await relay.open()
    agent = Agent(agent_config(topology, tmp_path, site=site, mqtt=mqtt_section(relay.port)))
    await agent.start()
    assert agent.mqtt is not None
    try:
        await asyncio.wait_for(agent.mqtt.connected.wait(), 10)
        await agent.set_desired(site_desired(), "test")
        mosquitto.stop()

        async def disconnected() -> bool:
            assert agent.mqtt is not None
            return not agent.mqtt.connected.is_set()

        await eventually(disconnected, "agent notices the broker is gone")
        # Telemetry while the broker is down: a real heal, and numbered markers.
        heals = agent.heals
        topology.site_ip("addr", "del", "192.168.10.1/24", "dev", "br-lan")

        async def healed() -> bool:
            return agent.heals > heals

        await eventually(healed, "heal while offline")
        for n in range(30):
            agent.event("marker", n=n)
        assert len(agent.mqtt.queue) >= 31
        await relay.close()  # hold the agent back until the test's subscriber is in place
        mosquitto.start()
        seen = await start_collector(collector_task, mosquitto.port, [f"{base}/events", f"{base}/state"])
        await relay.open()

        async def delivered() -> bool:
            return len([e for e in seen.on(f"{base}/events") if e["type"] == "marker"]) >= 30

        await eventually(delivered, "queued markers delivered")
        events = seen.on(f"{base}/events")
        markers = [e["n"] for e in events if e["type"] == "marker"]
        assert markers == list(range(30))
        seqs = [e["seq"] for e in events]
        assert seqs == sorted(seqs)
        assert any(e["type"] == "healed" for e in events)
        assert events.index(next(e for e in events if e["type"] == "healed")) < events.index(
            next(e for e in events if e["type"] == "marker")
        )
        assert agent.mqtt.connections >= 2

        async def online_again() -> bool:
            states = seen.on(f"{base}/state")
            return bool(states) and states[-1]["online"] is True

        await eventually(online_again, "state republished after reconnect")
    finally:
        await agent.stop()
        await relay.stop()


async def test_agent_process_says_offline_on_stop_and_by_last_will_when_killed(
    tmp_path: Path, mosquitto: MosquittoServer, collector_task: list[asyncio.Task[None]]
) -> None:
    """`python -m edge_agent run`: SIGTERM stops it cleanly (exit 0, offline state published by the
    agent); a killed process sends no DISCONNECT, so the broker publishes the last will."""
    site = f"w{secrets.token_hex(4)}"
    config = tmp_path / "agent.yaml"
    doc = {"site": site, "state_dir": str(tmp_path / "state"), "mqtt": mqtt_section(mosquitto.port)}
    config.write_text(yaml.safe_dump(doc), encoding="utf-8")
    topic = f"edge/{site}/state"
    seen = await start_collector(collector_task, mosquitto.port, [topic])

    async def online() -> bool:
        return bool(seen.on(topic)) and seen.on(topic)[-1]["online"] is True

    async def offline() -> bool:
        return seen.on(topic)[-1]["online"] is False

    for sig in (signal.SIGTERM, signal.SIGKILL):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "edge_agent",
            "run",
            "--config",
            str(config),
            cwd=PROJECT_ROOT,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            await eventually(online, "agent online")
            proc.send_signal(sig)
            code = await proc.wait()
            await eventually(offline, f"offline state after {sig.name}")
            assert code == (0 if sig is signal.SIGTERM else -signal.SIGKILL)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    await publish(mosquitto.port, topic, b"", retain=True)


def test_disk_queue_is_ordered_bounded_durable_and_coalesces(tmp_path: Path) -> None:
    queue = DiskQueue(tmp_path / "q", max_items=5)
    for n in range(3):
        queue.put("edge/x/events", f'{{"n": {n}}}'.encode())
    queue.put("edge/x/state", b'{"v": 1}', retain=True, coalesce=True)
    queue.put("edge/x/state", b'{"v": 2}', retain=True, coalesce=True)  # replaces v1
    assert len(queue) == 4
    queue.put("edge/x/events", b'{"n": 3}')
    queue.put("edge/x/events", b'{"n": 4}')  # full: the oldest event is dropped and counted
    assert queue.dropped == 1
    reopened = DiskQueue(tmp_path / "q", max_items=5)  # an agent restart keeps the queue
    out = []
    while (item := reopened.peek()) is not None:
        out.append((item.topic, item.payload, item.retain))
        reopened.remove(item.seq)
    assert out == [
        ("edge/x/events", b'{"n": 1}', False),
        ("edge/x/events", b'{"n": 2}', False),
        ("edge/x/state", b'{"v": 2}', True),
        ("edge/x/events", b'{"n": 3}', False),
        ("edge/x/events", b'{"n": 4}', False),
    ]
    assert DiskQueue(tmp_path / "q", max_items=5).peek() is None


def test_disk_queue_sets_aside_an_unreadable_file(tmp_path: Path) -> None:
    queue = DiskQueue(tmp_path, max_items=10)
    queue.put("t", b'{"a": 1}')
    (tmp_path / f"{99:020d}.msg").write_bytes(b"garbage")
    reopened = DiskQueue(tmp_path, max_items=10)
    assert len(reopened) == 1
    assert (tmp_path / f"{99:020d}.bad").exists()


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A mosquitto with TLS and a password file (user ``edge``), on a free port; stopped by PID."""
    broker_dir = tmp_path / "broker"
    broker_dir.mkdir()
    Pki(broker_dir).issue("server", "127.0.0.1", ip="127.0.0.1")
    subprocess.run(
        [require_binary("mosquitto_passwd"), "-b", "-c", "passwd", "edge", "s3cret"],
        cwd=broker_dir,
        check=True,
        capture_output=True,
    )
    port = free_port()
    conf = broker_dir / "mosquitto.conf"
    files = {"cafile": "ca.crt", "certfile": "server.crt", "keyfile": "server.key", "password_file": "passwd"}
    lines = [f"listener {port} 127.0.0.1", "allow_anonymous false", "user root", "persistence false"]
    lines += [f"{key} {broker_dir / name}" for key, name in files.items()]
    conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
    broker = subprocess.Popen(
        [require_binary("mosquitto"), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_tcp("127.0.0.1", port)
        yield port, broker_dir / "ca.crt"
    finally:
        stop_process(broker)


async def test_tls_and_password(tmp_path: Path, tls_broker: tuple[int, Path]) -> None:
    port, ca_file = tls_broker
    tls = aiomqtt.TLSParameters(ca_certs=str(ca_file))
    with pytest.raises(aiomqtt.MqttError):  # anonymous clients are refused
        async with aiomqtt.Client("127.0.0.1", port, tls_params=tls):
            pass
    site = f"t{secrets.token_hex(4)}"
    mqtt = {
        **mqtt_section(port),
        "username": "edge",
        "password": "s3cret",
        "tls": {"ca_file": str(ca_file)},
    }
    agent = Agent(
        AgentConfig.model_validate({"site": site, "state_dir": str(tmp_path / "state"), "mqtt": mqtt})
    )
    await agent.start()
    try:
        assert agent.mqtt is not None
        await asyncio.wait_for(agent.mqtt.connected.wait(), 15)
        async with aiomqtt.Client("127.0.0.1", port, username="edge", password="s3cret", tls_params=tls) as c:
            await c.subscribe(f"edge/{site}/state", qos=1)
            async for message in c.messages:  # the retained state
                assert isinstance(message.payload, bytes)
                assert json.loads(message.payload)["site"] == site
                break
    finally:
        await agent.stop()


@pytest.mark.netns
async def test_commands_run_one_at_a_time_from_a_bounded_queue(
    topology: Topology,
    tmp_path: Path,
    mosquitto: MosquittoServer,
    collector_task: list[asyncio.Task[None]],
    ops_key: OpsKey,
) -> None:
    """Queue of one: while a slow check runs (nobody answers on the LAN), one more command waits
    and a third is refused as busy, whichever of them arrives while the queue is full."""
    site = f"q{topology.site[:8]}"
    base = f"edge/{site}"
    silent = {"name": "silent", "role": "device", "address": "192.168.10.99", "probes": ["icmp"]}
    agent = Agent(
        agent_config(
            topology,
            tmp_path,
            site=site,
            mqtt=mqtt_section(mosquitto.port),
            control={"public_keys": [str(ops_key.public_file)], "queue_max": 1},
            checks={"interval_s": 3600, "count": 2, "timeout_s": 1.0, "targets": [silent]},
        )
    )
    seen = await start_collector(collector_task, mosquitto.port, [f"{base}/cmd/reply", f"{base}/events"])
    await agent.start()
    try:
        assert agent.mqtt is not None
        await agent.set_desired(site_desired(), "test")
        await asyncio.wait_for(agent.mqtt.connected.wait(), 10)
        for n in range(3):
            body = {"id": f"c{n}", "command": "check"}
            await publish(mosquitto.port, f"{base}/cmd", ops_key.sign(site, "cmd", body))

        async def all_replied() -> bool:
            return len(seen.on(f"{base}/cmd/reply")) >= 3

        await eventually(all_replied, "three replies")
        replies = seen.on(f"{base}/cmd/reply")
        busy = [r for r in replies if not r["ok"]]
        assert len(busy) == 1 and "queue full" in busy[0]["error"], replies
        done = [r["id"] for r in replies if r["ok"]]
        assert done == sorted(done) and len(done) == 2  # in order, one after the other
        assert [e["id"] for e in seen.on(f"{base}/events") if e["type"] == "command_refused"] == [
            busy[0]["id"]
        ]
    finally:
        await agent.stop()
