"""A real Redis Sentinel deployment on loopback for the tests: a master, one replica and three
redis-sentinel processes watching them, each on a free port in its own directory, stopped by
the PIDs we started.

Detection is fast for tests (``down-after-milliseconds`` 1000), so a SIGKILLed master is
replaced by its replica within a few seconds.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tests.support.servers import RedisServer, free_port, require_binary, stop_process, wait_for_tcp

SERVICE = "gw-test"
QUORUM = 2


@dataclass
class SentinelCluster:
    master: RedisServer
    replica: RedisServer
    sentinel_ports: list[int]
    sentinels: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def addresses(self) -> list[str]:
        """``host:port`` of each sentinel (the gateway's ``redis.sentinels``)."""
        return [f"127.0.0.1:{port}" for port in self.sentinel_ports]

    def master_address(self) -> tuple[str, int] | None:
        """What the first answering sentinel says the master is now."""
        for port in self.sentinel_ports:
            client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
            try:
                found = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
            except redis.RedisError:
                continue
            finally:
                client.close()
            if found:
                host, port_text = (part.decode() if isinstance(part, bytes) else str(part) for part in found)
                return host, int(port_text)
        return None

    def replicated(self) -> bool:
        """The replica has finished its first sync with the master."""
        client = redis.Redis(host="127.0.0.1", port=self.replica.port, socket_timeout=1)
        try:
            info = client.info("replication")
        finally:
            client.close()
        return info.get("master_link_status") == "up"

    def kill_master(self) -> None:
        """SIGKILL the master by its PID (no shutdown, no save)."""
        assert self.master.proc is not None
        self.master.proc.kill()
        self.master.proc.wait(timeout=10)
        self.master.proc = None


def _start_sentinel(workdir: Path, port: int, master_port: int) -> subprocess.Popen[bytes]:
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "sentinel.conf"  # sentinel rewrites its own file: one per process
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndaemonize no\nprotected-mode no\ndir {workdir}\n"
        f"sentinel monitor {SERVICE} 127.0.0.1 {master_port} {QUORUM}\n"
        f"sentinel down-after-milliseconds {SERVICE} 1000\n"
        f"sentinel failover-timeout {SERVICE} 5000\n"
        f"sentinel parallel-syncs {SERVICE} 1\n",
        encoding="utf-8",
    )
    proc = subprocess.Popen(
        [require_binary("redis-sentinel"), str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_for_tcp("127.0.0.1", port)
    return proc


@contextlib.contextmanager
def sentinel_cluster(workdir: Path) -> Iterator[SentinelCluster]:
    master = RedisServer(workdir=workdir / "master", port=free_port())
    master_port = master.port
    replica = RedisServer(
        workdir=workdir / "replica", port=free_port(), args=("--replicaof", "127.0.0.1", str(master_port))
    )
    cluster = SentinelCluster(master, replica, [free_port() for _ in range(3)])
    try:
        for server in (master, replica):
            server.workdir.mkdir(parents=True, exist_ok=True)
            server.start()
        for index, port in enumerate(cluster.sentinel_ports):
            cluster.sentinels.append(_start_sentinel(workdir / f"sentinel{index}", port, master_port))
        yield cluster
    finally:
        for proc in cluster.sentinels:
            stop_process(proc)
        master.stop()
        replica.stop()
