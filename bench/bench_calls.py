"""Call throughput of the B2BUA against Kamailio and SIPp alone: ``python -m bench.bench_calls``.

For each system under test the same SIPp caller (``bench/sipp/call_uac.xml``: INVITE, 180,
200, ACK, BYE, short calls) and SIPp callee (``call_uas.xml``) are used:

* ``direct``   — caller straight to callee (what SIPp itself carries here);
* ``kamailio`` — Kamailio 5.6 as a stateful record-routing proxy (``bench/kamailio/kamailio.cfg``,
  run with ``-m 1024 -x tlsf``);
* ``gateway``  — the gateway process (B2BUA: two dialogs per call) on a static bench trunk.

The offered rate is stepped up; a step passes when no call failed and the achieved rate is at
least 95 % of the offered one. The figure is the highest passing rate. Then, on the gateway:
call-setup delay (INVITE → 200 as the caller sees it, median and p99) at half its maximum rate
compared with ``direct`` at the same rate, the CPU time per call of the gateway's processes
(supervisor and workers, ``/proc`` utime + stime) over that step, and concurrent established
calls held with the memory per call (RSS growth / calls).

With ``--workers N`` the SIPp caller uses a socket per call (``-t un``, many peers) unless
``--one-socket`` is given: then every call comes from ONE address and port, as from a carrier
SBC or a PBX trunk, and only the gateway's own spreading (gateway.transport.handoff) can put
the workers to use.

Everything runs on 127.0.0.1 with free ports; every process is started here and stopped by its
PID. Options: ``--duration`` seconds per step, ``--rates`` per target, ``--hold`` calls.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gateway.call.service import read_status
from tests.support.gateway import PROJECT_ROOT, GatewayProcess
from tests.support.servers import RedisServer, free_udp_tcp_port, require_binary, stop_process
from tests.support.sipp import _seconds

SIPP_DIR = PROJECT_ROOT / "bench" / "sipp"
KAMAILIO_CFG = PROJECT_ROOT / "bench" / "kamailio" / "kamailio.cfg"
CALLER_IP = "127.0.0.3"  # the bench trunk is recognised by this source address


@dataclass
class Step:
    rate: int
    calls: int
    successful: int
    failed: int
    elapsed: float  # seconds SIPp took to place the calls
    rtd: list[float]

    @property
    def achieved(self) -> float:
        """Calls placed per second while SIPp was placing them (``elapsed``: until the last
        one was created, interpolated between SIPp's one-second statistics rows)."""
        return self.calls / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def passed(self) -> bool:
        return self.failed == 0 and self.successful == self.calls and self.achieved >= 0.95 * self.rate


def sipp_uas(workdir: Path, port: int) -> subprocess.Popen[bytes]:
    command = [
        require_binary("sipp"),
        "-sf",
        str(SIPP_DIR / "call_uas.xml"),
        "-i",
        "127.0.0.1",
        "-p",
        str(port),
        "-nostdin",
        "-max_socket",
        "60000",
        "-l",
        "100000",
    ]
    return subprocess.Popen(command, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def sipp_step(
    workdir: Path, target: str, rate: int, calls: int, *, hold_ms: int = 0, limit: int = 30000,
    socket_per_call: bool = False, caller: tuple[str, int] = (CALLER_IP, 0), service: str = "13800138000",
    extra: tuple[str, ...] = (),
) -> Step:
    """Run ``calls`` calls at ``rate`` cps; cumulative stats and per-call setup delays.
    ``socket_per_call``: each call from its own UDP port (``-t un``), as many peers would be; the
    kernel spreads them over the gateway's workers (one SIPp socket would reach only one).
    ``caller``: SIPp's address and port; ``extra``: more SIPp options (e.g. -au / -ap)."""
    workdir.mkdir(parents=True, exist_ok=True)
    tag = f"{rate}_{calls}_{time.monotonic_ns()}"
    stats = workdir / f"stat_{tag}.csv"
    command = [
        require_binary("sipp"),
        "-sf",
        str(SIPP_DIR / "call_uac.xml"),
        "-i",
        caller[0],
        "-p",
        str(caller[1]),
        "-r",
        str(rate),
        "-m",
        str(calls),
        "-l",
        str(limit),
        "-d",
        str(hold_ms),
        "-s",
        service,
        "-nostdin",
        "-trace_stat",
        "-stf",
        str(stats),
        "-fd",
        "1",
        "-trace_rtt",
        "-rtt_freq",
        "1",
        "-timeout",
        f"{int(calls / rate) + 40 + hold_ms // 1000}s",
        "-timeout_error",
        "-max_socket",
        "10000" if socket_per_call else "60000",  # -t un: below the open-files limit
        *(["-t", "un"] if socket_per_call else []),
        *extra,
        target,
    ]
    env = {**os.environ}
    subprocess.run(
        command,
        cwd=workdir,
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=calls / rate + 120 + hold_ms / 1000,
    )
    rows = list(csv.DictReader(stats.open(newline="", encoding="utf-8"), delimiter=";"))
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
    for path in workdir.glob("call_uac_*_rtt.csv"):
        with path.open(newline="", encoding="utf-8") as handle:
            for row in csv.reader(handle, delimiter=";"):
                # Date_ms;response_time_ms;rtd_no (SIPp's resolution: whole milliseconds)
                if len(row) >= 3 and row[1] and row[1][0].isdigit():
                    rtd.append(float(row[1]))
        path.unlink()
    stats.unlink(missing_ok=True)
    return Step(
        rate,
        calls,
        int(last["SuccessfulCall(C)"]),
        int(last["FailedCall(C)"]),
        placed_in,
        rtd,
    )


def step_rates(
    name: str, workdir: Path, target: str, rates: list[int], duration: float, *,
    socket_per_call: bool = False, **options: Any,
) -> list[Step]:
    results = []
    for rate in rates:
        calls = max(200, int(rate * duration))
        step = sipp_step(workdir, target, rate, calls, socket_per_call=socket_per_call, **options)
        results.append(step)
        verdict = "pass" if step.passed else "FAIL"
        sys.stdout.write(
            f"  {name:9} offered {rate:6d} cps: {step.successful:7d} ok {step.failed:5d} failed, "
            f"achieved {step.achieved:8.1f} cps  {verdict}\n"
        )
        sys.stdout.flush()
        if not step.passed:
            break
        time.sleep(2.0)  # let retransmission timers of the previous step settle
    return results


def best(steps: list[Step]) -> int:
    passing = [s.rate for s in steps if s.passed]
    return max(passing) if passing else 0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))]) if ordered else float("nan")


