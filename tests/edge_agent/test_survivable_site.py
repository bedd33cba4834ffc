"""Survivable site in network namespaces, every peer real: the core's billing Redis in the core
namespace, the local gateway (the real ``gateway`` package, started by the agent in the site
namespace), SIPp devices in the LAN namespace.

The core link is cut: the agent's core check fails, it starts the local gateway; the two devices
try their primary registrar (the core), get no answer, fail over to the site address as IADs do
with a secondary registrar, and call each other by short number; a call to the PSTN is refused
with 503 and a Q.850 Reason (this site has no local breakout). A call is up when the link is
restored: the agent sees the core again, lets the local gateway replay its charging spool to the
core's Redis and drains it; the call up finishes, the local gateway exits, and the core's
billing stream holds both calls' events exactly once."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import yaml

from edge_agent.agent import Agent
from edge_agent.checks import open_socket
from edge_agent.survivable import Phase
from gateway.call.service import read_status
from tests.call.harness import SIPP_DIR, TIMERS, line_credentials, screen
from tests.edge_agent.conftest import CORE_ADDRESS, Topology, agent_config, eventually, ip, site_desired
from tests.support.gateway import PROJECT_ROOT, options_request
from tests.support.servers import require_binary, stop_process

SITE_GW = "192.168.10.1"  # the box's LAN address: the devices' secondary registrar
DEVICES = "192.168.10.20"
CORE_REDIS = 6379
PASSWORD = "acme-iad-secret"


def netns_exec(ns: str, *cmd: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *cmd]


@pytest.fixture
def core_billing(topology: Topology, tmp_path: Path) -> Iterator[None]:
    """The core's billing Redis, listening on the core address inside the core namespace."""
    proc = subprocess.Popen(
        netns_exec(
            topology.core,
            require_binary("redis-server"),
            "--bind",
            CORE_ADDRESS,
            "--port",
            str(CORE_REDIS),
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
            "--dir",
            str(tmp_path),
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        stop_process(proc)  # `ip netns exec` execs redis-server: this PID is the server's


def redis_cli(topology: Topology, *args: str) -> str:
    out = subprocess.run(
        netns_exec(
            topology.core, require_binary("redis-cli"), "-h", CORE_ADDRESS, "-p", str(CORE_REDIS), *args
        ),
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout


def site_gateway_config(workdir: Path) -> Path:
    """The shipped site configuration (config/site-gateway.yaml: the group's dialplan cached on
    the box, the site's IAD lines and PBX from config/site-trunks.yaml, no breakout, charging to
    the core's Redis with the box's spool while it is unreachable), with short timers and the
    test's directories."""
    shipped = yaml.safe_load((PROJECT_ROOT / "config" / "site-gateway.yaml").read_text())
    assert shipped["sip"]["listen"][0]["host"] == SITE_GW and CORE_ADDRESS in shipped["redis"]["url"]
    trunks = PROJECT_ROOT / shipped["registrar"]["trunks"]
    config = {
        "node": {"id": "site-acme"},
        "sip": {
            "listen": [
                {"transport": "udp", "host": SITE_GW, "port": 5060},
                {"transport": "tcp", "host": SITE_GW, "port": 5060},
            ],
            "timers": TIMERS,
            "shutdown_grace": 0.5,
        },
        "redis": {"url": f"redis://{CORE_ADDRESS}:{CORE_REDIS}/0"},
        "api": {"enabled": False},
        "registrar": {**shipped["registrar"], "trunks": str(trunks)},
        "accounts": shipped["accounts"],
        "security": shipped["security"],
        "call": {
            **shipped["call"],
            "status_socket": str(workdir / "call.sock"),
            "attempt_timeout": 1.0,
            "drain_grace": 30.0,
        },
        "charging": {
            "tariffs": str(PROJECT_ROOT / "config" / "tariffs.yaml"),
            "retry_interval_s": 0.2,
            "redis_streams": {"socket_timeout_s": 0.5},
        },
        "dialplans": [str(PROJECT_ROOT / "dialplans")],
        "state_dir": str(workdir / "var"),
    }
    path = workdir / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def sipp(
    ns: str, workdir: Path, scenario: str, port: int, target: str | None, *extra: str, timeout: int = 20
) -> list[str]:
    workdir.mkdir(parents=True, exist_ok=True)
    return netns_exec(
        ns,
        require_binary("sipp"),
        "-sf",
        str(SIPP_DIR / scenario),
        "-i",
        DEVICES,
        "-p",
        str(port),
        "-t",
        "u1",
        "-m",
        "1",
        "-nostdin",
        "-timeout",
        f"{timeout}s",
        "-timeout_error",
        "-trace_err",
        "-trace_screen",
        *extra,
        *([target] if target else []),
    )


def start_background(command: list[str], cwd: Path) -> subprocess.Popen[bytes]:
    """A SIPp answering side, stopped by its PID afterwards (``ip netns exec`` execs SIPp)."""
    return subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def register(ns: str, workdir: Path, number: str, *, port: int, registrar: str, timeout: int) -> int:
    """SIPp REGISTER with Digest for one line from ``port``; SIPp's exit status."""
    workdir.mkdir(parents=True, exist_ok=True)
    users = workdir / "users.csv"
    users.write_text(f"SEQUENTIAL\n{number};[authentication username={number} password={PASSWORD}]\n")
    command = sipp(
        ns, workdir, "register_auth_uac.xml", port, f"{registrar}:5060", "-inf", str(users), timeout=timeout
    )
    return subprocess.run(command, cwd=workdir, capture_output=True, timeout=60, check=False).returncode


async def answers_options(ns: str, host: str) -> bool:
    sock = await open_socket(ns, socket.SOCK_DGRAM)
    try:
        sock.bind((DEVICES, 0))
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_sendto(sock, options_request(host, 5060, sock.getsockname()), (host, 5060))
        try:
            data = await asyncio.wait_for(loop.sock_recv(sock, 65535), 0.5)
        except TimeoutError:
            return False
        return data.startswith(b"SIP/2.0 200")
    finally:
        sock.close()


@pytest.mark.netns
async def test_core_cut_site_calls_locally_and_charging_reaches_the_core_once(
    topology: Topology, tmp_path: Path, core_billing: None
) -> None:
    site_dir = tmp_path / "site"
    site_dir.mkdir()
    gateway_yaml = site_gateway_config(site_dir)
    config = agent_config(
        topology,
        tmp_path / "agent",
        checks={
            "interval_s": 3600,
            "count": 1,
            "timeout_s": 0.3,
            "targets": [{"name": "core", "role": "core", "address": CORE_ADDRESS, "probes": ["icmp"]}],
        },
        survivable={
            "gateway_config": str(gateway_yaml),
            "enter_after": 2,
            "leave_after": 2,
            "check_interval_s": 0.3,
            "stop_grace_s": 40,
            "charging_spool": str(site_dir / "var" / "charging-spool"),
            "replay_wait_s": 20,
        },
    )
    agent = Agent(config)
    await agent.start()
    try:
        await agent.set_desired(site_desired(), "test")
        await asyncio.to_thread(wait_for_core_redis, topology)
        assert agent.survival.phase is Phase.CORE

        # The core link is cut (the operator side of the interconnect goes down).
        ip("-n", topology.core, "link", "set", "core0", "down")

        async def local_gateway_serves() -> bool:
            return agent.survival.phase is Phase.SURVIVING and await answers_options(topology.lan, SITE_GW)

        await eventually(local_gateway_serves, "local gateway answering on the site address", within=30)
        state = agent.state()["survivable"]
        assert state["active"] is True and state["phase"] == "surviving"

        # Each device tries its primary registrar (the core) first: no answer; then the secondary.
        lines = {"62880001": 25061, "62880002": 25062}
        for number, port in lines.items():
            primary = await asyncio.to_thread(
                register,
                topology.lan,
                tmp_path / f"reg-core-{number}",
                number,
                port=port,
                registrar=CORE_ADDRESS,
                timeout=2,
            )
            assert primary != 0  # no route to the core: SIPp gives up
            secondary = await asyncio.to_thread(
                register,
                topology.lan,
                tmp_path / f"reg-site-{number}",
                number,
                port=port,
                registrar=SITE_GW,
                timeout=10,
            )
            assert secondary == 0, screen(tmp_path / f"reg-site-{number}") + gateway_log(agent)

        # 62880001 dials the short number of 62880002; the PSTN is refused with a reason.
        callee_dir, caller_dir = tmp_path / "uas", tmp_path / "uac"
        callee = start_background(
            sipp(topology.lan, callee_dir, "call_uas.xml", lines["62880002"], None), callee_dir
        )
        try:
            await asyncio.sleep(0.3)  # let it bind (a miss would only cost a retransmission)
            call = await asyncio.to_thread(
                subprocess.run,
                sipp(
                    topology.lan,
                    caller_dir,
                    "call_uac.xml",
                    lines["62880001"],
                    f"{SITE_GW}:5060",
                    "-s",
                    "60002",
                    *line_credentials("62880001"),
                ),
                cwd=caller_dir,
                capture_output=True,
                timeout=60,
                check=False,
            )
            assert call.returncode == 0, screen(caller_dir) + gateway_log(agent)
        finally:
            stop_process(callee)
        pstn_dir = tmp_path / "pstn"
        pstn = await asyncio.to_thread(
            subprocess.run,
            sipp(
                topology.lan,
                pstn_dir,
                "call_uac_503.xml",
                lines["62880001"],
                f"{SITE_GW}:5060",
                "-s",
                "013800138000",
                *line_credentials("62880001"),
                "-trace_msg",
            ),
            cwd=pstn_dir,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert pstn.returncode == 0, screen(pstn_dir) + gateway_log(agent)
        trace = "".join(p.read_text(errors="replace") for p in pstn_dir.glob("*_messages.log"))
        assert 'Reason: Q.850;cause=34;text="No circuit/channel available"' in trace, trace[-2000:]

        # A call is up when the core comes back: it goes on while the local gateway drains.
        status_socket = site_dir / "call.sock"
        callee = start_background(
            sipp(topology.lan, tmp_path / "uas-long", "call_uas.xml", lines["62880002"], None),
            tmp_path / "uas-long",
        )
        try:
            await asyncio.sleep(0.3)  # let it bind (a miss would only cost a retransmission)
            long_call = start_background(
                sipp(
                    topology.lan,
                    tmp_path / "uac-long",
                    "call_uac.xml",
                    lines["62880001"],
                    f"{SITE_GW}:5060",
                    "-s",
                    "60002",
                    *line_credentials("62880001"),
                    "-d",
                    "12000",
                ),
                tmp_path / "uac-long",
            )

            async def answered() -> bool:
                snap = await asyncio.to_thread(read_status, status_socket)
                active = cast(list[dict[str, Any]], snap["active"])
                return len(active) == 1 and active[0]["answered_for"] is not None

            await eventually(answered, "the long call answered by the local gateway")

            # The link is restored: the core's route back to the site comes with it.
            ip("-n", topology.core, "link", "set", "core0", "up")
            ip("-n", topology.core, "route", "replace", "192.168.10.0/24", "via", "10.166.0.2")

            async def draining() -> bool:
                assert agent.local_gateway is not None
                return agent.local_gateway.drained_at is not None and "signal received" in gateway_log(agent)

            await eventually(draining, "local gateway told to drain", within=30)
            snap = await asyncio.to_thread(read_status, status_socket)
            assert snap["calls"] == 1, snap  # the call up is not cut by the return to the core
            assert await asyncio.to_thread(long_call.wait, 60) == 0, screen(tmp_path / "uac-long")
        finally:
            stop_process(callee)

        async def back_to_core() -> bool:
            assert agent.local_gateway is not None
            return agent.survival.phase is Phase.CORE and agent.local_gateway.pid is None

        await eventually(back_to_core, "local gateway drained and stopped", within=40)
        assert not await answers_options(topology.lan, SITE_GW)  # the devices go back to the core
        entries = [dict(zip(fields[::2], fields[1::2], strict=True)) for fields in stream(topology)]
        ids = [entry["id"] for entry in entries]
        assert ids and len(ids) == len(set(ids)), ids  # every event reached billing once
        events = [json.loads(entry["event"]) for entry in entries]
        kinds: dict[str, list[str]] = {}
        for event in events:
            kinds.setdefault(event["call_id"], []).append(event["event_type"])
        # The two answered calls (the PSTN refusal is not charged), each started and stopped once.
        assert list(kinds.values()) == [["start", "stop"], ["start", "stop"]], kinds
        assert {e["call_class"] for e in events} == {"intra_group_short"}
    finally:
        await agent.stop()


def wait_for_core_redis(topology: Topology) -> None:
    for _ in range(100):
        try:
            if redis_cli(topology, "PING").strip() == "PONG":
                return
        except subprocess.CalledProcessError:
            pass
        time.sleep(0.1)
    raise AssertionError("core Redis did not answer")


def stream(topology: Topology) -> list[list[str]]:
    """The core's charging stream entries, as [field, value, ...] lists."""
    out = redis_cli(topology, "--json", "XRANGE", "charging:events", "-", "+")
    entries: list[Any] = json.loads(out) if out.strip() else []
    return [entry[1] for entry in entries]


def gateway_log(agent: Agent) -> str:
    path = agent.config.state_dir / "local-gateway.log"
    return "\n--- local gateway log\n" + (
        path.read_text(errors="replace")[-4000:] if path.exists() else "(none)"
    )
