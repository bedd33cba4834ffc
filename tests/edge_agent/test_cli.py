"""The command line and the shipped systemd unit."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest

from edge_agent.cli import main
from tests.conftest import PROJECT_ROOT
from tests.edge_agent.conftest import Topology, observe


def test_check_config(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["check-config", "--config", str(PROJECT_ROOT / "config" / "edge_agent.yaml")]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("site: s\nreconcile: {rtproto: 300}\n", encoding="utf-8")
    assert main(["check-config", "--config", str(bad)]) == 2
    assert f"{bad}:2: reconcile.rtproto:" in capsys.readouterr().err


@pytest.mark.netns
def test_diff_is_a_dry_run(topology: Topology, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "agent.yaml"
    source = (PROJECT_ROOT / "config" / "edge_agent.yaml").read_text(encoding="utf-8")
    config.write_text(
        source.replace("netns: edge-demo", f"netns: {topology.site}").replace(
            "state_dir: var/edge-agent", f"state_dir: {tmp_path / 'state'}"
        ),
        encoding="utf-8",
    )
    import asyncio

    before = asyncio.run(observe(topology.site))
    assert main(["diff", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "create link br-lan (bridge)" in out
    assert "add address 10.166.0.2/30 on wan0" in out
    assert asyncio.run(observe(topology.site)) == before


def test_systemd_unit_ships() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(PROJECT_ROOT / "deploy" / "edge-agent.service", encoding="utf-8")
    assert "edge-agent run --config" in unit["Service"]["ExecStart"]
    assert unit["Service"]["Restart"] == "always"
    assert "CAP_NET_ADMIN" in unit["Service"]["AmbientCapabilities"]
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_missing_netns_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"site: s\nnetns: ea-missing-{tmp_path.name[-8:]}\nstate_dir: {tmp_path}\n"
        "desired: {version: 1, links: [{name: br9, kind: bridge}]}\n",
        encoding="utf-8",
    )
    assert main(["diff", "--config", str(config)]) == 1
    assert "does not exist" in capsys.readouterr().err
