"""The edge guard under a flood: CPU per dropped request from a banned source, and the flood
rate one worker drops while a registered line keeps placing calls with zero failures.

1. In process: :meth:`EdgeGuard.admit` for a banned source (the whole pre-parse decision), and
   the UDP endpoint's ``datagram_received`` in front of it, per call.
2. Through the real gateway (``python -m gateway run``, uvloop, one worker, the demo tenant):
   a flooder process sends OPTIONS from 127.0.0.2 at ``--rate`` datagrams a second for
   ``--seconds`` (paced: on 2 shared cores an unpaced flooder starves SIPp itself); the first
   16 are answered, then the address is banned. Meanwhile SIPp places
   calls from a registered IAD line on 127.0.0.1 (the demo IAD allows 2 calls a second). Reported:
   the packets the gateway dropped per second (``security_banned_packets_dropped_total``), the
   gateway's CPU time per dropped packet (user + system from /proc, everything included: the
   kernel's receive path, the event loop, the guard), and the calls' outcome.

    .venv/bin/python -m bench.bench_security [--seconds 10] [--calls 12] [--rate 20000]

Not a test: nothing asserts on time. On the 2-core machine the flooder, SIPp and the gateway
share the CPUs (and other engineers' test runs): the figures are floors.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from bench.bench_options import cpu_seconds
from gateway.security.bans import MemoryBanStore
from gateway.security.guard import EdgeGuard
from gateway.security.settings import SecuritySettings
from gateway.transport.udp import UdpEndpoint
from tests.call.harness import free_port, run_caller, sipp_server, wait_for
from tests.mgmt.support import Api, api_gateway, wait_api
from tests.registrar.peers import register
from tests.support.gateway import options_request

FLOODER = "127.0.0.2"
FLOOD_SCRIPT = """
import socket, sys, time
target, seconds, rate = ("127.0.0.1", int(sys.argv[1])), float(sys.argv[2]), float(sys.argv[4])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((sys.argv[3], 0))
data = sys.stdin.buffer.read()
sent, start = 0, time.monotonic()
while (now := time.monotonic()) < start + seconds:
    if sent > (now - start) * rate:
        time.sleep(0.001)
        continue
    for _ in range(100):
        try:
            sock.sendto(data, target)
        except OSError:
            pass
    sent += 100
print(sent)
"""


class _NullSink:
    def message_received(self, data: bytes, source: object) -> None:
        raise AssertionError("a banned datagram reached the sink")

    def framing_failed(self, error: object, source: object) -> None:
        return None


def in_process(iterations: int) -> None:
    guard = EdgeGuard(SecuritySettings(), MemoryBanStore(), CollectorRegistry())
    for _ in range(17):
        guard.admit(b"OPTIONS", "203.0.113.9")  # over the budget of 16: banned
    datagram = options_request("127.0.0.1", 5060, ("203.0.113.9", 5060))
    start = time.perf_counter()
    for _ in range(iterations):
        guard.admit(datagram, "203.0.113.9")
    per_admit = (time.perf_counter() - start) / iterations * 1e6
    endpoint = UdpEndpoint(_NullSink(), None, 0)  # type: ignore[arg-type]
    endpoint.filter = guard
    addr = ("203.0.113.9", 5060)
    start = time.perf_counter()
    for _ in range(iterations):
        endpoint.datagram_received(datagram, addr)
    per_datagram = (time.perf_counter() - start) / iterations * 1e6
    print(f"in process, banned source: EdgeGuard.admit {per_admit:.2f} µs, "
          f"UdpEndpoint.datagram_received (guard included) {per_datagram:.2f} µs  ({iterations:,} each)")


def dropped(api: Api) -> float:
    text = api.get("/metrics", token=False).text
    match = re.search(r"^security_banned_packets_dropped_total (\S+)", text, re.M)
    return float(match.group(1)) if match else 0.0


def through_the_gateway(seconds: float, calls: int, rate: float) -> None:
    caller, callee = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="bench-security-") as tmp:
        workdir = Path(tmp)
        gw, api = api_gateway(workdir / "gw", redis_url=None)
        gw.log_level = "INFO"
        gw.start()
        try:
            wait_api(api)
            for number, port in (("62880001", caller), ("62880002", callee)):
                assert register(gw.port, number, contact=f"sip:{number}@127.0.0.1:{port}",
                                local_port=port).status == 200
            assert gw.proc is not None
            pid = gw.proc.pid
            outcome: dict[str, subprocess.CompletedProcess[str]] = {}
            with sipp_server(workdir / "uas", "call_uas.xml", callee, calls=calls):
                datagram = options_request("127.0.0.1", gw.port, (FLOODER, 5060))
                cpu0, dropped0, t0 = cpu_seconds(pid), dropped(api), time.monotonic()
                flood = subprocess.Popen(
                    [sys.executable, "-c", FLOOD_SCRIPT, str(gw.port), str(seconds), FLOODER, str(rate)],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                )
                assert flood.stdin is not None and flood.stdout is not None
                flood.stdin.write(datagram)
                flood.stdin.close()
                thread = threading.Thread(target=lambda: outcome.setdefault("uac", run_caller(
                    workdir / "uac", "call_uac.xml", caller, gw, line="62880001", service="60002",
                    calls=calls, rate=1.5, extra=["-d", "500"])))
                thread.start()
                flood.wait(timeout=seconds + 30)
                sent = int(flood.stdout.read().strip() or b"0")
                cpu1, dropped1, t1 = cpu_seconds(pid), dropped(api), time.monotonic()
                thread.join(timeout=120)
            snap = wait_for(gw, lambda s: not s["active"], timeout=40)
            log = gw.log()
        finally:
            gw.stop()
    result = outcome["uac"]
    count = dropped1 - dropped0
    elapsed = t1 - t0
    print(f"flood from {FLOODER} for {seconds:g} s: sent {sent:,} ({sent / elapsed:,.0f}/s), gateway "
          f"dropped {count:,.0f} unparsed ({count / elapsed:,.0f}/s), gateway CPU "
          f"{(cpu1 - cpu0) / max(count, 1) * 1e6:.2f} µs per dropped packet (all of the process, "
          "calls included)")
    print(f"calls from the registered line meanwhile: SIPp exit {result.returncode}, "
          f"completed {snap['completed']}, failed {snap['failed']} of {calls}")
    if snap["failed"] or result.returncode:
        print(result.stdout[-2000:], log[-3000:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="flood duration")
    parser.add_argument("--calls", type=int, default=12, help="calls placed during the flood (1.5/s)")
    parser.add_argument("--rate", type=float, default=20_000, help="flood datagrams per second")
    parser.add_argument("--iterations", type=int, default=1_000_000, help="in-process loop length")
    args = parser.parse_args()
    in_process(args.iterations)
    through_the_gateway(args.seconds, args.calls, args.rate)


if __name__ == "__main__":
    main()
