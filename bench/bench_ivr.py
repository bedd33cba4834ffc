"""Concurrent IVR calls with prompts playing, in one process: RTP pacing jitter and CPU.

Opens N RTP sessions on the gateway's media endpoint (:mod:`gateway.media.endpoint`, the same
code and event loop — uvloop when installed — as ``gateway run``), each playing the shipped
Chinese menu prompt in a loop toward a sink process (a separate UDP receiver that counts and
discards, so its cost stays out of the measured process). Every 20 ms tick of the shared pacer
records its lateness (actual minus scheduled send time); the figures are p50 / p99 / max of that
lateness over the run, the process's CPU use (user + system over wall time) and packets sent.
A session's packets all go out within the tick, so the lateness is each packet's send jitter
plus the time to send the packets before it in the same tick (also reported: the tick's span).
Not a test: nothing asserts on time.

    .venv/bin/python -m bench.bench_ivr [--calls 200,400,800] [--seconds 10]

``--sip N`` measures the whole gateway instead: the real gateway process (demo tenant, uvloop)
answers N concurrent SIPp calls to 62880000 that stay in the menu (prompt playing, no key) for
``--seconds``; its switchboard status gives the pacer's lateness, /proc its CPU time.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import subprocess
import sys
import time

from gateway.media.endpoint import MediaEndpoint, PortAllocator
from gateway.media.g711 import Codec
from gateway.media.prompts import PromptLibrary
from gateway.media.sdp import Negotiated
from gateway.runtime_cli import loop_factory

SINK = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
n = 0
s.settimeout(2.0)
try:
    while True:
        s.recv(2048); n += 1
except (TimeoutError, KeyboardInterrupt):
    pass
print(n, flush=True)
"""


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run(calls: int, seconds: float, first_port: int) -> dict[str, float]:
    sink = subprocess.Popen([sys.executable, "-c", SINK], stdout=subprocess.PIPE, text=True)  # noqa: ASYNC220
    assert sink.stdout is not None
    sink_port = int(sink.stdout.readline())
    loop = asyncio.get_running_loop()
    endpoint = MediaEndpoint(loop, "127.0.0.1", PortAllocator(first_port, first_port + 2 * calls + 100))
    prompt = PromptLibrary.load().get("main_zh")
    assert prompt is not None
    negotiated = Negotiated(Codec.PCMU, 101, "127.0.0.1", sink_port)
    for _ in range(calls):
        session = await endpoint.open(negotiated, on_key=lambda _k: None, on_prompt_end=lambda: None)
        session.play([prompt], loop=True)
    await asyncio.sleep(1.0)  # warm-up: sockets opened, caches warm
    endpoint.pacer.stats.reset()
    endpoint.pacer.last_packet.reset()
    cpu0, wall0 = cpu_seconds(), time.monotonic()
    await asyncio.sleep(seconds)
    cpu, wall = cpu_seconds() - cpu0, time.monotonic() - wall0
    stats = endpoint.pacer.stats
    sent = stats.packets
    last = endpoint.pacer.last_packet
    total = sum(session.sent for session in endpoint.sessions)  # warm-up included, as the sink counts
    endpoint.close()
    received = int(sink.stdout.readline() or 0) if sink.wait(timeout=10) == 0 else 0
    return {
        "calls": calls,
        "p50_ms": stats.percentile(0.5) * 1000,
        "p99_ms": stats.percentile(0.99) * 1000,
        "max_ms": stats.maximum * 1000,
        "last_p99_ms": last.percentile(0.99) * 1000,
        "last_max_ms": last.maximum * 1000,
        "cpu_pct": 100 * cpu / wall,
        "packets_per_s": sent / wall,
        "expected_per_s": calls * 50,
        "us_per_packet": 1e6 * cpu / sent if sent else 0.0,
        "received_pct": 100 * received / total if total else 0.0,
    }


