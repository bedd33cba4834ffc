"""OPTIONS transactions per second through the running gateway, driven by SIPp over UDP.

Starts the real gateway (``python -m gateway run``, uvloop) on free loopback ports, then runs
``bench/sipp/options_uac.xml`` at increasing rates; a step passes when SIPp reports every call
successful (exit code 0, no failed call) *and* kept up with the target rate (at least 95 %: an
overloaded gateway still completes calls through SIPp's retransmissions, but late). Reports the
highest passing rate. Not a test: nothing asserts on time.

It also reports the gateway's CPU time per OPTIONS transaction (user + system time of the
gateway process, from /proc, divided by the transactions of the step): a figure that holds on
a shared, busy machine, where the achieved rate depends on what else runs. ``1e6 / µs`` is the
rate one free core would sustain.

    .venv/bin/python -m bench.bench_options [--rates 2000,4000,...] [--seconds 5]

On the 2-core machine SIPp and the gateway share the CPUs, so the figure is a floor.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from tests.support.gateway import SIP_CORE_ONLY, GatewayProcess
from tests.support.sipp import run_sipp

DEFAULT_RATES = (1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000)
KEEP_UP = 0.95  # achieved / target rate for a step to count


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    """Peak resident memory of process ``pid`` (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default=",".join(map(str, DEFAULT_RATES)), help="calls/s steps")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each step")
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-options-") as tmp:
        workdir = Path(tmp)
        gateway = GatewayProcess(workdir, log_level="WARNING", extra_config=SIP_CORE_ONLY)
        gateway.start()
        try:
            best = None
            assert gateway.proc is not None
            pid = gateway.proc.pid
            print(
                f"{'target/s':>9} {'achieved/s':>11} {'ok':>7} {'failed':>7} {'retrans':>8} "
                f"{'gw CPU µs/tx':>13}  result"
            )
            for rate in rates:
                calls = int(rate * args.seconds)
                cpu_before = cpu_seconds(pid)
                result = run_sipp(f"{gateway.host}:{gateway.port}", workdir, rate=rate, calls=calls)
                cpu_per_tx = (cpu_seconds(pid) - cpu_before) / max(result.successful, 1) * 1e6
                passed = (
                    result.returncode == 0
                    and result.failed == 0
                    and result.successful == calls
                    and result.rate >= KEEP_UP * rate
                )
                print(
                    f"{rate:9d} {result.rate:11.0f} {result.successful:7d} {result.failed:7d} "
                    f"{result.retransmissions:8d} {cpu_per_tx:13.0f}  {'pass' if passed else 'FAIL'}"
                )
                if not passed:
                    break
                best = result
            if best is not None:
                steps = f"UDP, SIPp {args.seconds:g} s steps"
                print(f"max zero-failure OPTIONS rate: {best.rate:.0f}/s ({steps})")
            print(f"gateway peak RSS: {peak_rss_mib(pid):.0f} MiB (transactions live 32 s: Timer J)")
        finally:
            gateway.stop()


if __name__ == "__main__":
    main()
