"""The ``charging`` and ``accounts`` sections of the gateway config file."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.accounts.policy import AccountState
from gateway.charging.rating import load_tariffs
from gateway.charging.service import ChargingService
from gateway.config import load_config
from gateway.datafile import DataFileError
from tests.charging.helpers import PROJECT_ROOT


def test_the_demo_config_loads_with_the_demo_tariffs() -> None:
    config = load_config(PROJECT_ROOT / "config" / "gateway.yaml", environ={})
    assert config.charging.tariffs == PROJECT_ROOT / "config" / "tariffs.yaml"
    assert load_tariffs(config.charging.tariffs).table_id == "demo-2026"
    assert config.charging.interim_minutes == 5
    assert config.accounts.policy[AccountState.ARREARS].bar_outgoing


async def test_service_from_settings_uses_the_spool_without_redis(tmp_path: Path) -> None:
    config = load_config(PROJECT_ROOT / "config" / "gateway.yaml", environ={})
    service = ChargingService.from_settings(
        config.charging, node_id=config.node.id, state_dir=tmp_path, redis_url=None
    )
    assert service.sink.name == "spool"
    await service.start()
    await service.close()
    assert (tmp_path / "charging-spool").is_dir()


def test_errors_name_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "config" / "gateway.yaml"
    path.parent.mkdir()
    path.write_text(
        "charging:\n  sink: kafka\n  interim_minutes: 0\naccounts:\n  policy:\n    broke: {}\n",
        encoding="utf-8",
    )
    with pytest.raises(DataFileError) as info:
        load_config(path, environ={})
    rendered = "\n".join(str(p) for p in info.value.problems)
    sinks = "'auto', 'memory', 'spool', 'redis_streams' or 'failover'"
    assert f"{path}:2: charging.sink: Input should be {sinks}" in rendered
    assert f"{path}:3: charging.interim_minutes:" in rendered
    assert "accounts.policy.broke" in rendered
