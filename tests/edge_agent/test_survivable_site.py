"""Survivable site in network namespaces, every peer real: the core's billing Redis in the core
namespace, the local gateway (the real ``gateway`` package, started by the agent in the site
namespace), SIPp devices in the LAN namespace.

The core link is cut: the agent's core check fails, it starts the local gateway; the two devices
try their primary registrar (the core), get no answer, fail over to the site address as IADs do
with a secondary registrar, and call each other by short number; a call to the PSTN is refused
with 503 and a Q.850 Reason (this site has no local breakout). A call is up when the link is
restored: the agent sees the core again, lets the local gateway replay its charging spool to the
core's Redis and drains it; a new call to it then gets 503 with Retry-After; the call up
finishes, the local gateway exits, and the core's billing stream holds both calls' events
exactly once.

The second test adds the core's own gateway (the real ``gateway`` package on the core address in
the core namespace) to show the return: before the cut the devices register and call by short
number through the core, during it through the site, and after it through the core again, while
the drained local gateway no longer answers a REGISTER or an INVITE on the site address. The
devices' failover is scripted (SIPp to the primary first, then the secondary), as IADs do with a
secondary registrar configured."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
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


@dataclass(frozen=True)
class CoreGateway:
    """The core's gateway as the site's devices see it: their primary proxy and registrar."""

    status_socket: Path
    log: Path

    def completed(self) -> int:
        """Calls it connected and saw end (its B2BUA's counter, from the status socket)."""
        return cast(int, read_status(self.status_socket)["completed"])

    def tail(self) -> str:
        return "\n--- core gateway log\n" + self.log.read_text(errors="replace")[-4000:]


@pytest.fixture
def core_gateway(topology: Topology, tmp_path: Path, core_billing: None) -> Iterator[CoreGateway]:
    """A real ``python -m gateway run`` on the core address in the core namespace, built like the
    site's configuration (same lines, dialplan and trunks) and charging to the core's Redis."""
    workdir = tmp_path / "core"
    workdir.mkdir()
    config = site_gateway_config(workdir, host=CORE_ADDRESS, node="core-acme")
    log = workdir / "gateway.log"
    # The devices reach it through the box, which routes its LAN toward the core (a router
    # forwards; the agent manages the box's links, addresses and routes, not this switch).
    subprocess.run(netns_exec(topology.site, "sysctl", "-qw", "net.ipv4.ip_forward=1"), check=True)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            netns_exec(topology.core, sys.executable, "-m", "gateway", "run", "--config", str(config)),
            cwd=PROJECT_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )
    try:
        yield CoreGateway(workdir / "call.sock", log)
    finally:
        stop_process(proc, timeout=10)  # `ip netns exec` execs the gateway: this PID is its own


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


