"""The real gateway as a subprocess (``python -m gateway run --config ...``) on free loopback ports.

Used by the runtime tests and by ``bench/bench_options.py``. The process is started by us and
stopped by its PID (SIGTERM, then SIGKILL); its log goes to a file in the work directory.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gateway.call.service import read_status
from tests.support.servers import free_udp_tcp_port, stop_process

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent


SIP_CORE_ONLY: dict[str, object] = {"dialplans": []}
"""``extra_config`` for a gateway without the demo tenant's dialplans (they need its trunks):
the SIP core, OPTIONS and the error answers, nothing routed."""


def options_request(host: str, port: int, local: tuple[str, int], transport: str = "UDP") -> bytes:
    """A minimal valid OPTIONS to ``host:port`` from ``local`` (with rport, RFC 3581)."""
    lhost = f"[{local[0]}]" if ":" in local[0] else local[0]
    rhost = f"[{host}]" if ":" in host else host
    tag = uuid.uuid4().hex[:8]
    return (
        f"OPTIONS sip:ping@{rhost}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {lhost}:{local[1]};branch=z9hG4bK{uuid.uuid4().hex};rport\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:probe@{lhost}>;tag={tag}\r\nTo: <sip:ping@{rhost}>\r\n"
        f"Call-ID: {uuid.uuid4().hex}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def udp_exchange(host: str, port: int, data: bytes, timeout: float = 1.0) -> bytes | None:
    """Send one datagram from a fresh socket and return the first datagram back (None: silence)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        sock.settimeout(timeout)
        sock.sendto(data, (host, port))
        try:
            return sock.recv(65535)
        except TimeoutError:
            return None


def probe_options(host: str, port: int, timeout: float = 1.0) -> bytes | None:
    """One OPTIONS over UDP from a fresh socket; the answer, or None after ``timeout``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        sock.settimeout(timeout)
        sock.sendto(options_request(host, port, sock.getsockname()[:2]), (host, port))
        try:
            return sock.recv(65535)
        except TimeoutError:
            return None


@dataclass
class GatewayProcess:
    """One gateway subprocess with its own config file in ``workdir``."""

    workdir: Path
    host: str = "127.0.0.1"
    port: int = 0
    ipv6_port: int | None = None
    sip_overrides: dict[str, object] = field(default_factory=dict)
    extra_config: dict[str, object] = field(default_factory=dict)  # more top-level sections
    log_level: str = "INFO"
    workers: int = 1  # > 1: the supervisor and its workers (needs REDIS_URL in ``env``)
    env: dict[str, str] = field(default_factory=dict)  # added to the environment
    proc: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.workdir / "config" / "gateway.yaml"

    def status_sockets(self) -> list[Path]:
        """The call-status socket of the process, or of each worker (``-wN`` before the suffix)."""
        call = self.extra_config.get("call")
        configured = call.get("status_socket") if isinstance(call, dict) else None
        path = Path(str(configured)) if configured else Path("call-status.sock")
        path = path if path.is_absolute() else self.workdir / "var" / path
        if self.workers == 1:
            return [path]
        return [path.with_name(f"{path.stem}-w{i}{path.suffix}") for i in range(self.workers)]

    @property
    def log_path(self) -> Path:
        return self.workdir / "gateway.log"

    def write_config(self) -> None:
        if not self.port:
            self.port = free_udp_tcp_port(self.host)
        listen = [
            {"transport": "udp", "host": self.host, "port": self.port},
            {"transport": "tcp", "host": self.host, "port": self.port},
        ]
        if self.ipv6_port is not None:
            listen += [
                {"transport": "udp", "host": "::1", "port": self.ipv6_port},
                {"transport": "tcp", "host": "::1", "port": self.ipv6_port},
            ]
        config = {
            "node": {"id": "test-gw"},
            "sip": {"listen": listen, **self.sip_overrides},
            "api": {"enabled": False},
            "logging": {"level": self.log_level},
            "dialplans": [str(PROJECT_ROOT / "dialplans")],
            "state_dir": str(self.workdir / "var"),
            # The test machine runs two pytest processes, their gateways, SIPp, Kamailio and
            # Redis on two cores: the event loop of an idle gateway can lag a quarter second
            # there, which the shipped overload bounds read as overload. Tests of the overload
            # gate set their own `overload` section (it replaces this one).
            "overload": {"lag_high": 2.0, "lag_low": 0.5},
            **self.extra_config,
        }
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(config), encoding="utf-8")

    def start(self, timeout: float = 20.0) -> None:
        """Start the process and wait until it answers OPTIONS over UDP (with workers: until every
        worker answers on its status socket too, since the first one up takes all the port's
        traffic until the others bind)."""
        self.write_config()
        command = [sys.executable, "-m", "gateway", "run", "--config", str(self.config_path)]
        if self.workers > 1:
            command += ["--workers", str(self.workers)]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                command, cwd=PROJECT_ROOT, stdout=log, stderr=log, env={**os.environ, **self.env}
            )
        deadline = time.monotonic() + timeout
        answered = False
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.log()}")
            # Once answered, no more OPTIONS: a stream of them would spend 127.0.0.1's flood
            # budget (security.budget) while the other workers start, and the test's first
            # request from that address would then be dropped unanswered.
            if not answered:
                answer = probe_options(self.host, self.port, timeout=0.2)
                answered = answer is not None and answer.startswith(b"SIP/2.0 200 ")
            if answered:
                if self.workers_up():
                    return
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"gateway did not answer OPTIONS within {timeout}s:\n{self.log()}")

    def workers_up(self) -> bool:
        if self.workers == 1:
            return True
        try:
            for path in self.status_sockets():
                read_status(path, timeout=0.5)
        except OSError:
            return False
        return True

    def stop(self) -> int | None:
        """SIGTERM (then SIGKILL) by PID; returns the exit code."""
        if self.proc is None:
            return None
        stop_process(self.proc, timeout=10)
        code = self.proc.returncode
        self.proc = None
        return code

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""


def demo_trunks_file(path: Path, *, carrier: int, pbx: int) -> Path:
    """The shipped demo trunks (``config/trunks.yaml``) written to ``path`` with the carrier
    destination and the ``acme-pbx`` peer moved to the tests' free ports."""
    data: dict[str, Any] = yaml.safe_load((PROJECT_ROOT / "config" / "trunks.yaml").read_text())
    for trunk in data["trunks"]:
        if trunk["name"] == "carrier":
            for dest in trunk["destinations"]:
                dest["port"] = carrier
        if trunk["name"] == "acme-pbx":
            for match in trunk["match"]:
                match["port"] = pbx
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path
