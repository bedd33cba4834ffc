"""A gateway subprocess with call control on static test trunks, SIPp peers around it, and the
status socket read to prove that every call leaves nothing behind."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gateway.call.service import read_status
from tests.support.gateway import PROJECT_ROOT, GatewayProcess
from tests.support.servers import free_udp_tcp_port, require_binary, stop_process

SIPP_DIR = PROJECT_ROOT / "bench" / "sipp"
LINE_PASSWORD = "acme-iad-secret"  # the demo IAD's lines (config/trunks.yaml)
TIMERS = {"t1": 0.05, "t2": 0.2, "t4": 0.5, "timer_d": 0.5}  # short waits: leak checks settle fast


@dataclass
class Lane:
    """One test's inbound trunk (SIPp caller on ``caller_port``) routed to a carrier trunk whose
    destinations are ``callee_ports`` (in failover order)."""

    name: str
    caller_ports: list[int]
    callee_ports: list[int]
    max_calls: int = 1000
    max_cps: float = 10000
    call_policy: dict[str, Any] = field(default_factory=dict)
    callee_transport: str = "udp"
    caller_match: list[dict[str, Any]] | None = None  # default: 127.0.0.1 with each caller port
    # "carrier": a trusted next hop (RFC 3325 §2.3); "peer": a static peer outside the trust
    # domain (its match entries are where the calls go).
    callee_kind: str = "carrier"


def trunks_config(lanes: list[Lane]) -> dict[str, Any]:
    trunks: list[dict[str, Any]] = []
    for lane in lanes:
        trunks.append(
            {
                "name": f"in-{lane.name}",
                "kind": "peer",
                "group": "test",
                "match": lane.caller_match
                or [{"host": "127.0.0.1", "port": port} for port in lane.caller_ports],
                "max_calls": lane.max_calls,
                "max_cps": lane.max_cps,
            }
        )
        outbound: dict[str, Any] = {"name": f"out-{lane.name}", "max_calls": 100000, "max_cps": 10000}
        if lane.callee_kind == "peer":
            outbound |= {
                "kind": "peer",
                "group": "test",
                "match": [
                    {"host": "127.0.0.1", "port": port, "transport": lane.callee_transport}
                    for port in lane.callee_ports
                ],
            }
        else:
            outbound |= {
                "kind": "carrier",
                "destinations": [
                    {"host": "127.0.0.1", "port": port, "transport": lane.callee_transport, "priority": i}
                    for i, port in enumerate(lane.callee_ports)
                ],
            }
        trunks.append(outbound)
    return {"trunks": trunks}


def gateway_for(workdir: Path, lanes: list[Lane], *, log_level: str = "INFO", **call: Any) -> GatewayProcess:
    (workdir / "config").mkdir(parents=True, exist_ok=True)
    trunks_path = workdir / "config" / "trunks.yaml"
    trunks_path.write_text(yaml.safe_dump(trunks_config(lanes)), encoding="utf-8")
    call_section: dict[str, Any] = {
        "routes": [{"source": f"in-{lane.name}", "target": f"out-{lane.name}"} for lane in lanes],
        "trunks": {f"in-{lane.name}": lane.call_policy for lane in lanes if lane.call_policy},
        "status_socket": str(workdir / "call.sock"),
        "attempt_timeout": 1.0,
        "drain_grace": 1.0,
        **call,
    }
    return GatewayProcess(
        workdir,
        sip_overrides={"timers": TIMERS},
        extra_config={
            "registrar": {"trunks": str(trunks_path), "qualify": {"enabled": False}},
            "call": call_section,
            "dialplans": [],  # static routes only
        },
        log_level=log_level,
    )


def status(gw: GatewayProcess) -> dict[str, Any]:
    return read_status(gw.workdir / "call.sock")


def wait_idle(gw: GatewayProcess, timeout: float = 15.0) -> dict[str, Any]:
    """Poll the status until no call, dialog, timer, limit slot or transaction is left."""
    deadline = time.monotonic() + timeout
    while True:
        snap = status(gw)
        if (
            snap["calls"] == 0
            and snap["dialogs"] == 0
            and snap["pending_invites"] == 0
            and snap["timers"] == 0
            and not snap["limits"]
            and snap["transactions"] == 0
        ):
            return snap
        if time.monotonic() > deadline:
            raise AssertionError(f"state left behind: {snap}")
        time.sleep(0.1)


def wait_for(gw: GatewayProcess, predicate: Any, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        snap = status(gw)
        if predicate(snap):
            return snap
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached: {snap}")
        time.sleep(0.05)


def sipp_command(
    scenario: str,
    *,
    port: int,
    target: str | None = None,
    calls: int = 1,
    rate: float = 10,
    transport: str = "u1",
    service: str = "13800138000",
    extra: list[str] | None = None,
    timeout: float = 30,
    local_ip: str = "127.0.0.1",
) -> list[str]:
    command = [
        require_binary("sipp"),
        "-sf",
        str(SIPP_DIR / scenario),
        "-i",
        local_ip,
        "-p",
        str(port),
        "-t",
        transport,
        "-m",
        str(calls),
        "-r",
        str(rate),
        "-s",
        service,
        "-nostdin",
        "-timeout",
        f"{int(timeout)}s",
        "-timeout_error",
        "-max_recv_loops",
        "1000",
        "-trace_err",
        "-trace_screen",
    ]
    command += extra or []
    if target is not None:
        command.append(target)
    return command


@contextmanager
def sipp_server(workdir: Path, scenario: str, port: int, **kwargs: Any) -> Iterator[subprocess.Popen[bytes]]:
    """A SIPp answering side in the background, stopped by PID afterwards."""
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        sipp_command(scenario, port=port, **kwargs),
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.3)  # let it bind before the first INVITE (a miss would only cost a retransmission)
        yield proc
    finally:
        stop_process(proc)


def line_credentials(number: str, password: str = LINE_PASSWORD) -> list[str]:
    """SIPp options answering the 407 a registered line's INVITE gets (RFC 3261 §22.3)."""
    return ["-au", number, "-ap", password]


def run_caller(
    workdir: Path, scenario: str, port: int, gw: GatewayProcess, *, line: str | None = None, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Run a SIPp caller to the end; ``line``: it calls as that registered line (credentials)."""
    workdir.mkdir(parents=True, exist_ok=True)
    if line is not None:
        kwargs["extra"] = [*kwargs.get("extra", []), *line_credentials(line)]
    command = sipp_command(scenario, port=port, target=f"127.0.0.1:{gw.port}", **kwargs)
    return subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=90, check=False)


def screen(workdir: Path) -> str:
    """SIPp's screen and error traces of the runs in ``workdir`` (for assertion messages)."""
    out = []
    for path in sorted(workdir.glob("*_screen.log")) + sorted(workdir.glob("*_errors.log")):
        out.append(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}")
    return "\n".join(out)


def silent_udp_socket() -> socket.socket:
    """A UDP port that receives and never answers (a dead carrier destination)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def metric(api_port: int, name: str) -> float:
    """A sample of the gateway's ``/metrics`` (``name`` with its labels as exposed, e.g.
    ``x_total{reason="y"}``); AssertionError when it is not exposed."""
    with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/metrics", timeout=5) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith(f"{name} "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not exposed")


def free_port() -> int:
    """A SIP peer's port: free for UDP and TCP, never handed out twice (tests.support.servers)."""
    return free_udp_tcp_port()


