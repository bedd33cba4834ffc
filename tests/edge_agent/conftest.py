"""Fixtures for the edge-agent tests: a site/core/LAN network-namespace topology built with `ip`
(the agent itself only uses pyroute2), a SIP OPTIONS responder inside a namespace, a gated TCP
relay in front of the broker, and polling helpers (generous deadlines, never timed assertions).

Topology (namespace names are unique per test and deleted by name in teardown)::

    core ns                          site ns (managed by the agent)          lan ns
    lo 198.51.100.13/32              wan0 (agent adds 10.166.0.2/30)         srv0 192.168.10.10/24
    core0 10.166.0.1/30  <-- veth --> wan0          lan0  <-- veth -->        srv0
                                     br-lan (agent-created, 192.168.10.1/24)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import aiomqtt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent import signing
from edge_agent.checks import open_socket
from edge_agent.config import AgentConfig
from edge_agent.model import DesiredState
from edge_agent.netlink import NetlinkAdapter
from edge_agent.reconcile import Observed
from tests.support.servers import free_port

CORE_ADDRESS = "198.51.100.13"
PROTO = 190


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def _needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("network-namespace tests need root")


@dataclass
class Topology:
    site: str
    core: str
    lan: str
    created: list[str] = field(default_factory=list)

    def site_ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return ip("-n", self.site, *args, check=check)


def build_topology(tag: str) -> Topology:
    """Create the three namespaces and their veths; on failure, delete what was made."""
    topo = Topology(site=f"{tag}-site", core=f"{tag}-core", lan=f"{tag}-lan")
    try:
        for name in (topo.site, topo.core, topo.lan):
            ip("netns", "add", name)
            topo.created.append(name)
        site = ["-n", topo.site, "link", "add"]
        ip(*site, "wan0", "type", "veth", "peer", "name", "core0", "netns", topo.core)
        ip(*site, "lan0", "type", "veth", "peer", "name", "srv0", "netns", topo.lan)
        for ns, cmds in (
            (
                topo.core,
                [
                    ["link", "set", "lo", "up"],
                    ["addr", "add", f"{CORE_ADDRESS}/32", "dev", "lo"],
                    ["addr", "add", "10.166.0.1/30", "dev", "core0"],
                    ["link", "set", "core0", "up"],
                    ["route", "add", "192.168.10.0/24", "via", "10.166.0.2"],
                ],
            ),
            (
                topo.lan,
                [
                    ["link", "set", "lo", "up"],
                    ["addr", "add", "192.168.10.10/24", "dev", "srv0"],
                    ["addr", "add", "192.168.10.20/24", "dev", "srv0"],
                    ["link", "set", "srv0", "up"],
                    ["route", "add", "default", "via", "192.168.10.1"],
                ],
            ),
            (topo.site, [["link", "set", "lo", "up"]]),
        ):
            for cmd in cmds:
                ip("-n", ns, *cmd)
    except BaseException:
        destroy_topology(topo)
        raise
    return topo


def destroy_topology(topo: Topology) -> None:
    for name in topo.created:
        ip("netns", "del", name, check=False)


@pytest.fixture
def topology() -> Iterator[Topology]:
    _needs_root()
    topo = build_topology(f"ea{secrets.token_hex(3)}")
    try:
        yield topo
    finally:
        destroy_topology(topo)


def site_desired(version: int = 1, **changes: Any) -> DesiredState:
    """The demo site: operator port, LAN bridge, tunnel toward the core, the seeds' routes."""
    doc: dict[str, Any] = {
        "version": version,
        "links": [
            {"name": "wan0", "mtu": 1400},
            {"name": "lan0", "master": "br-lan"},
            {"name": "br-lan", "kind": "bridge"},
            {"name": "tun0", "kind": "vxlan", "vni": 166, "remote": CORE_ADDRESS, "local": "10.166.0.2"},
        ],
        "addresses": [
            {"ifname": "wan0", "address": "10.166.0.2/30"},
            {"ifname": "br-lan", "address": "192.168.10.1/24"},
        ],
        "routes": [
            {"dst": f"{CORE_ADDRESS}/32", "gateway": "10.166.0.1"},
            {"dst": "10.166.8.0/24", "dev": "tun0", "metric": 10},
            {"dst": "10.20.0.0/16", "gateway": "10.166.0.1", "table": 100},
        ],
    }
    doc.update(changes)
    return DesiredState.model_validate(doc)


def agent_config(topo: Topology, state_dir: Path, **changes: Any) -> AgentConfig:
    doc: dict[str, Any] = {
        "site": "t1",
        "netns": topo.site,
        "state_dir": str(state_dir),
        "mqtt": None,
        "reconcile": {"rtproto": PROTO, "debounce_s": 0.02, "period_s": 30},
        "checks": {"interval_s": 3600, "count": 2, "timeout_s": 1.0, "targets": []},
    }
    doc.update(changes)
    return AgentConfig.model_validate(doc)


