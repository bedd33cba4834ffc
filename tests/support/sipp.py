"""Running SIPp scenarios against the gateway (tests and benchmarks share this)."""

from __future__ import annotations

import csv
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.support.gateway import PROJECT_ROOT
from tests.support.servers import require_binary

OPTIONS_SCENARIO = PROJECT_ROOT / "bench" / "sipp" / "options_uac.xml"


@dataclass(frozen=True)
class SippResult:
    """Exit code (0: every call succeeded) and the final cumulative statistics."""

    returncode: int
    successful: int
    failed: int
    retransmissions: int
    elapsed: float
    output: str

    @property
    def rate(self) -> float:
        """Successful calls per second over the whole run."""
        return self.successful / self.elapsed if self.elapsed > 0 else 0.0


def _seconds(text: str) -> float:
    """SIPp's ``HH:MM:SS:uuuuuu`` (or ``...:mmm``) elapsed time, in seconds."""
    parts = text.strip().split(":")
    hours, minutes, seconds = (int(p) for p in parts[:3])
    fraction = parts[3] if len(parts) > 3 else "0"
    return hours * 3600 + minutes * 60 + seconds + int(fraction) / 10.0 ** len(fraction)


def stat_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a SIPp ``-trace_stat`` or ``-trace_counts`` file ([] until it exists)."""
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter=";"))


def received(workdir: Path, statuses: tuple[str, ...] = ("200", "503")) -> dict[str, int]:
    """How many responses of each status the SIPp runs in ``workdir`` received, from their
    ``-trace_counts`` files (every scenario line receiving that status counted)."""
    totals = dict.fromkeys(statuses, 0)
    for path in workdir.glob("*_counts.csv"):
        rows = stat_rows(path)
        for name, value in (rows[-1] if rows else {}).items():
            for status in statuses:
                if name.endswith(f"_{status}_Recv") and value:
                    totals[status] += int(value)
    return totals


def run_sipp(
    target: str,
    workdir: Path,
    *,
    rate: int,
    calls: int,
    scenario: Path = OPTIONS_SCENARIO,
    local_ip: str = "127.0.0.1",
    max_concurrent: int = 2000,
    timeout: float = 120,
    injection: Path | None = None,
    transport: str = "u1",
) -> SippResult:
    """Run ``scenario`` against ``target`` (host:port) at ``rate`` calls/s until ``calls`` ended.

    ``transport`` is SIPp's ``-t``: ``u1`` one UDP socket, ``t1`` one TCP connection for every
    call, ``tn`` one TCP connection per call."""
    sipp = require_binary("sipp")
    stats = workdir / f"sipp_{rate}_{calls}.csv"
    stats.unlink(missing_ok=True)
    command = [
        sipp, "-sf", str(scenario), "-i", local_ip, "-p", "0", "-r", str(rate), "-m", str(calls),
        "-l", str(max_concurrent), "-nostdin", "-trace_stat", "-stf", str(stats), "-fd", "1",
        "-timeout", f"{int(timeout)}s", "-timeout_error", "-t", transport, "-max_socket", "4096", target,
    ]
    if injection is not None:  # CSV of per-call values ([field0] ...), e.g. users and credentials
        command[1:1] = ["-inf", str(injection)]
    proc = subprocess.run(
        command, cwd=workdir, capture_output=True, text=True, timeout=timeout + 30, check=False
    )
    with stats.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter=";"))
    last = rows[-1]
    return SippResult(
        returncode=proc.returncode,
        successful=int(last["SuccessfulCall(C)"]),
        failed=int(last["FailedCall(C)"]),
        retransmissions=int(last["Retransmissions(C)"]),
        elapsed=_seconds(last["ElapsedTime(C)"]),
        output=proc.stdout[-4000:] + proc.stderr[-4000:],
    )
