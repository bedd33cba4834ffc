"""The real call path, as deployed: ``python -m bench.bench_realpath [--quick]``.

The demo tenant (``config/trunks.yaml``, ``dialplans/``) with its trunk limits lifted (so the
benchmark measures capacity, not policy), Redis for registrations, limits, account states and
the charging sink (Redis Streams), charging on (``config/tariffs.yaml``), limits and the account
gate on. Three routes, each from ONE peer socket (SIPp ``-t u1``, as a real PBX or SBC sends):

* ``pbx->carrier``:  the IP-PBX trunk dials a mobile number; the dialplan sends it to the
  carrier trunk as ``+8613800138000``;
* ``line->short``:   IAD line 62880001 (registered, its INVITEs challenged with Digest, 407)
  dials short number 60002, which reaches registered line 62880002;
* ``carrier->line``: the carrier calls 62880002, delivered to that registered line.

The same SIPp caller and callee run ``direct`` (caller to callee, what SIPp itself carries) and
through ``kamailio`` 5.6 (stateful record-routing proxy, ``-m 1024 -x tlsf``) in the same run.
The offered rate steps up; a step passes only when no call failed at the caller AND the far-end
SIPp (fresh per step) counted no failure, and the caller placed at least 95 % of the offered
rate. Per step: setup delay p50 / p99 (INVITE -> 200 at the caller; SIPp's resolution is 1 ms)
and, for the gateway, CPU per call (user + system of the gateway and its workers, from
/proc/PID/stat, over the step, divided by the calls).

Graceful overload: then the PBX trunk offers 2x and 5x the highest clean rate of its route to a
fresh gateway, with a caller that takes 503 as an answer (``call_uac_or_503.xml``): how many
calls per second were admitted and completed, how many refused with 503, and failures at the
caller (timeouts, anything else) and at the far end, which must stay zero.

Everything runs on 127.0.0.1 with free ports; every process is started here and stopped by its
PID. ``--quick``: two short steps per system and 2x only (a smoke run, not a measurement).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.sipp_load import (
    SIPP_DIR,
    CpuMeter,
    FarEnd,
    Step,
    best,
    describe,
    percentile,
    sipp_step,
    start_kamailio,
    step_rates,
)
from tests.registrar.peers import PASSWORD, register
from tests.support.gateway import PROJECT_ROOT, GatewayProcess, demo_trunks_file
from tests.support.servers import RedisServer, free_udp_tcp_port, stop_process
from tests.support.sipp import received

LIFTED = {"max_calls": 100_000, "max_cps": 10_000}
"""Trunk limits out of reach: the benchmark measures capacity (the limits still run)."""


@dataclass(frozen=True)
class Route:
    name: str
    caller: str  # whose port the SIPp caller sends from: "pbx", "line" or "carrier"
    service: str  # the dialled number
    callee: str  # whose port the far-end SIPp listens on: "carrier" or "line2"
    auth: bool = False  # a registered line: its INVITEs are challenged (407)


ROUTES = (
    Route("pbx->carrier", "pbx", "13800138000", "carrier"),
    Route("line->short", "line", "60002", "line2", auth=True),
    Route("carrier->line", "carrier", "62880002", "line2"),
)

LINE, LINE2 = "62880001", "62880002"
# SIPp repeats an INVITE the gateway was slow to answer; the late 407 to the first copy then
# arrives while it waits for the second one's answers: continue past it, not a failed call.
AUTH = ("-au", LINE, "-ap", PASSWORD, "-default_behaviors", "all,-abortunexp")


def lifted_trunks(path: Path, ports: dict[str, int]) -> Path:
    """The demo trunks with the carrier and PBX moved to free ports and their limits lifted."""
    demo_trunks_file(path, carrier=ports["carrier"], pbx=ports["pbx"])
    data: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    for trunk in data["trunks"]:
        trunk.update(LIFTED)
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@contextmanager
def demo_gateway(
    workdir: Path, ports: dict[str, int], redis_url: str, workers: int
) -> Iterator[GatewayProcess]:
    """The demo tenant's gateway with Redis and charging on, its two lines registered."""
    trunks = lifted_trunks(workdir / "trunks.yaml", ports)
    gw = GatewayProcess(
        workdir,
        extra_config={
            "registrar": {"trunks": str(trunks), "qualify": {"enabled": False}},
            "charging": {"tariffs": str(PROJECT_ROOT / "config" / "tariffs.yaml")},
        },
        log_level="WARNING",
        workers=workers,
        env={"REDIS_URL": redis_url},
    )
    gw.start()
    try:
        for number, port in ((LINE, ports["line"]), (LINE2, ports["line2"])):
            answer = register(gw.port, number, contact=f"sip:{number}@127.0.0.1:{port}", local_port=port,
                              expires=86400)
            if answer.status != 200:
                raise RuntimeError(f"REGISTER {number}: {answer.status}")
        yield gw
    finally:
        gw.stop()


def run_route(route: Route, work: Path, target: str, *, ports: dict[str, int], rates: list[int],
              duration: float, label: str, **options: Any) -> list[Step]:
    """Step load on ``route`` toward ``target`` (the gateway, Kamailio, or the callee itself)."""
    far = FarEnd(work / f"far-{label}-{route.callee}", ports[route.callee])
    try:
        return step_rates(
            label, work / f"uac-{label}", target, rates, duration,
            caller=("127.0.0.1", ports[route.caller]), service=route.service, far_end=far,
            extra=AUTH if route.auth else (), **options,
        )
    finally:
        far.stop()


