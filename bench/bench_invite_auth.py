"""Calls per second from a registered line with INVITE proxy authentication on and off:
``python -m bench.bench_invite_auth``.

The demo tenant (dialplan, line 62880001 of the IAD trunk, the carrier trunk toward a SIPp
callee) in one gateway process with in-memory stores; the IAD trunk's limits are raised out of
the way. The line registers from the SIPp caller's port; SIPp then calls ``013800138000`` (a
mobile number: dialplan → carrier) with ``bench/sipp/call_uac.xml``. With ``invite_auth:
always`` every call is INVITE → 407 → ACK → INVITE with Proxy-Authorization → 200 (two INVITE
transactions and a Digest check); with ``never`` the line is trusted by its registered address.
Each mode's rate is stepped up as in :mod:`bench.bench_calls` (a step passes with no failed
call and at least 95 % of the offered rate); the figure is the highest passing rate, with the
call-setup delay (INVITE → 200 as SIPp sees it, which includes the challenge round trip).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench.sipp_load import best, percentile, sipp_uas, step_rates
from tests.registrar.peers import PASSWORD, register
from tests.support.gateway import PROJECT_ROOT, GatewayProcess
from tests.support.servers import free_udp_tcp_port, stop_process

LINE = "62880001"


def start_gateway(workdir: Path, carrier: int, invite_auth: str) -> GatewayProcess:
    data = yaml.safe_load((PROJECT_ROOT / "config" / "trunks.yaml").read_text(encoding="utf-8"))
    for trunk in data["trunks"]:
        trunk |= {"max_calls": 100000, "max_cps": 10000}
        if trunk["kind"] == "registering":
            trunk["invite_auth"] = invite_auth
        if trunk["kind"] == "carrier":
            trunk["destinations"] = [{"host": "127.0.0.1", "port": carrier}]
        if trunk["kind"] == "peer":
            trunk["match"] = [{"host": "127.0.0.1", "port": free_udp_tcp_port()}]
    workdir.mkdir(parents=True, exist_ok=True)
    trunks = workdir / "trunks.yaml"
    trunks.write_text(yaml.safe_dump(data), encoding="utf-8")
    gw = GatewayProcess(
        workdir,
        extra_config={
            "registrar": {"trunks": str(trunks), "qualify": {"enabled": False}, "max_expires": 86400,
                          "default_expires": 86400},
            "call": {"status_socket": str(workdir / "call.sock"), "max_duration": 3600},
        },
        log_level="WARNING",
    )
    gw.start()
    return gw


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=4.0, help="seconds of calls per step")
    parser.add_argument("--rates", default="100,200,300,400,500,600,700,800,1000,1200")
    args = parser.parse_args(argv)
    rates = [int(r) for r in args.rates.split(",")]
    figures: dict[str, tuple[int, float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_invite_auth_") as tmp:
        work = Path(tmp)
        carrier = free_udp_tcp_port()
        (work / "uas").mkdir()
        uas = sipp_uas(work / "uas", carrier)
        try:
            for mode in ("never", "always"):
                caller = free_udp_tcp_port()
                gw = start_gateway(work / mode, carrier, mode)
                try:
                    contact = f"sip:{LINE}@127.0.0.1:{caller}"
                    answer = register(gw.port, LINE, contact=contact, local_port=caller, expires=86400)
                    assert answer.status == 200, answer
                    sys.stdout.write(f"invite_auth: {mode}\n")
                    steps = step_rates(
                        mode, work / f"uac-{mode}", f"127.0.0.1:{gw.port}", rates, args.duration,
                        caller=("127.0.0.1", caller), service="013800138000",
                        # A 407 retransmitted because SIPp repeated the first INVITE while the
                        # gateway was busy arrives when SIPp already waits for the second one's
                        # answers: continue past it instead of counting the call as failed.
                        extra=("-au", LINE, "-ap", PASSWORD, "-default_behaviors", "all,-abortunexp"),
                    )
                    top = best(steps)
                    delays = next((s.rtd for s in steps if s.rate == top), [])
                    figures[mode] = (top, percentile(delays, 0.5), percentile(delays, 0.99))
                finally:
                    gw.stop()
                time.sleep(2.0)
        finally:
            stop_process(uas)
    sys.stdout.write("\n| INVITE authentication | max zero-failure calls/s | setup delay median / p99 ms |\n")
    sys.stdout.write("|---|---|---|\n")
    for mode, (top, median, p99) in figures.items():
        label = "off (`never`: registered address)" if mode == "never" else "on (`always`: 407 + Digest)"
        sys.stdout.write(f"| {label} | {top:,} | {median:.0f} / {p99:.0f} |\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