def start_gateway(
    workdir: Path, uas_port: int, limits_backend: str = "memory", *, workers: int = 1, redis_url: str = ""
) -> GatewayProcess:
    """The gateway on a static bench trunk; ``workers`` > 1 share its port (they need Redis)."""
    trunks = {
        "trunks": [
            {
                "name": "bench-in",
                "kind": "peer",
                "group": "bench",
                "match": [{"host": CALLER_IP}],
                "max_calls": 100000,
                "max_cps": 10000,
            },
            {
                "name": "bench-out",
                "kind": "carrier",
                "destinations": [{"host": "127.0.0.1", "port": uas_port}],
                "max_calls": 100000,
                "max_cps": 10000,
            },
        ]
    }
    (workdir / "config").mkdir(parents=True, exist_ok=True)
    trunks_path = workdir / "config" / "trunks.yaml"
    trunks_path.write_text(yaml.safe_dump(trunks), encoding="utf-8")
    gw = GatewayProcess(
        workdir,
        extra_config={
            "registrar": {"trunks": str(trunks_path), "qualify": {"enabled": False}},
            "dialplans": [],  # static route only
            "call": {
                "routes": [{"source": "bench-in", "target": "bench-out"}],
                "status_socket": str(workdir / "call.sock"),
                "max_duration": 3600,
                "limits_backend": limits_backend,
            },
        },
        log_level="WARNING",
        workers=workers,
        env={"REDIS_URL": redis_url} if redis_url else {},
    )
    gw.start()
    return gw


