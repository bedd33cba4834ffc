"""Reachability: the three-step check (operator link, core, customer server) and SIP OPTIONS to
local devices, through real sockets inside the test namespaces; plus the pure helpers."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest

from edge_agent.agent import Agent
from edge_agent.checks import icmp_echo, parse_echo_reply, parse_sip_response, sip_options
from tests.edge_agent.conftest import CORE_ADDRESS, Topology, agent_config, sip_responder, site_desired

TARGETS = [
    {"name": "operator-link", "role": "operator_link", "address": "10.166.0.1", "probes": ["icmp", "udp"]},
    {"name": "core", "role": "core", "address": CORE_ADDRESS, "probes": ["sip", "icmp"]},
    {"name": "customer-server", "role": "customer_server", "address": "192.168.10.10", "probes": ["icmp"]},
    {"name": "acme-iad", "role": "device", "address": "192.168.10.20", "probes": ["sip"]},
    {"name": "acme-pbx", "role": "device", "address": "192.168.10.30", "probes": ["sip", "icmp"]},
]


@pytest.mark.netns
async def test_three_step_check_and_device_options(topology: Topology, tmp_path: Path) -> None:
    config = agent_config(
        topology, tmp_path, checks={"interval_s": 3600, "count": 2, "timeout_s": 0.5, "targets": TARGETS}
    )
    agent = Agent(config)
    await agent.start()
    try:
        await agent.set_desired(site_desired(), "test")
        async with (
            sip_responder(topology.core, CORE_ADDRESS) as core_sbc,
            sip_responder(topology.lan, "192.168.10.20", status=403) as iad,
        ):
            results = {r.name: r for r in await agent.run_checks()}
        assert core_sbc.requests >= 2 and iad.requests >= 2
        for name in ("operator-link", "core", "customer-server", "acme-iad"):
            assert results[name].ok, results[name].summary()
            for probe in results[name].summary()["probes"]:
                assert probe["loss_pct"] == 0.0 and probe["rtt_avg_ms"] >= 0
        core_sip = results["core"].summary()["probes"][0]
        assert core_sip["probe"] == "sip" and core_sip["sip_status"] == 200
        assert results["acme-iad"].summary()["probes"][0]["sip_status"] == 403  # alive, just says no
        # Nobody at .30: total loss, reported per probe.
        assert not results["acme-pbx"].ok
        assert [p["loss_pct"] for p in results["acme-pbx"].summary()["probes"]] == [100.0, 100.0]
        state = agent.state()["reachability"]
        assert [t["name"] for t in state["targets"]] == [t["name"] for t in TARGETS]
    finally:
        await agent.stop()


def test_icmp_echo_round_trip_and_checksum() -> None:
    packet = icmp_echo(0x1234, 7, b"edge-agent")
    assert packet[0] == 8
    # The checksum of a packet with its checksum in place is zero (RFC 1071).
    total = sum(int.from_bytes(packet[i : i + 2], "big") for i in range(0, len(packet), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    assert total == 0xFFFF
    reply = bytes([0x45]) + bytes(11) + bytes([10, 166, 0, 1]) + bytes(4) + b"\x00\x00" + packet[2:]
    assert parse_echo_reply(reply) == (IPv4Address("10.166.0.1"), 0x1234, 7)
    assert parse_echo_reply(b"\x45" + bytes(19) + b"\x03" + bytes(10)) is None  # unreachable, not a reply
    assert parse_echo_reply(b"short") is None


def test_sip_options_and_response_matching() -> None:
    request, call_id = sip_options(IPv4Address("192.0.2.1"), 5060, ("10.0.0.2", 40000), 3)
    text = request.decode()
    assert text.startswith("OPTIONS sip:192.0.2.1:5060 SIP/2.0\r\n")
    assert ";branch=z9hG4bK" in text and "CSeq: 3 OPTIONS" in text and text.endswith("\r\n\r\n")
    assert parse_sip_response(f"SIP/2.0 200 OK\r\nCall-ID: {call_id}\r\n\r\n".encode(), call_id) == 200
    assert parse_sip_response(f"SIP/2.0 486 Busy\r\ni: {call_id}\r\n\r\n".encode(), call_id) == 486
    assert parse_sip_response(b"SIP/2.0 200 OK\r\nCall-ID: other\r\n\r\n", call_id) is None
    assert parse_sip_response(b"\xff\xfe garbage", call_id) is None
    assert (
        parse_sip_response(f"OPTIONS sip:x SIP/2.0\r\nCall-ID: {call_id}\r\n\r\n".encode(), call_id) is None
    )