class Pki:
    """A throw-away CA in ``workdir`` (``ca.crt``) issuing broker and client certificates."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.ca = workdir / "ca.crt"
        self._openssl(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        )

    def _openssl(self, *args: str) -> None:
        subprocess.run(["openssl", *args], cwd=self.workdir, check=True, capture_output=True)

    def issue(self, name: str, cn: str, ip: str | None = None) -> tuple[Path, Path]:
        """``<name>.crt`` and ``<name>.key`` for subject CN ``cn`` (and an IP SAN for a server)."""
        self._openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={cn}",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
        )
        ext = self.workdir / f"{name}.ext"
        ext.write_text(f"subjectAltName=IP:{ip}\n" if ip else "basicConstraints=CA:FALSE\n", encoding="utf-8")
        self._openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            ext.name,
            "-out",
            f"{name}.crt",
        )
        return self.workdir / f"{name}.crt", self.workdir / f"{name}.key"


@dataclass(frozen=True)
class OpsKey:
    """An operations signing key for a test, with its public half written as PEM for the box."""

    private: Ed25519PrivateKey
    public_file: Path
    private_file: Path

    def sign(
        self,
        site: str,
        channel: str,
        body: Any,
        *,
        seq: int | None = None,
        now: float | None = None,
        lifetime_s: float = 600.0,
    ) -> bytes:
        stamp = time.time() if now is None else now
        return signing.sign(
            self.private,
            site=site,
            channel=channel,
            body=body,
            seq=time.time_ns() // 1000 if seq is None else seq,
            now=stamp,
            lifetime_s=lifetime_s,
        )


def make_ops_key(directory: Path, name: str = "ops") -> OpsKey:
    key = Ed25519PrivateKey.generate()
    public_file, private_file = directory / f"{name}.pub", directory / f"{name}.key"
    public_file.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    private_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return OpsKey(key, public_file, private_file)


@pytest.fixture
def ops_key(tmp_path: Path) -> OpsKey:
    return make_ops_key(tmp_path)


async def eventually(
    predicate: Callable[[], Awaitable[bool]], what: str, within: float = 15.0, interval: float = 0.02
) -> None:
    """Poll until true; the deadline is only a failure guard, not a performance assertion."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await predicate():
        if loop.time() > deadline:
            raise AssertionError(f"not true within {within}s: {what}")
        await asyncio.sleep(interval)


async def observe(netns: str) -> Observed:
    adapter = NetlinkAdapter(netns, PROTO)
    try:
        return await adapter.observe()
    finally:
        adapter.close()


class SipResponder(asyncio.DatagramProtocol):
    """Answers every SIP request with ``status`` (a stand-in for the core SBC, IAD or IP-PBX)."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.transport: asyncio.DatagramTransport | None = None
        self.requests = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (On 3.11 the selector datagram transport does not subclass DatagramTransport.)
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.requests += 1
        lines = data.decode().split("\r\n")
        keep = [
            ln for ln in lines[1:] if ln.split(":", 1)[0].lower() in ("via", "from", "to", "call-id", "cseq")
        ]
        reply = "\r\n".join([f"SIP/2.0 {self.status} OK", *keep, "Content-Length: 0", "", ""])
        assert self.transport is not None
        self.transport.sendto(reply.encode(), addr)


@contextlib.asynccontextmanager
async def sip_responder(
    netns: str, host: str, port: int = 5060, status: int = 200
) -> AsyncIterator[SipResponder]:
    sock = await open_socket(netns, socket.SOCK_DGRAM)
    sock.bind((host, port))
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(lambda: SipResponder(status), sock=sock)
    try:
        yield protocol
    finally:
        transport.close()


class GatedRelay:
    """A TCP relay in front of the broker that the test closes (nothing listens: connections are
    refused) and opens again, so the test can subscribe before the agent reconnects
    (deterministic ordering, no sleeps)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        for writer in self._writers:
            writer.close()
        await self.close()


def mqtt_section(port: int) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": port, "backoff_initial_s": 0.1, "backoff_max_s": 0.5, "timeout_s": 5}


class Collector:
    """A test-side MQTT client that records what it receives, per topic, in arrival order."""

    def __init__(self) -> None:
        self.messages: dict[str, list[dict[str, Any]]] = {}
        self.ready = asyncio.Event()

    def on(self, topic: str) -> list[dict[str, Any]]:
        return self.messages.setdefault(topic, [])

    async def run(self, port: int, topics: list[str]) -> None:
        async with aiomqtt.Client("127.0.0.1", port, identifier=None) as client:
            for topic in topics:
                await client.subscribe(topic, qos=1)
            self.ready.set()
            async for message in client.messages:
                payload = message.payload
                if isinstance(payload, bytes) and payload:
                    self.on(message.topic.value).append(json.loads(payload))


@pytest.fixture
async def collector_task() -> AsyncIterator[list[asyncio.Task[None]]]:
    tasks: list[asyncio.Task[None]] = []
    yield tasks
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def start_collector(tasks: list[asyncio.Task[None]], port: int, topics: list[str]) -> Collector:
    collector = Collector()
    tasks.append(asyncio.create_task(collector.run(port, topics)))
    await asyncio.wait_for(collector.ready.wait(), 10)
    return collector


async def publish(port: int, topic: str, payload: dict[str, Any] | bytes, retain: bool = False) -> None:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.publish(topic, data, qos=1, retain=retain)