def overload_step(route: Route, work: Path, gw: GatewayProcess, *, ports: dict[str, int], rate: int,
                  duration: float) -> str:
    """``rate`` offered on ``route`` with a caller that takes 503; one line of figures."""
    label = f"overload-{rate}"
    far = FarEnd(work / f"far-{label}", ports[route.callee])
    assert gw.proc is not None
    try:
        step = sipp_step(work / label, f"127.0.0.1:{gw.port}", rate, int(rate * duration),
                         caller=("127.0.0.1", ports[route.caller]), service=route.service,
                         scenario=SIPP_DIR / "call_uac_or_503.xml", extra=("-trace_counts",), far_end=far,
                         cpu=CpuMeter(gw.proc.pid))
    finally:
        far.stop()
    answers = received(work / label)
    admitted, refused = answers["200"] // 2, answers["503"]  # the BYE's 200 counts too
    clean = step.failed == 0 and step.far_failed == 0 and admitted + refused == step.calls
    delay = f"setup p50 {percentile(step.rtd, 0.5):.0f} p99 {percentile(step.rtd, 0.99):.0f} ms"
    return (f"offered {rate:6d} cps: admitted {admitted / step.elapsed:7.1f} cps ({admitted} calls, "
            f"{delay}), refused 503 {refused}, "
            f"failed at the caller {step.failed}, at the far end {step.far_failed}, CPU "
            f"{1000 * (step.cpu or 0) / max(step.calls, 1):.2f} ms per offered call  "
            f"{'clean' if clean else 'NOT CLEAN'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="two short steps per system (smoke run)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of calls per step")
    parser.add_argument("--gateway-rates", default="100,200,300,400,500,600,800,1000,1250,1500")
    parser.add_argument("--kamailio-rates", default="500,1000,1500,2000,2500,3000,4000")
    parser.add_argument("--direct-rates", default="500,1000,2000,3000,4000,6000")
    parser.add_argument("--workers", type=int, default=1, help="gateway worker processes")
    parser.add_argument("--route", choices=[r.name for r in ROUTES], action="append",
                        help="only these gateway routes (default: all)")
    args = parser.parse_args(argv)

    def rates(text: str) -> list[int]:
        values = [int(r) for r in text.split(",")]
        return values[:2] if args.quick else values

    duration = 2.0 if args.quick else args.duration
    routes = [r for r in ROUTES if not args.route or r.name in args.route]
    summary: list[tuple[str, list[Step]]] = []
    overload: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench_realpath_") as tmp:
        work = Path(tmp)
        ports = {name: free_udp_tcp_port() for name in ("pbx", "carrier", "line", "line2")}
        sys.stdout.write("direct (SIPp caller -> SIPp callee, one socket each)\n")
        steps = run_route(ROUTES[0], work, f"127.0.0.1:{ports['carrier']}", ports=ports,
                          rates=rates(args.direct_rates), duration=duration, label="direct")
        summary.append(("direct", steps))
        sys.stdout.write("kamailio 5.6 (stateful record-routing proxy, -m 1024 -x tlsf)\n")
        kam, kam_port = start_kamailio(ports["carrier"])
        try:
            steps = run_route(ROUTES[0], work, f"127.0.0.1:{kam_port}", ports=ports,
                              rates=rates(args.kamailio_rates), duration=duration, label="kamailio")
            summary.append(("kamailio", steps))
        finally:
            stop_process(kam)
        redis = RedisServer(work / "redis", free_udp_tcp_port())
        redis.workdir.mkdir()
        redis.start()
        try:
            for route in routes:
                sys.stdout.write(f"gateway {route.name} ({args.workers} worker(s); dialplan, limits, "
                                 f"account gate, charging to Redis Streams)\n")
                # A fresh gateway per route: a failed top step leaves transactions retransmitting.
                with demo_gateway(work / f"gw-{route.name.replace('>', '')}", ports, redis.url,
                                  args.workers) as gw:
                    assert gw.proc is not None
                    steps = run_route(route, work, f"127.0.0.1:{gw.port}", ports=ports,
                                      rates=rates(args.gateway_rates), duration=duration, label=route.name,
                                      cpu=CpuMeter(gw.proc.pid))
                summary.append((f"gateway {route.name}", steps))
                time.sleep(1.0)
                if route is not ROUTES[0]:
                    continue
                top = best(steps) or steps[0].rate
                for factor in (2,) if args.quick else (2, 5):
                    sys.stdout.write(f"gateway {route.name} at {factor}x its clean maximum ({top} cps), "
                                     "fresh gateway, 503 taken as an answer\n")
                    with demo_gateway(work / f"gw-overload-{factor}", ports, redis.url, args.workers) as gw:
                        line = overload_step(route, work, gw, ports=ports, rate=factor * top,
                                             duration=duration)
                    sys.stdout.write(f"  {line}\n")
                    overload.append(f"{factor}x: {line}")
                    time.sleep(1.0)
        finally:
            redis.stop()
    sys.stdout.write("\nresults (max calls per second with zero failures at the caller and the far end):\n")
    kamailio = best(dict(summary).get("kamailio", []))
    for name, steps in summary:
        top = best(steps)
        at = next((s for s in steps if s.rate == top), None)
        extra = f"  [{describe(at)}]" if at is not None else ""
        ratio = f"  ratio to kamailio {top / kamailio:.2f}" if name.startswith("gateway") and kamailio else ""
        sys.stdout.write(f"  {name:22} {top:6d}{ratio}{extra}\n")
    for line in overload:
        sys.stdout.write(f"  overload {line}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
