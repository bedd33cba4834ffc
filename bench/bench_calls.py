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
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench.sipp_load import (
    SIPP_DIR,
    CpuMeter,
    best,
    percentile,
    sipp_step,
    sipp_uas,
    start_kamailio,
    step_rates,
)
from gateway.call.service import read_status
from tests.support.gateway import GatewayProcess
from tests.support.servers import RedisServer, free_udp_tcp_port, require_binary, stop_process

CALLER_IP = "127.0.0.3"  # the bench trunk is recognised by this source address
CALLER = (CALLER_IP, 0)


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


def meter(gw: GatewayProcess) -> CpuMeter:
    """The CPU of the gateway process and its worker processes."""
    assert gw.proc is not None
    return CpuMeter(gw.proc.pid)


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
                    step_rates("direct", work, f"127.0.0.1:{uas_port}", rates["direct"], args.duration,
                               caller=CALLER)
                )
            if "kamailio" in targets:
                fresh_callee()
                sys.stdout.write("kamailio 5.6 (stateful record-routing proxy, -m 1024 -x tlsf)\n")
                kam, port = start_kamailio(uas_port)
                try:
                    figures["kamailio"] = best(
                        step_rates("kamailio", work, f"127.0.0.1:{port}", rates["kamailio"], args.duration,
                                   caller=CALLER)
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
                                       caller=CALLER, socket_per_call=per_call, cpu=meter(workers[0]))
                        )
                        half = max(50, figures["gateway"] // 2)
                    # A fresh gateway and callee: the failed top step leaves transactions
                    # retransmitting for 64*T1, which would load the delay measurement.
                    workers.pop().stop()
                    fresh_callee()
                    workers.append(gateway("gd"))
                    target = f"127.0.0.1:{workers[0].port}"
                    gw_step = sipp_step(work, target, half, int(half * args.duration),
                                        socket_per_call=per_call, caller=CALLER, cpu=meter(workers[0]))
                    cpu = gw_step.cpu or 0.0
                    direct_step = sipp_step(work, f"127.0.0.1:{uas_port}", half, int(half * args.duration),
                                            caller=CALLER, socket_per_call=per_call)
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