def cpu_seconds(gw: GatewayProcess) -> float:
    """User + system CPU time used so far by the gateway process and its worker processes."""
    assert gw.proc is not None
    pid = gw.proc.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    ticks = 0
    for each in [pid, *map(int, children)]:
        fields = Path(f"/proc/{each}/stat").read_text().rpartition(")")[2].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (proc(5) fields 14, 15)
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=4.0, help="seconds of calls per step")
    parser.add_argument("--gateway-rates", default="250,500,750,1000,1250,1500,1750,2000,2500,3000")
    parser.add_argument("--kamailio-rates", default="1000,2000,3000,4000,5000,6000,8000,10000")
    parser.add_argument("--direct-rates", default="2000,4000,6000,8000,10000,12000")
    parser.add_argument("--hold", type=int, default=10000, help="concurrent calls to hold (0: skip)")
    parser.add_argument("--only", choices=["gateway", "kamailio", "direct"], action="append")
    parser.add_argument("--workers", type=int, default=2, help="gateway worker processes")
    parser.add_argument("--one-socket", action="store_true",
                        help="the caller is one SIPp socket (one peer address) even with several workers")
    parser.add_argument("--redis", action="store_true",
                        help="limits in Redis with one worker too (several workers always use it)")
    parser.add_argument("--delay-at", type=int, default=0, help="gateway: skip the steps, measure delay here")
    args = parser.parse_args(argv)
    targets = args.only or ["direct", "kamailio", "gateway"]
    rates = {
        "gateway": [int(r) for r in args.gateway_rates.split(",")],
        "kamailio": [int(r) for r in args.kamailio_rates.split(",")],
        "direct": [int(r) for r in args.direct_rates.split(",")],
    }
    figures: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="bench_calls_") as tmp:
        work = Path(tmp)
        uas_port = free_udp_tcp_port()
        uas = sipp_uas(work, uas_port)
        time.sleep(0.5)

        def fresh_callee() -> None:
            """A new SIPp callee for the next system: calls a failed step left behind in the old
            one (waiting for an ACK or BYE that never comes) must not count against the next."""
            nonlocal uas
            stop_process(uas)
            uas = sipp_uas(work, uas_port)
            time.sleep(0.5)

        try:
            if "direct" in targets:
                sys.stdout.write("direct (SIPp caller -> SIPp callee)\n")
                figures["direct"] = best(
                    step_rates("direct", work, f"127.0.0.1:{uas_port}", rates["direct"], args.duration)
                )
            if "kamailio" in targets:
                fresh_callee()
                sys.stdout.write("kamailio 5.6 (stateful record-routing proxy, -m 1024 -x tlsf)\n")
                port = free_udp_tcp_port()
                kam = subprocess.Popen(
                    [
                        "kamailio",
                        "-f",
                        str(KAMAILIO_CFG),
                        "-m",
                        "1024",
                        "-x",
                        "tlsf",
                        "-DD",
                        "-E",
                        "-l",
                        f"udp:127.0.0.1:{port}",
                        "-A",
                        f'CALLEE="sip:127.0.0.1:{uas_port}"',
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                time.sleep(1.5)
                try:
                    figures["kamailio"] = best(
                        step_rates("kamailio", work, f"127.0.0.1:{port}", rates["kamailio"], args.duration)
                    )
                finally:
                    stop_process(kam)
            if "gateway" in targets:
                fresh_callee()
                shared = args.workers > 1
                per_call = shared and not args.one_socket
                sys.stdout.write(
                    f"gateway (B2BUA, {args.workers} worker process(es) on one port"
                    f"{', registrations and limits in Redis' if shared or args.redis else ''}"
                    f"{', one caller port per call' if per_call else ', ONE caller socket'})\n"
                )
                redis = None
                if shared or args.redis:
                    redis = RedisServer(work / "redis", free_udp_tcp_port())
                    redis.workdir.mkdir()
                    redis.start()
                backend = "redis" if shared or args.redis else "memory"

                def gateway(name: str) -> GatewayProcess:
                    return start_gateway(work / name, uas_port, backend, workers=args.workers,
                                         redis_url=redis.url if redis is not None else "")

                workers = [gateway("gw")]
                try:
                    target = f"127.0.0.1:{workers[0].port}"
                    if args.delay_at:
                        half = args.delay_at
                    else:
                        figures["gateway"] = best(
                            step_rates("gateway", work, target, rates["gateway"], args.duration,
                                       socket_per_call=per_call)
                        )
                        half = max(50, figures["gateway"] // 2)
                    # A fresh gateway and callee: the failed top step leaves transactions
                    # retransmitting for 64*T1, which would load the delay measurement.
                    workers.pop().stop()
                    fresh_callee()
                    workers.append(gateway("gd"))
                    target = f"127.0.0.1:{workers[0].port}"
                    cpu_before = cpu_seconds(workers[0])
                    gw_step = sipp_step(work, target, half, int(half * args.duration),
                                        socket_per_call=per_call)
                    cpu = cpu_seconds(workers[0]) - cpu_before
                    direct_step = sipp_step(work, f"127.0.0.1:{uas_port}", half, int(half * args.duration),
                                            socket_per_call=per_call)
                    sys.stdout.write(
                        f"setup delay at {half} cps (INVITE -> 200 at the caller, ms): gateway median "
                        f"{statistics.median(gw_step.rtd) if gw_step.rtd else float('nan'):.2f} p99 "
                        f"{percentile(gw_step.rtd, 0.99):.2f} ({gw_step.failed} failed); direct median "
                        f"{statistics.median(direct_step.rtd) if direct_step.rtd else float('nan'):.2f} p99 "
                        f"{percentile(direct_step.rtd, 0.99):.2f}\n"
                        f"CPU per call at {half} cps: {cpu * 1000 / max(gw_step.successful, 1):.2f} ms "
                        f"({cpu:.1f} s over {gw_step.successful} calls, supervisor and workers)\n"
                    )
                    if args.hold:
                        # A fresh worker: memory left by the rate steps would hide the growth.
                        fresh_callee()
                        gw = start_gateway(work / "hold", uas_port)
                        workers.append(gw)
                        target = f"127.0.0.1:{gw.port}"
                        assert gw.proc is not None
                        time.sleep(1)
                        before = rss_kib(gw.proc.pid)
                        hold_rate = 500  # one worker takes them all
                        proc = subprocess.Popen(
                            [
                                require_binary("sipp"),
                                "-sf",
                                str(SIPP_DIR / "call_uac.xml"),
                                "-i",
                                CALLER_IP,
                                "-p",
                                "0",
                                "-r",
                                str(hold_rate),
                                "-m",
                                str(args.hold),
                                "-l",
                                str(args.hold + 10),
                                "-d",
                                str(int(args.hold / hold_rate * 1000) + 15000),
                                "-s",
                                "13800138000",
                                "-nostdin",
                                "-max_socket",
                                "60000",
                                target,
                            ],
                            cwd=work,
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                        )
                        peak, held = before, 0
                        deadline = time.monotonic() + args.hold / hold_rate + 12
                        while time.monotonic() < deadline:
                            time.sleep(1)
                            snap = read_status(gw.workdir / "call.sock", timeout=10)
                            calls = int(str(snap["calls"]))
                            if calls >= held:
                                held, peak = calls, rss_kib(gw.proc.pid)
                            if held >= args.hold:
                                break
                        sys.stdout.write(
                            f"held {held} concurrent established calls; RSS {before / 1024:.1f} -> "
                            f"{peak / 1024:.1f} MiB, {(peak - before) / max(held, 1):.1f} KiB per call "
                            f"(transactions of the set-up phase included)\n"
                        )
                        proc.wait(timeout=args.hold / hold_rate + 120)
                finally:
                    for worker in workers:
                        worker.stop()
                    if redis is not None:
                        redis.stop()
        finally:
            stop_process(uas)
    sys.stdout.write("\nresults (max zero-failure calls per second):\n")
    for name, value in figures.items():
        sys.stdout.write(f"  {name:9} {value}\n")
    if "gateway" in figures and figures.get("kamailio"):
        sys.stdout.write(f"  gateway / kamailio = {figures['gateway'] / figures['kamailio']:.2f}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
