"""SIPp step load shared by the call benchmarks (``bench_calls``, ``bench_realpath``).

A step: one SIPp caller places ``calls`` calls at ``rate`` per second (``call_uac.xml`` unless
told otherwise) toward a target; its cumulative statistics say how many succeeded and failed,
its ``-trace_rtt`` file gives each call's setup delay (INVITE -> 200 as the caller sees it).
With a :class:`FarEnd` the callee is a fresh SIPp per step whose own failures count too (a call
the caller saw complete can still be broken on the far leg: a late ACK, a 200 retransmitted to
exhaustion), and a step passes only when both sides report none.

Every process is started here and stopped by its PID.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.gateway import PROJECT_ROOT
from tests.support.servers import free_udp_tcp_port, require_binary, stop_process
from tests.support.sipp import _seconds, stat_rows

SIPP_DIR = PROJECT_ROOT / "bench" / "sipp"
KAMAILIO_CFG = PROJECT_ROOT / "bench" / "kamailio" / "kamailio.cfg"
UAC = SIPP_DIR / "call_uac.xml"
FAR_END_RECV_TIMEOUT_MS = 3000
"""A far-end call waiting longer than this for the ACK or the BYE has failed (SIPp -recv_timeout)."""


@dataclass
class Step:
    rate: int
    calls: int
    successful: int
    failed: int
    elapsed: float  # seconds SIPp took to place the calls
    rtd: list[float]
    far_failed: int = 0  # failed calls the callee SIPp counted (0 without a FarEnd)
    far_successful: int | None = None
    cpu: float | None = None  # CPU seconds the system under test spent on the step, when measured

    @property
    def achieved(self) -> float:
        """Calls placed per second while SIPp was placing them (``elapsed``: until the last
        one was created, interpolated between SIPp's one-second statistics rows)."""
        return self.calls / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def passed(self) -> bool:
        return (self.failed == 0 and self.far_failed == 0 and self.successful == self.calls
                and self.achieved >= 0.95 * self.rate)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))]) if ordered else float("nan")


def sipp_uas(workdir: Path, port: int, *, stats: Path | None = None,
             scenario: Path = SIPP_DIR / "call_uas.xml") -> subprocess.Popen[bytes]:
    """A SIPp callee on 127.0.0.1:``port``; with ``stats`` it writes its statistics there every
    second and fails calls that wait for the ACK or BYE past FAR_END_RECV_TIMEOUT_MS."""
    command = [
        require_binary("sipp"), "-sf", str(scenario), "-i", "127.0.0.1", "-p", str(port), "-nostdin",
        "-max_socket", "60000", "-l", "100000",
    ]
    if stats is not None:
        command += ["-trace_stat", "-stf", str(stats), "-fd", "1",
                    "-recv_timeout", str(FAR_END_RECV_TIMEOUT_MS)]
    workdir.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(command, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@dataclass
class FarEnd:
    """A fresh SIPp callee per step on ``port``, its failures read after the step."""

    workdir: Path
    port: int
    scenario: Path = SIPP_DIR / "call_uas.xml"
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _stats: Path | None = field(default=None, init=False)

    def start(self) -> None:
        self._stats = self.workdir / f"far_{time.monotonic_ns()}.csv"
        self._proc = sipp_uas(self.workdir, self.port, stats=self._stats, scenario=self.scenario)
        time.sleep(0.5)  # bound before the first INVITE

    def finish(self, expected: int) -> tuple[int, int]:
        """(successful, failed) once the callee's counts settle: every call the caller completed
        ended there too, and stragglers had FAR_END_RECV_TIMEOUT_MS to fail."""
        assert self._proc is not None and self._stats is not None
        deadline = time.monotonic() + FAR_END_RECV_TIMEOUT_MS / 1000 + 3
        while True:
            time.sleep(1.1)  # one statistics period
            rows = stat_rows(self._stats)
            last = rows[-1] if rows else {}
            ok, failed = int(last.get("SuccessfulCall(C)", 0)), int(last.get("FailedCall(C)", 0))
            if ok + failed >= expected or time.monotonic() > deadline:
                break
        stop_process(self._proc)
        self._proc = None
        return ok, failed

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc)
            self._proc = None