def site_gateway_config(workdir: Path, host: str = SITE_GW, node: str = "site-acme") -> Path:
    """The shipped site configuration (config/site-gateway.yaml: the group's dialplan cached on
    the box, the site's IAD lines and PBX from config/site-trunks.yaml, no breakout, charging to
    the core's Redis with the box's spool while it is unreachable), with short timers and the
    test's directories. With ``host`` the core address, it stands for the core's gateway serving
    the same lines (the same dialplan and trunks, so a call's routing is the same at both)."""
    shipped = yaml.safe_load((PROJECT_ROOT / "config" / "site-gateway.yaml").read_text())
    assert shipped["sip"]["listen"][0]["host"] == SITE_GW and CORE_ADDRESS in shipped["redis"]["url"]
    trunks = PROJECT_ROOT / shipped["registrar"]["trunks"]
    config = {
        "node": {"id": node},
        "sip": {
            "listen": [
                {"transport": "udp", "host": host, "port": 5060},
                {"transport": "tcp", "host": host, "port": 5060},
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


def refused_call(topology: Topology, workdir: Path, port: int, dialled: str) -> str:
    """62880001 dials ``dialled`` at the site address from ``port`` and is refused with 503
    (answering a 407 first if one comes); SIPp's message trace."""
    done = subprocess.run(
        sipp(
            topology.lan,
            workdir,
            "call_uac_503.xml",
            port,
            f"{SITE_GW}:5060",
            "-s",
            dialled,
            *line_credentials("62880001"),
            "-trace_msg",
        ),
        cwd=workdir,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, screen(workdir)
    return "".join(p.read_text(errors="replace") for p in workdir.glob("*_messages.log"))


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


# The site's two IAD lines and the SIPp port each device uses.
LINES = {"62880001": 25061, "62880002": 25062}


def survivable_agent(topology: Topology, tmp_path: Path) -> Agent:
    """The agent probing the core every 0.3 s, with the local gateway of ``tmp_path/site``."""
    site_dir = tmp_path / "site"
    site_dir.mkdir()
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
            "gateway_config": str(site_gateway_config(site_dir)),
            "enter_after": 2,
            "leave_after": 2,
            "check_interval_s": 0.3,
            "stop_grace_s": 40,
            "charging_spool": str(site_dir / "var" / "charging-spool"),
            "replay_wait_s": 20,
        },
    )
    return Agent(config)


def cut_core_link(topology: Topology) -> None:
    """The operator side of the interconnect goes down."""
    ip("-n", topology.core, "link", "set", "core0", "down")


def restore_core_link(topology: Topology) -> None:
    """The link comes back, and with it the core's route back to the site."""
    ip("-n", topology.core, "link", "set", "core0", "up")
    ip("-n", topology.core, "route", "replace", "192.168.10.0/24", "via", "10.166.0.2")


async def register_line(
    topology: Topology, workdir: Path, number: str, registrar: str, give_up_s: int
) -> int:
    return await asyncio.to_thread(
        register, topology.lan, workdir, number, port=LINES[number], registrar=registrar, timeout=give_up_s
    )


async def serving_locally(agent: Agent, topology: Topology) -> None:
    """The core link is cut: wait for the agent's local gateway to answer on the site address."""

    async def local_gateway_serves() -> bool:
        return agent.survival.phase is Phase.SURVIVING and await answers_options(topology.lan, SITE_GW)

    await eventually(local_gateway_serves, "local gateway answering on the site address", within=30)
    state = agent.state()["survivable"]
    assert state["active"] is True and state["phase"] == "surviving"


async def fail_over(agent: Agent, topology: Topology, workdir: Path) -> None:
    """Each device tries its primary registrar (the core) first: no answer; then the secondary,
    the site address. Scripted here, as an IAD does with a secondary registrar configured."""
    for number in LINES:
        primary = await register_line(topology, workdir / f"reg-core-{number}", number, CORE_ADDRESS, 2)
        assert primary != 0  # no route to the core: SIPp gives up
        site = workdir / f"reg-site-{number}"
        secondary = await register_line(topology, site, number, SITE_GW, 10)
        assert secondary == 0, screen(site) + gateway_log(agent)


async def short_call(topology: Topology, workdir: Path, proxy: str) -> tuple[int, str]:
    """62880001 dials 62880002 by short number (60002) through ``proxy``, answering the 407 its
    INVITE gets as a registered line; SIPp's exit status and screen."""
    callee_dir, caller_dir = workdir / "uas", workdir / "uac"
    callee = start_background(
        sipp(topology.lan, callee_dir, "call_uas.xml", LINES["62880002"], None), callee_dir
    )
    try:
        await asyncio.sleep(0.3)  # let it bind (a miss would only cost a retransmission)
        call = await asyncio.to_thread(
            subprocess.run,
            sipp(
                topology.lan,
                caller_dir,
                "call_uac.xml",
                LINES["62880001"],
                f"{proxy}:5060",
                "-s",
                "60002",
                *line_credentials("62880001"),
            ),
            cwd=caller_dir,
            capture_output=True,
            timeout=60,
            check=False,
        )
    finally:
        stop_process(callee)
    return call.returncode, screen(caller_dir)


@pytest.mark.netns
async def test_core_cut_site_calls_locally_and_charging_reaches_the_core_once(
    topology: Topology, tmp_path: Path, core_billing: None
) -> None:
    site_dir = tmp_path / "site"
    agent = survivable_agent(topology, tmp_path)
    await agent.start()
    try:
        await agent.set_desired(site_desired(), "test")
        await asyncio.to_thread(wait_for_core_redis, topology)
        assert agent.survival.phase is Phase.CORE

        cut_core_link(topology)
        await serving_locally(agent, topology)
        await fail_over(agent, topology, tmp_path)

        # 62880001 dials the short number of 62880002; the PSTN is refused with a reason.
        status, out = await short_call(topology, tmp_path / "site-call", SITE_GW)
        assert status == 0, out + gateway_log(agent)
        pstn = await asyncio.to_thread(
            refused_call, topology, tmp_path / "pstn", LINES["62880001"], "013800138000"
        )
        assert 'Reason: Q.850;cause=34;text="No circuit/channel available"' in pstn, pstn[-2000:]

        # A call is up when the core comes back: it goes on while the local gateway drains.
        status_socket = site_dir / "call.sock"
        callee = start_background(
            sipp(topology.lan, tmp_path / "uas-long", "call_uas.xml", LINES["62880002"], None),
            tmp_path / "uas-long",
        )
        try:
            await asyncio.sleep(0.3)  # let it bind (a miss would only cost a retransmission)
            long_call = start_background(
                sipp(
                    topology.lan,
                    tmp_path / "uac-long",
                    "call_uac.xml",
                    LINES["62880001"],
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

            restore_core_link(topology)

            async def draining() -> bool:
                assert agent.local_gateway is not None
                return agent.local_gateway.drained_at is not None and "signal received" in gateway_log(agent)

            await eventually(draining, "local gateway told to drain", within=30)
            snap = await asyncio.to_thread(read_status, status_socket)
            assert snap["calls"] == 1, snap  # the call up is not cut by the return to the core
            # A new call to the draining local gateway is refused with 503 and Retry-After
            # (RFC 3261 §21.5.4): the device goes back to its primary, the core. (Another port:
            # the long call's SIPp holds the line's own.)
            late = await asyncio.to_thread(
                refused_call, topology, tmp_path / "late", LINES["62880001"] + 10, "60002"
            )
            assert "SIP/2.0 503 Shutting Down" in late and "Retry-After:" in late, late[-2000:]
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


@pytest.mark.netns
async def test_devices_return_to_the_core_gateway_when_the_link_is_back(
    topology: Topology, tmp_path: Path, core_gateway: CoreGateway
) -> None:
    """Before the cut the devices register and call at the core's gateway; during it at the
    site's; once the link is back they register and call at the core again, and the drained
    local gateway no longer answers on the site address."""
    agent = survivable_agent(topology, tmp_path)
    await agent.start()
    try:
        await agent.set_desired(site_desired(), "test")
        await eventually(
            lambda: answers_options(topology.lan, CORE_ADDRESS), "core gateway answering through the box"
        )
        assert agent.survival.phase is Phase.CORE

        # The core serves the site: both lines register at their primary and call through it.
        for number in LINES:
            before = tmp_path / f"reg-before-{number}"
            assert await register_line(topology, before, number, CORE_ADDRESS, 10) == 0, (
                screen(before) + core_gateway.tail()
            )
        status, out = await short_call(topology, tmp_path / "core-call-before", CORE_ADDRESS)
        assert status == 0, out + core_gateway.tail()

        async def core_connected(calls: int) -> bool:
            return await asyncio.to_thread(core_gateway.completed) == calls

        await eventually(lambda: core_connected(1), "the first call connected by the core gateway")

        # The cut: the devices fail over to the site's local gateway, which connects their call.
        cut_core_link(topology)
        await serving_locally(agent, topology)
        await fail_over(agent, topology, tmp_path)
        status, out = await short_call(topology, tmp_path / "site-call", SITE_GW)
        assert status == 0, out + gateway_log(agent)
        site_status = await asyncio.to_thread(read_status, tmp_path / "site" / "call.sock")
        assert site_status["completed"] == 1, site_status
        assert await asyncio.to_thread(core_gateway.completed) == 1  # not through the core

        # The link is back: the agent drains the local gateway and it exits.
        restore_core_link(topology)

        async def back_to_core() -> bool:
            assert agent.local_gateway is not None
            return agent.survival.phase is Phase.CORE and agent.local_gateway.pid is None

        await eventually(back_to_core, "local gateway drained and stopped", within=40)

        # The devices return to their primary (scripted, as an IAD's next registration goes to
        # its primary registrar first) and call through the core again.
        for number in LINES:
            after = tmp_path / f"reg-after-{number}"
            assert await register_line(topology, after, number, CORE_ADDRESS, 10) == 0, (
                screen(after) + core_gateway.tail()
            )
        status, out = await short_call(topology, tmp_path / "core-call-after", CORE_ADDRESS)
        assert status == 0, out + core_gateway.tail()
        await eventually(lambda: core_connected(2), "the call after the return connected by the core")

        # The local gateway takes nothing new: a REGISTER or an INVITE to the site address is
        # not answered (it has exited and its port is closed), so a device cannot stay on it.
        stale = tmp_path / "reg-site-after"
        assert await register_line(topology, stale, "62880001", SITE_GW, 2) != 0, screen(stale)
        invite_dir = tmp_path / "invite-site-after"
        invite = await asyncio.to_thread(
            subprocess.run,
            sipp(
                topology.lan,
                invite_dir,
                "call_uac.xml",
                LINES["62880001"],
                f"{SITE_GW}:5060",
                "-s",
                "60002",
                *line_credentials("62880001"),
                timeout=2,
            ),
            cwd=invite_dir,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert invite.returncode != 0, screen(invite_dir)
        assert not await answers_options(topology.lan, SITE_GW)
    finally:
        await agent.stop()
