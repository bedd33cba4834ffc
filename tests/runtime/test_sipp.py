"""SIPp (a real, independent SIP implementation) against the running gateway."""

from __future__ import annotations

from pathlib import Path

from tests.support.gateway import GatewayProcess
from tests.support.sipp import run_sipp


def test_sipp_options_at_300_per_second_without_failure(gateway_proc: GatewayProcess, tmp_path: Path) -> None:
    result = run_sipp(f"{gateway_proc.host}:{gateway_proc.port}", tmp_path, rate=300, calls=1500)
    assert result.returncode == 0, result.output
    assert (result.successful, result.failed) == (1500, 0), result.output


def test_sipp_options_over_tcp_one_and_many_connections(gateway_proc: GatewayProcess, tmp_path: Path) -> None:
    for transport in ("t1", "tn"):  # pipelined on one connection; a fresh connection per call
        result = run_sipp(
            f"{gateway_proc.host}:{gateway_proc.port}", tmp_path, rate=200, calls=600, transport=transport
        )
        assert result.returncode == 0, result.output
        assert (result.successful, result.failed) == (600, 0), result.output
