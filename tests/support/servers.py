"""Real servers (redis-server, mosquitto, PostgreSQL) started for the tests on free loopback ports.

Each server is started by the test setup, in a temporary directory, and stopped by the PID we
started (never by name). Tests that need one use the session fixtures in ``tests/conftest.py``.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# Test ports are drawn below the kernel's ephemeral range (ip_local_port_range, 32768-60999 by
# default): a port from inside it could be taken by any outgoing connection (a Redis client, SIPp)
# between the draw and the bind. No port is handed out twice in one test session, so two
# fixtures never get the same one (the kernel would offer a closed probe's port again).
_ALL_TEST_PORTS = (20000, 32000)
_handed_out: set[int] = set()


def _worker_slice(span: tuple[int, int], worker: str | None, workers: str | None) -> tuple[int, int]:
    """The part of ``span`` one pytest-xdist worker draws from (``gw0`` ... of ``workers``): the
    workers are separate processes, so each gets ports no other worker can draw between its probe
    and its bind. Without xdist (``worker`` unset) the whole span."""
    if not worker or not workers:
        return span
    index, count = int(worker.removeprefix("gw")), int(workers)
    width = (span[1] - span[0]) // count
    return span[0] + index * width, span[0] + (index + 1) * width


_PORT_RANGE = _worker_slice(
    _ALL_TEST_PORTS, os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("PYTEST_XDIST_WORKER_COUNT")
)


def _draw(count: int, kinds: tuple[int, ...], host: str) -> int:
    """The first of ``count`` consecutive ports free now for each socket kind in ``kinds``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(1000):
        base = random.randrange(_PORT_RANGE[0], _PORT_RANGE[1] - count)
        ports = range(base, base + count)
        if not _handed_out.isdisjoint(ports):
            continue
        try:
            with contextlib.ExitStack() as held:
                for port in ports:
                    for kind in kinds:
                        sock = held.enter_context(socket.socket(family, kind))
                        sock.bind((host, port))
        except OSError:
            continue
        _handed_out.update(ports)
        return base
    raise RuntimeError(f"no {count} consecutive free ports in {_PORT_RANGE}")


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    """A port free now for TCP (or UDP with ``socket.SOCK_DGRAM``), not handed out before."""
    return _draw(1, (kind,), host)


def free_udp_tcp_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP (SIP listens on both), not handed out before."""
    return _draw(1, (socket.SOCK_DGRAM, socket.SOCK_STREAM), host)


def free_udp_tcp_ports(count: int, host: str = "127.0.0.1") -> int:
    """The first of ``count`` consecutive ports free for both UDP and TCP (a worker port base)."""
    return _draw(count, (socket.SOCK_DGRAM, socket.SOCK_STREAM), host)


def wait_for_tcp(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """Stop a process we started, by its PID: SIGTERM, then SIGKILL."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def require_binary(name: str) -> str:
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if Path(p).exists()), None
    )
    if path is None:
        raise RuntimeError(f"{name} is not installed; `make test` installs it (Debian package)")
    return path


@dataclass
class RedisServer:
    """A running redis-server; ``stop`` and ``start`` keep the same port and data directory."""

    workdir: Path
    port: int
    host: str = "127.0.0.1"
    proc: subprocess.Popen[bytes] | None = None
    args: tuple[str, ...] = ()  # more redis-server options (e.g. --replicaof)

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> None:
        binary = require_binary("redis-server")
        self.proc = subprocess.Popen(
            [
                binary, "--port", str(self.port), "--bind", self.host, "--dir", str(self.workdir),
                "--save", "", "--appendonly", "no", "--protected-mode", "no", "--daemonize", "no",
                *self.args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_tcp(self.host, self.port)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def flush(self) -> None:
        """Empty every database (between tests)."""
        with socket.create_connection((self.host, self.port), timeout=2) as sock:
            sock.sendall(b"FLUSHALL\r\n")
            sock.recv(64)


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[RedisServer]:
    server = RedisServer(workdir=workdir, port=free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class MosquittoServer:
    """A running mosquitto broker on loopback, anonymous access; restartable on the same port."""

    workdir: Path
    port: int
    host: str = "127.0.0.1"
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = require_binary("mosquitto")
        conf = self.workdir / "mosquitto.conf"
        # As root, mosquitto drops privileges to "mosquitto" unless told to stay root.
        conf.write_text(
            f"listener {self.port} {self.host}\nallow_anonymous true\nuser root\n"
            f"persistence false\nlog_dest stderr\n",
            encoding="utf-8",
        )
        self.proc = subprocess.Popen(
            [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_tcp(self.host, self.port)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


@contextlib.contextmanager
def mosquitto_server(workdir: Path) -> Iterator[MosquittoServer]:
    server = MosquittoServer(workdir=workdir, port=free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


PG_BIN = Path("/usr/lib/postgresql/15/bin")


@dataclass
class PostgresServer:
    """A real PostgreSQL 15 cluster in a temporary directory, run as the ``postgres`` user (it
    refuses root), on a free loopback port with its unix socket in the directory. ``stop`` and
    ``start`` keep the port and the data (a restart under load)."""

    workdir: Path
    port: int
    host: str = "127.0.0.1"
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    @property
    def data(self) -> Path:
        return self.workdir / "data"

    def _as_postgres(self, *argv: str) -> list[str]:
        return [require_binary("runuser"), "-u", "postgres", "--", *argv]

    def init(self) -> None:
        shutil.chown(self.workdir, "postgres", "postgres")
        self.workdir.chmod(0o700)
        subprocess.run(
            self._as_postgres(
                str(PG_BIN / "initdb"), "-D", str(self.data), "--auth=trust", "--username=postgres",
                "--encoding=UTF8", "--no-sync",
            ),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def start(self) -> None:
        # fsync off: only an operating-system crash could lose data with it, which no test makes.
        self.proc = subprocess.Popen(
            self._as_postgres(
                str(PG_BIN / "postgres"), "-D", str(self.data), "-p", str(self.port),
                "-c", f"listen_addresses={self.host}", "-c", f"unix_socket_directories={self.workdir}",
                "-c", "fsync=off", "-c", "full_page_writes=off",
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_tcp(self.host, self.port, timeout=30.0)
        deadline = time.monotonic() + 30.0
        while subprocess.run(
            [str(PG_BIN / "pg_isready"), "-h", self.host, "-p", str(self.port)],
            stdout=subprocess.DEVNULL, check=False,
        ).returncode != 0:
            if time.monotonic() > deadline:
                raise TimeoutError(f"PostgreSQL on port {self.port} is not ready")
            time.sleep(0.05)

    def postmaster_pid(self) -> int | None:
        """The postmaster's own PID (``runuser`` is its parent), from ``postmaster.pid``."""
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        """Fast shutdown (SIGINT to the postmaster's PID: open transactions are rolled back)."""
        if self.proc is None:
            return
        pid = self.postmaster_pid()
        if pid is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            stop_process(self.proc)
        self.proc = None

    def reset(self) -> None:
        """Drop the billing tables (between tests)."""
        subprocess.run(
            [str(PG_BIN / "psql"), "-h", self.host, "-p", str(self.port), "-U", "postgres", "-q", "-c",
             "DROP TABLE IF EXISTS charging_events, statements, schema_version CASCADE"],
            check=True,
            stdout=subprocess.DEVNULL,
        )


@contextlib.contextmanager
def postgres_server(workdir: Path) -> Iterator[PostgresServer]:
    server = PostgresServer(workdir=workdir, port=free_port())
    server.init()
    server.start()
    try:
        yield server
    finally:
        server.stop()
