"""Commit confirmed in network namespaces, pushed over a real mosquitto and signed: a desired state
that takes the WAN port down, or sends the default route into the tunnel, cuts the site off from
the core; the core check never passes, and the agent goes back to the last confirmed state by
itself. The rollback is reported once the management path is back (the test holds it cut with
a relay). A good state is confirmed by the core check, or by a signed ``confirm`` command."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

import pytest

from edge_agent.agent import Agent
from edge_agent.config import AgentConfig
from edge_agent.model import DesiredState
from edge_agent.reconcile import satisfied
from tests.edge_agent.conftest import (
    CORE_ADDRESS,
    PROTO,
    GatedRelay,
    OpsKey,
    Topology,
    agent_config,
    eventually,
    mqtt_section,
    observe,
    publish,
    site_desired,
    start_collector,
)
from tests.support.servers import MosquittoServer

CORE_CHECK = {
    "interval_s": 3600,
    "count": 1,
    "timeout_s": 0.3,
    "targets": [{"name": "core", "role": "core", "address": CORE_ADDRESS, "probes": ["icmp"]}],
}
# The tunnel keeps its underlay route to the core; everything else leaves by the interconnect.
GOOD_ROUTES = [
    {"dst": f"{CORE_ADDRESS}/32", "gateway": "10.166.0.1"},
    {"dst": "default", "gateway": "10.166.0.1"},
    {"dst": "10.166.8.0/24", "dev": "tun0", "metric": 10},
]


def good(version: int) -> DesiredState:
    return site_desired(version, routes=GOOD_ROUTES)


def wan_down(version: int) -> DesiredState:
    doc = good(version).model_dump(mode="json")
    doc["links"][0]["state"] = "down"
    doc["routes"] = [r for r in doc["routes"] if r.get("gateway") is None]  # they would need the WAN
    return DesiredState.model_validate(doc)


def default_into_tunnel(version: int) -> DesiredState:
    """The core address loses its own route and the default goes into the tunnel, whose
    underlay then points into itself: nothing reaches the core."""
    return site_desired(
        version,
        routes=[{"dst": "default", "dev": "tun0"}, {"dst": "10.166.8.0/24", "dev": "tun0", "metric": 10}],
    )


def events_of(seen: Any, site: str, kind: str) -> list[dict[str, Any]]:
    return [e for e in seen.on(f"edge/{site}/events") if e["type"] == kind]


@pytest.mark.netns
async def test_a_push_that_cuts_the_site_off_is_rolled_back_by_itself_and_reported_when_back(
    topology: Topology,
    tmp_path: Path,
    mosquitto: MosquittoServer,
    collector_task: list[asyncio.Task[None]],
    ops_key: OpsKey,
) -> None:
    site = f"k{topology.site[:8]}"
    relay = GatedRelay(mosquitto.port)
    await relay.open()
    config = agent_config(
        topology,
        tmp_path,
        site=site,
        mqtt=mqtt_section(relay.port),
        control={"public_keys": [str(ops_key.public_file)]},
        checks=CORE_CHECK,
        confirm={"timeout_s": 3, "by": ["core_check", "command"], "check_interval_s": 0.2},
    )
    seen = await start_collector(collector_task, mosquitto.port, [f"edge/{site}/events"])
    agent = Agent(config)
    await agent.start()
    try:
        assert agent.mqtt is not None
        await agent.set_desired(good(1), "test")  # the box's own provisioning: not on trial
        await asyncio.wait_for(agent.mqtt.connected.wait(), 10)

        async def push(desired: DesiredState) -> None:
            body = desired.model_dump(mode="json")
            await publish(mosquitto.port, f"edge/{site}/desired", ops_key.sign(site, "desired", body))

        # A good change is confirmed by the core check.
        await push(good(2))

        async def confirmed() -> bool:
            return any(e["version"] == 2 for e in events_of(seen, site, "commit_confirmed"))

        await eventually(confirmed, "version 2 confirmed")
        assert events_of(seen, site, "commit_confirmed")[0]["by"] == "core_check"
        assert agent.pending is None

        for bad in (wan_down(3), default_into_tunnel(4)):
            await push(bad)

            async def on_trial(version: int = bad.version) -> bool:
                return agent.applied is not None and agent.applied.version == version

            await eventually(on_trial, f"version {bad.version} applied")
            assert satisfied(await observe(topology.site), bad, PROTO) == []  # really cut off
            await relay.stop()  # the management path is cut too, as it would be on a real box

            async def rolled_back() -> bool:
                return agent.applied is not None and agent.applied.version == 2 and agent.pending is None

            await eventually(rolled_back, f"version {bad.version} rolled back")
            assert satisfied(await observe(topology.site), good(2), PROTO) == []
            assert (await agent.checker.run())[0].ok  # the core answers again
            await relay.open()

            async def reported(version: int = bad.version) -> bool:
                return any(e["version"] == version for e in events_of(seen, site, "commit_rolled_back"))

            await eventually(reported, f"rollback of {bad.version} reported once back")
            event = next(
                e for e in events_of(seen, site, "commit_rolled_back") if e["version"] == bad.version
            )
            assert event["rolled_back_to"] == 2 and event["rolled_back_at"] >= event["applied_at"] + 3

        # The rolled-back version is not taken again, even re-signed.
        await push(wan_down(4))

        async def refused() -> bool:
            return any(e["version"] == 4 for e in events_of(seen, site, "desired_refused"))

        await eventually(refused, "version 4 refused")
        assert agent.applied is not None and agent.applied.version == 2
    finally:
        await agent.stop()
        await relay.stop()


@pytest.mark.netns
async def test_confirm_command_keeps_a_change_and_silence_rolls_it_back(
    topology: Topology,
    tmp_path: Path,
    mosquitto: MosquittoServer,
    collector_task: list[asyncio.Task[None]],
    ops_key: OpsKey,
) -> None:
    site = f"m{topology.site[:8]}"
    config = agent_config(
        topology,
        tmp_path,
        site=site,
        mqtt=mqtt_section(mosquitto.port),
        control={"public_keys": [str(ops_key.public_file)]},
        confirm={"timeout_s": 2, "by": ["command"], "check_interval_s": 0.2},
    )
    seen = await start_collector(
        collector_task, mosquitto.port, [f"edge/{site}/events", f"edge/{site}/cmd/reply"]
    )
    agent = Agent(config)
    await agent.start()
    try:
        assert agent.mqtt is not None
        await agent.set_desired(good(1), "test")
        await asyncio.wait_for(agent.mqtt.connected.wait(), 10)
        await publish(
            mosquitto.port,
            f"edge/{site}/desired",
            ops_key.sign(site, "desired", good(2).model_dump(mode="json")),
        )

        async def on_trial() -> bool:
            return agent.pending is not None and agent.pending.version == 2

        await eventually(on_trial, "version 2 on trial")
        await publish(
            mosquitto.port, f"edge/{site}/cmd", ops_key.sign(site, "cmd", {"id": "c1", "command": "confirm"})
        )

        async def replied() -> bool:
            return bool(seen.on(f"edge/{site}/cmd/reply"))

        await eventually(replied, "reply to confirm")
        assert seen.on(f"edge/{site}/cmd/reply")[0]["result"] == {"version": 2, "outcome": "confirm"}
        assert events_of(seen, site, "commit_confirmed")[0]["by"] == "command"

        # Nobody confirms version 3: back to 2 after the deadline, though nothing is broken.
        await publish(
            mosquitto.port,
            f"edge/{site}/desired",
            ops_key.sign(site, "desired", good(3).model_dump(mode="json")),
        )

        async def rolled_back() -> bool:
            return bool(events_of(seen, site, "commit_rolled_back"))

        await eventually(rolled_back, "version 3 rolled back")
        assert agent.applied is not None and agent.applied.version == 2
        assert satisfied(await observe(topology.site), good(2), PROTO) == []
    finally:
        await agent.stop()


async def test_broker_acknowledgement_confirms_when_the_session_rides_the_managed_network(
    tmp_path: Path, mosquitto: MosquittoServer, collector_task: list[asyncio.Task[None]], ops_key: OpsKey
) -> None:
    """Without `netns:` the MQTT session uses the box's own network, so the broker's PUBACK for a
    message queued after the change proves the management path still works. (Empty desired
    states: nothing on this host is changed.)"""
    site = f"b{secrets.token_hex(4)}"
    config = AgentConfig.model_validate(
        {
            "site": site,
            "state_dir": str(tmp_path),
            "mqtt": mqtt_section(mosquitto.port),
            "control": {"public_keys": [str(ops_key.public_file)]},
            "confirm": {"timeout_s": 30, "by": ["broker"], "check_interval_s": 0.1},
            "reconcile": {"rtproto": 249},  # owns no route of this host (the state is empty anyway)
        }
    )
    seen = await start_collector(collector_task, mosquitto.port, [f"edge/{site}/events"])
    agent = Agent(config)
    await agent.start()
    try:
        assert agent.mqtt is not None
        await agent.set_desired(DesiredState(version=1), "test")
        await asyncio.wait_for(agent.mqtt.connected.wait(), 10)
        body = DesiredState(version=2).model_dump(mode="json")
        await publish(mosquitto.port, f"edge/{site}/desired", ops_key.sign(site, "desired", body))

        async def confirmed() -> bool:
            return bool(events_of(seen, site, "commit_confirmed"))

        await eventually(confirmed, "confirmed by the broker")
        event = events_of(seen, site, "commit_confirmed")[0]
        assert event["version"] == 2 and event["by"] == "broker"
        assert agent.applied == DesiredState(version=2) and agent.pending is None
    finally:
        await agent.stop()
