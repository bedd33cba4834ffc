"""Real netlink in network namespaces: apply, break from outside, heal; foreign state survives;
refusal, rollback and restart behaviour."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.agent import Agent, ApplyFailedError, DesiredRefusedError
from edge_agent.model import LinkKind
from edge_agent.netlink import NetlinkAdapter
from edge_agent.reconcile import ObservedAddress, satisfied
from edge_agent.store import StateStore
from tests.edge_agent.conftest import PROTO, Topology, agent_config, eventually, observe, site_desired

pytestmark = pytest.mark.netns


def add_foreign(topo: Topology) -> None:
    """Things another tool configured: the agent must leave them alone."""
    topo.site_ip("addr", "add", "10.99.0.1/24", "dev", "wan0")
    topo.site_ip("link", "set", "wan0", "up")
    topo.site_ip("route", "add", "198.51.100.0/24", "via", "10.99.0.254", "proto", "static")
    topo.site_ip("link", "add", "fveth0", "type", "veth", "peer", "name", "fveth1")


def foreign_intact(topo: Topology) -> bool:
    addrs = topo.site_ip("-4", "-o", "addr", "show", "dev", "wan0").stdout
    routes = topo.site_ip("route", "show", "198.51.100.0/24").stdout
    links = topo.site_ip("-o", "link", "show").stdout
    return "10.99.0.1/24" in addrs and "via 10.99.0.254" in routes and "fveth0" in links and "fveth1" in links


async def test_apply_converges_and_keeps_foreign_state(topology: Topology, tmp_path: Path) -> None:
    add_foreign(topology)
    agent = Agent(agent_config(topology, tmp_path))
    await agent.start()
    try:
        assert await agent.set_desired(site_desired(), "test") == "applied"
        observed = await observe(topology.site)
        assert satisfied(observed, site_desired(), PROTO) == []
        assert agent.unresolved == ()
        assert foreign_intact(topology)
        # Our routes carry our protocol number; the kernel shows it by number.
        assert "proto 190" in topology.site_ip("route", "show", "10.166.8.0/24").stdout
        assert "10.20.0.0/16 via 10.166.0.1" in topology.site_ip("route", "show", "table", "100").stdout
        # Applying the same document again changes nothing.
        assert await agent.set_desired(site_desired(), "test") == "unchanged"
    finally:
        await agent.stop()


@pytest.mark.parametrize(
    "breakage",
    [
        ["addr", "del", "10.166.0.2/30", "dev", "wan0"],
        ["link", "set", "br-lan", "down"],
        ["link", "set", "wan0", "down"],
        ["route", "del", "10.166.8.0/24", "dev", "tun0", "metric", "10"],
        ["link", "del", "tun0"],
        ["link", "set", "wan0", "mtu", "1300"],
        ["link", "set", "lan0", "nomaster"],
    ],
    ids=["addr-del", "bridge-down", "uplink-down", "route-del", "tunnel-del", "mtu", "unbridged"],
)
async def test_break_from_outside_is_healed(topology: Topology, tmp_path: Path, breakage: list[str]) -> None:
    add_foreign(topology)
    agent = Agent(agent_config(topology, tmp_path))
    await agent.start()
    try:
        await agent.set_desired(site_desired(), "test")
        heals = agent.heals
        topology.site_ip(*breakage)

        async def healed() -> bool:
            return (
                agent.heals > heals and satisfied(await observe(topology.site), site_desired(), PROTO) == []
            )

        await eventually(healed, f"healed after `ip {' '.join(breakage)}`")
        assert agent.last_heal_ms is not None
        if breakage[:3] != ["link", "set", "wan0"]:  # a downed uplink takes foreign routes with it
            assert foreign_intact(topology)
    finally:
        await agent.stop()


async def test_removed_items_are_deleted_but_foreign_ones_survive(topology: Topology, tmp_path: Path) -> None:
    add_foreign(topology)
    agent = Agent(agent_config(topology, tmp_path))
    await agent.start()
    try:
        await agent.set_desired(site_desired(), "test")
        smaller = site_desired(
            2,
            links=[{"name": "wan0", "mtu": 1400}],
            addresses=[{"ifname": "wan0", "address": "10.166.0.2/30"}],
            routes=[{"dst": "198.51.100.13/32", "gateway": "10.166.0.1"}],
        )
        await agent.set_desired(smaller, "test")
        observed = await observe(topology.site)
        assert "br-lan" not in observed.links and "tun0" not in observed.links
        assert {r.dst.exploded for r in observed.routes if r.proto == PROTO} == {"198.51.100.13/32"}
        assert foreign_intact(topology)
        # An address we did not create is never deleted, even when it was once in the desired state.
        assert (
            ObservedAddress("wan0", __import__("ipaddress").IPv4Interface("10.99.0.1/24"))
            in observed.addresses
        )
    finally:
        await agent.stop()


async def test_failure_half_way_rolls_back(topology: Topology, tmp_path: Path) -> None:
    agent = Agent(agent_config(topology, tmp_path))
    await agent.start()
    try:
        await agent.set_desired(site_desired(), "test")
        before = await observe(topology.site)
        links = [
            *site_desired().model_dump(mode="json")["links"],
            {"name": "br-new", "kind": "bridge"},
            # Valid on paper, but the kernel refuses a second VXLAN with tun0's VNI and port,
            # after br-new was already created.
            {"name": "vx-bad", "kind": "vxlan", "vni": 166},
        ]
        with pytest.raises(ApplyFailedError, match="vx-bad"):
            await agent.set_desired(site_desired(2, links=links), "test")
        after = await observe(topology.site)
        assert "br-new" not in after.links and "vx-bad" not in after.links
        assert satisfied(after, site_desired(), PROTO) == []
        assert after.links.keys() == before.links.keys()
        assert agent.applied is not None and agent.applied.version == 1
        saved = StateStore(tmp_path).load()
        assert saved is not None and saved.desired.version == 1
        assert "br-new" not in saved.owned.links
    finally:
        await agent.stop()


async def test_refusals_change_nothing(topology: Topology, tmp_path: Path) -> None:
    agent = Agent(agent_config(topology, tmp_path))
    await agent.start()
    try:
        await agent.set_desired(site_desired(), "test")
        before = await observe(topology.site)
        with pytest.raises(DesiredRefusedError, match="not newer"):
            await agent.set_desired(site_desired(1, routes=[]), "test")
        adapter = NetlinkAdapter(topology.site, PROTO)
        try:
            unsupported = await adapter.unsupported_kinds({LinkKind.VLAN, LinkKind.GRE, LinkKind.VXLAN})
        finally:
            adapter.close()
        if not unsupported:
            pytest.skip("this kernel supports vlan and gre: nothing to refuse")
        kind = unsupported[0]
        extra = {"vlan_id": 5, "parent": "wan0"} if kind == "vlan" else {"remote": "198.51.100.13"}
        links = [*site_desired().model_dump(mode="json")["links"], {"name": "x0", "kind": kind, **extra}]
        with pytest.raises(DesiredRefusedError, match=f"does not support link kind.*{kind}"):
            await agent.set_desired(site_desired(2, links=links), "test")
        assert await observe(topology.site) == before
        assert agent.applied is not None and agent.applied.version == 1
    finally:
        await agent.stop()


async def test_saved_state_is_reapplied_at_start(topology: Topology, tmp_path: Path) -> None:
    first = Agent(agent_config(topology, tmp_path))
    await first.start()
    await first.set_desired(site_desired(), "test")
    await first.stop()
    # While no agent runs (a reboot), the configuration is lost.
    topology.site_ip("link", "del", "br-lan")
    topology.site_ip("link", "del", "tun0")
    topology.site_ip("addr", "flush", "dev", "wan0")
    assert satisfied(await observe(topology.site), site_desired(), PROTO) != []
    second = Agent(agent_config(topology, tmp_path))  # no desired in its config: only the saved one
    await second.start()
    try:
        assert second.applied == site_desired()
        assert satisfied(await observe(topology.site), site_desired(), PROTO) == []
        assert {"br-lan", "tun0"} <= second.owned.links
    finally:
        await second.stop()


async def test_local_desired_in_config_is_applied_at_start(topology: Topology, tmp_path: Path) -> None:
    config = agent_config(topology, tmp_path, desired=site_desired(3).model_dump(mode="json"))
    agent = Agent(config)
    await agent.start()
    try:
        assert agent.applied is not None and agent.applied.version == 3
        assert satisfied(await observe(topology.site), site_desired(), PROTO) == []
    finally:
        await agent.stop()


async def test_missing_port_is_reported_not_fatal(topology: Topology, tmp_path: Path) -> None:
    links = [*site_desired().model_dump(mode="json")["links"], {"name": "wan9"}]
    agent = Agent(agent_config(topology, tmp_path))
    await agent.start()
    try:
        await agent.set_desired(site_desired(links=links), "test")
        assert agent.unresolved == ("link wan9: not present (an existing port is expected)",)
        assert agent.state()["converged"] is False
    finally:
        await agent.stop()