def sipp_step(
    workdir: Path, target: str, rate: int, calls: int, *, hold_ms: int = 0, limit: int = 30000,
    socket_per_call: bool = False, caller: tuple[str, int] = ("127.0.0.1", 0), service: str = "13800138000",
    extra: tuple[str, ...] = (), scenario: Path = UAC, far_end: FarEnd | None = None,
    cpu: CpuMeter | None = None,
) -> Step:
    """Run ``calls`` calls at ``rate`` cps; cumulative stats and per-call setup delays.
    ``socket_per_call``: each call from its own UDP port (``-t un``), as many peers would be; the
    kernel spreads them over the gateway's workers (one SIPp socket would reach only one).
    ``caller``: SIPp's address and port; ``extra``: more SIPp options (e.g. -au / -ap);
    ``far_end``: the callee SIPp, fresh for this step, whose failures count; ``cpu``: the CPU
    the system under test spent during the step."""
    workdir.mkdir(parents=True, exist_ok=True)
    tag = f"{rate}_{calls}_{time.monotonic_ns()}"
    stats = workdir / f"stat_{tag}.csv"
    command = [
        require_binary("sipp"), "-sf", str(scenario), "-i", caller[0], "-p", str(caller[1]),
        "-r", str(rate), "-m", str(calls), "-l", str(limit), "-d", str(hold_ms), "-s", service,
        "-nostdin", "-trace_stat", "-stf", str(stats), "-fd", "1", "-trace_rtt", "-rtt_freq", "1",
        "-timeout", f"{int(calls / rate) + 40 + hold_ms // 1000}s", "-timeout_error",
        "-max_socket", "10000" if socket_per_call else "60000",  # -t un: below the open-files limit
        *(["-t", "un"] if socket_per_call else ["-t", "u1"]),
        *extra,
        target,
    ]
    if far_end is not None:
        far_end.start()
    started = cpu.seconds() if cpu is not None else 0.0
    subprocess.run(
        command, cwd=workdir, capture_output=True, text=True, check=False, env={**os.environ},
        timeout=calls / rate + 120 + hold_ms / 1000,
    )
    spent = cpu.seconds() - started if cpu is not None else None
    rows = stat_rows(stats)
    last = rows[-1]
    placed_in = _seconds(last["ElapsedTime(C)"])
    before = (0.0, 0)
    for stat in rows:
        at, created = _seconds(stat["ElapsedTime(C)"]), int(stat["OutgoingCall(C)"])
        if created >= calls:
            # interpolate when the last call was created inside this reporting interval
            span, made = at - before[0], created - before[1]
            placed_in = before[0] + (span * (calls - before[1]) / made if made else span)
            break
        before = (at, created)
    rtd: list[float] = []
    for path in workdir.glob(f"{scenario.stem}_*_rtt.csv"):
        with path.open(newline="", encoding="utf-8") as handle:
            for row in csv.reader(handle, delimiter=";"):
                # Date_ms;response_time_ms;rtd_no (SIPp's resolution: whole milliseconds)
                if len(row) >= 3 and row[1] and row[1][0].isdigit():
                    rtd.append(float(row[1]))
        path.unlink()
    stats.unlink(missing_ok=True)
    step = Step(rate, calls, int(last["SuccessfulCall(C)"]), int(last["FailedCall(C)"]), placed_in, rtd,
                cpu=spent)
    if far_end is not None:
        step.far_successful, step.far_failed = far_end.finish(step.successful)
    return step


def step_rates(
    name: str, workdir: Path, target: str, rates: list[int], duration: float, *,
    socket_per_call: bool = False, settle: float = 2.0, **options: Any,
) -> list[Step]:
    """Step the offered rate up until a step fails; each step printed as it ends."""
    results = []
    for rate in rates:
        calls = max(200, int(rate * duration))
        step = sipp_step(workdir, target, rate, calls, socket_per_call=socket_per_call, **options)
        results.append(step)
        sys.stdout.write(f"  {name:9} {describe(step)}\n")
        sys.stdout.flush()
        if not step.passed:
            break
        time.sleep(settle)  # let retransmission timers of the previous step settle
    return results


def describe(step: Step) -> str:
    """One line: offered rate, outcome on both sides, setup delay, CPU per call, verdict."""
    far = f", far end {step.far_failed} failed" if step.far_successful is not None else ""
    cpu = f", CPU {1000 * step.cpu / max(step.successful, 1):.2f} ms/call" if step.cpu is not None else ""
    return (f"offered {step.rate:6d} cps: {step.successful:7d} ok {step.failed:5d} failed{far}, achieved "
            f"{step.achieved:8.1f} cps, setup p50 {percentile(step.rtd, 0.5):.0f} p99 "
            f"{percentile(step.rtd, 0.99):.0f} ms{cpu}  {'pass' if step.passed else 'FAIL'}")


def best(steps: list[Step]) -> int:
    passing = [s.rate for s in steps if s.passed]
    return max(passing) if passing else 0


def start_kamailio(callee_port: int) -> tuple[subprocess.Popen[bytes], int]:
    """Kamailio 5.6 as a stateful record-routing proxy to the callee (bench/kamailio/kamailio.cfg);
    the process and its SIP port."""
    port = free_udp_tcp_port()
    kam = subprocess.Popen(
        ["kamailio", "-f", str(KAMAILIO_CFG), "-m", "1024", "-x", "tlsf", "-DD", "-E",
         "-l", f"udp:127.0.0.1:{port}", "-A", f'CALLEE="sip:127.0.0.1:{callee_port}"'],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    time.sleep(1.5)
    return kam, port


class CpuMeter:
    """CPU seconds (user + system) of a process and all its descendants (a gateway supervisor
    and its workers), from /proc/PID/stat; children that exited are not counted, so measure
    across a step while they all run."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._tick = os.sysconf("SC_CLK_TCK")

    def _tree(self) -> list[int]:
        pids, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            pids.append(pid)
            for task in Path(f"/proc/{pid}/task").glob("*/children"):
                todo += [int(child) for child in task.read_text().split()]
        return pids

    def seconds(self) -> float:
        total = 0
        for pid in self._tree():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            except FileNotFoundError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
        return total / self._tick
