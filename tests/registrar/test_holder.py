"""The trunk holder: whole tables swapped atomically, readers never stale, operator changes kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.datafile import DataFileError
from gateway.registrar.holder import OverridesFollower, TrunkHolder
from gateway.registrar.trunks import TrunkTable
from gateway.sip.address import Address
from tests.support.gateway import PROJECT_ROOT

DEMO = PROJECT_ROOT / "config" / "trunks.yaml"


def holder(tmp_path: Path) -> tuple[TrunkHolder, Path]:
    path = tmp_path / "trunks.yaml"
    path.write_text(DEMO.read_text(encoding="utf-8"), encoding="utf-8")
    return TrunkHolder.load(path, tmp_path / "state" / "trunk-overrides.json"), path


def test_set_enabled_swaps_a_new_table_and_tells_the_listeners(tmp_path: Path) -> None:
    trunks, _ = holder(tmp_path)
    before = trunks.table
    seen: list[TrunkTable] = []
    trunks.on_swap(seen.append)
    trunks.set_enabled("acme-iad", False)
    assert trunks.table is not before and seen == [trunks.table]
    assert before.trunks["acme-iad"].enabled is True  # the running table is never edited in place
    assert trunks.trunks["acme-iad"].enabled is False
    assert trunks.credential("62880001") is None  # readers through the holder see the new table
    trunks.set_enabled("acme-iad", True)
    assert trunks.credential("62880001") is not None
    with pytest.raises(KeyError):
        trunks.set_enabled("nope", False)


def test_operator_changes_survive_a_restart_and_a_reload(tmp_path: Path) -> None:
    trunks, path = holder(tmp_path)
    pbx = trunks.trunks["acme-pbx"]
    assert pbx.kind == "peer"
    trunks.set_enabled("acme-pbx", False)
    kept = json.loads((tmp_path / "state" / "trunk-overrides.json").read_text(encoding="utf-8"))
    assert kept == {"enabled": {"acme-pbx": False}}
    restarted, _ = TrunkHolder.load(path, tmp_path / "state" / "trunk-overrides.json"), None
    assert restarted.trunks["acme-pbx"].enabled is False
    assert restarted.identify(Address("udp", "127.0.0.1", 5092)) is None  # a disabled peer is unknown
    # A reload reads the file again and applies the operator's change over it.
    path.write_text(path.read_text(encoding="utf-8").replace("acme-iad", "acme-iad2"), encoding="utf-8")
    restarted.swap(restarted.prepare())
    assert "acme-iad2" in restarted.trunks and restarted.trunks["acme-pbx"].enabled is False


def test_a_bad_file_or_overrides_never_change_the_running_table(tmp_path: Path) -> None:
    trunks, path = holder(tmp_path)
    running = trunks.table
    path.write_text("trunks: [{name: x, kind: nope}]\n", encoding="utf-8")
    with pytest.raises(DataFileError) as refused:
        trunks.prepare()
    assert refused.value.problems[0].source == str(path)
    assert refused.value.problems[0].field == "trunks[0].kind"
    assert trunks.table is running
    # Damaged overrides: logged, and the file's own values serve (the gateway still starts).
    path.write_text(DEMO.read_text(encoding="utf-8"), encoding="utf-8")
    overrides = tmp_path / "state" / "trunk-overrides.json"
    overrides.parent.mkdir(parents=True, exist_ok=True)
    overrides.write_text("{not json", encoding="utf-8")
    assert TrunkHolder.load(path, overrides).trunks["acme-iad"].enabled is True


def test_another_process_follows_the_operator_changes(tmp_path: Path) -> None:
    """Worker 0's API keeps the change; another worker's follower adopts it from state_dir."""
    api_side, path = holder(tmp_path)
    other = TrunkHolder.load(path, api_side.overrides)
    follower = OverridesFollower(other)
    assert follower.check() is False  # nothing changed since it started
    api_side.set_enabled("acme-iad", False)
    assert follower.check() is True
    assert other.credential("62880001") is None
    assert follower.check() is False  # adopted once
    api_side.set_enabled("acme-iad", True)
    assert follower.check() is True and other.credential("62880001") is not None
