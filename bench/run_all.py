"""``make bench``: every benchmark in turn, each printing its own figures (see bench/RESULTS.md)."""

from __future__ import annotations

import os
import subprocess
import sys

BENCHES = (
    ["bench.bench_realpath"],  # first: the real call path (bench/RESULTS.md reports it first)
    ["bench.bench_codec"],
    ["bench.bench_handoff"],
    ["bench.bench_dialplan"],
    ["bench.bench_charging"],
    ["bench.bench_billing"],
    ["bench.bench_options"],
    ["bench.bench_register"],
    ["bench.bench_calls"],
    ["bench.bench_invite_auth"],
    ["bench.bench_ivr"],
    ["bench.bench_security"],
)


def main() -> int:
    failed = 0
    for bench in BENCHES:
        sys.stdout.write(f"\n=== {' '.join(bench)}\n")
        sys.stdout.flush()
        failed += subprocess.run([sys.executable, "-m", *bench], check=False).returncode != 0
    if os.geteuid() == 0:
        sys.stdout.write("\n=== bench.bench_edge_reconverge\n")
        sys.stdout.flush()
        edge = [sys.executable, "-m", "bench.bench_edge_reconverge", "50"]
        failed += subprocess.run(edge, check=False).returncode != 0
        sys.stdout.write("\n=== bench.bench_edge_failover\n")
        sys.stdout.flush()
        failover = [sys.executable, "-m", "bench.bench_edge_failover", "5"]
        failed += subprocess.run(failover, check=False).returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