def run_sip(calls: int, seconds: float) -> None:
    """N IVR calls through the real gateway (see the module docstring)."""
    import tempfile
    from pathlib import Path

    import yaml

    from bench.bench_options import cpu_seconds as process_cpu
    from tests.call.harness import free_port, sipp_command
    from tests.switchboard.peers import (
        WORKDAY_MORNING,
        caller_scenario,
        demo_gateway,
        switchboard_status,
    )

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sink = subprocess.Popen([sys.executable, "-c", SINK], stdout=subprocess.PIPE, text=True)
        assert sink.stdout is not None
        sink_port = int(sink.stdout.readline())
        caller = free_port()
        gw = demo_gateway(
            work / "gw",
            carrier=caller,
            pbx=free_port(),
            at=WORKDAY_MORNING,
            switchboard={"rtp_port_first": 30000, "rtp_port_last": 30000 + 4 * calls, "media_timeout": 600},
        )
        gw.log_level = "WARNING"
        # A menu that waits longer than the run: every call stays in the IVR, the prompt playing.
        plan = gw.workdir / "dialplans" / "acme.yaml"
        acme = yaml.safe_load(plan.read_text())
        acme["switchboard"]["menus"]["day"].update(prompt=["main_zh"], first_digit_timeout=60, retries=9)
        plan.write_text(yaml.safe_dump(acme, allow_unicode=True), encoding="utf-8")
        gw.start()
        try:
            scenario = caller_scenario(
                work / "caller.xml", rtp_port=sink_port, end="caller_bye", talk_ms=int(seconds * 1000)
            )
            command = sipp_command(
                "call_uac.xml",
                port=caller,
                target=f"127.0.0.1:{gw.port}",
                service="62880000",
                calls=calls,
                rate=100,
                timeout=seconds + 60,
            )
            command[command.index("-sf") + 1] = str(scenario)
            command += ["-l", str(calls)]
            assert gw.proc is not None
            cpu0, wall0 = process_cpu(gw.proc.pid), time.monotonic()
            sipp = subprocess.Popen(command, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            peak = 0
            while sipp.poll() is None:
                snap = switchboard_status(gw)
                peak = max(peak, int(snap["calls"]))
                time.sleep(0.5)
            cpu, wall = process_cpu(gw.proc.pid) - cpu0, time.monotonic() - wall0
            pacing = switchboard_status(gw)["rtp_pacing"]
            print(
                f"SIP: {calls} calls (peak {peak} in the IVR at once), SIPp exit {sipp.returncode}; "
                f"gateway CPU {100 * cpu / wall:.1f} % over {wall:.0f} s; "
                f"RTP packets {pacing['packets']:.0f}; lateness first packet "
                f"p50 {pacing['first_p50_ms']:.2f} / p99 {pacing['first_p99_ms']:.2f} ms, "
                f"last packet p50 {pacing['last_p50_ms']:.2f} / p99 {pacing['last_p99_ms']:.2f} / "
                f"max {pacing['last_max_ms']:.2f} ms"
            )
        finally:
            gw.stop()
            sink.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", default="200,400,800")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--first-port", type=int, default=40000)
    parser.add_argument("--sip", type=int, default=0, help="N calls through the real gateway instead")
    args = parser.parse_args()
    if args.sip:
        run_sip(args.sip, args.seconds)
        return
    print(
        "calls  first packet of a tick: p50 / p99 / max ms  last packet: p99 / max ms"
        "  CPU %  packets/s (expected)  µs/packet  received %"
    )
    for n in (int(c) for c in args.calls.split(",")):
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            r = runner.run(run(n, args.seconds, args.first_port))
        print(
            f"{r['calls']:5.0f}  {r['p50_ms']:6.2f} / {r['p99_ms']:6.2f} / {r['max_ms']:6.2f}"
            f"  {r['last_p99_ms']:6.2f} / {r['last_max_ms']:6.2f}  {r['cpu_pct']:5.1f}"
            f"  {r['packets_per_s']:9.0f} ({r['expected_per_s']:.0f})  {r['us_per_packet']:9.1f}"
            f"  {r['received_pct']:9.1f}"
        )


if __name__ == "__main__":
    main()
