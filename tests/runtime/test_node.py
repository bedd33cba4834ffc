"""The composition root in process: a late start-up failure closes what had started, and a
reload (SIGHUP) swaps trunks, dialplans and tariffs together or not at all."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from gateway.config import GatewayConfig, load_config
from gateway.node import started
from gateway.registrar.holder import TrunkHolder
from gateway.registrar.trunks import TrunkTable
from gateway.transport.handoff import ENVIRONMENT, channels_for, make_channels
from tests.support.gateway import PROJECT_ROOT, GatewayProcess, demo_trunks_file
from tests.support.servers import free_port, free_udp_tcp_port


def demo_config(tmp_path: Path, *, api_port: int | None = None) -> GatewayConfig:
    """The demo tenant (trunks, dialplans, tariffs copied under ``tmp_path``) on free ports."""
    trunks = demo_trunks_file(tmp_path / "data" / "trunks.yaml", carrier=free_udp_tcp_port(),
                              pbx=free_udp_tcp_port())
    shutil.copytree(PROJECT_ROOT / "dialplans", tmp_path / "data" / "dialplans")
    shutil.copy(PROJECT_ROOT / "config" / "tariffs.yaml", tmp_path / "data" / "tariffs.yaml")
    extra: dict[str, object] = {
        "registrar": {"trunks": str(trunks), "qualify": {"enabled": False}},
        "dialplans": [str(tmp_path / "data" / "dialplans")],
        "charging": {"tariffs": str(tmp_path / "data" / "tariffs.yaml")},
        "call": {"status_socket": str(tmp_path / "call.sock")},
        "gc": {"mode": "automatic"},
    }
    if api_port is not None:
        extra["api"] = {"enabled": True, "host": "127.0.0.1", "port": api_port,
                        "tokens": [{"name": "t", "role": "admin", "token": "test-admin-token-0123456789"}]}
    gw = GatewayProcess(tmp_path, extra_config=extra)
    gw.write_config()
    return load_config(gw.config_path)


def other_tasks() -> set[asyncio.Task[object]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


def port_is_free(port: int) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


async def test_a_late_failure_closes_everything_that_started(tmp_path: Path) -> None:
    """The API comes last; its port taken, the SIP listeners, status socket, stores and tasks
    that started before it are all gone when the error comes out."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = demo_config(tmp_path, api_port=taken.getsockname()[1])
        before = other_tasks()
        with pytest.raises(OSError):
            async with started(config):
                pytest.fail("the node started although its API port is taken")
    sip_port = config.sip.listen[0].port
    assert port_is_free(sip_port)
    assert not (tmp_path / "call.sock").exists()
    await asyncio.sleep(0)  # let cancelled tasks finish unwinding
    assert other_tasks() == before


async def test_started_node_closes_in_order_and_leaves_nothing(tmp_path: Path) -> None:
    config = demo_config(tmp_path, api_port=free_port())
    before = other_tasks()
    async with started(config) as node:
        assert node.api is not None and node.switchboard is not None
        assert (tmp_path / "call.sock").exists()
        await node.drain()
    assert port_is_free(config.sip.listen[0].port) and port_is_free(config.api.port)
    await asyncio.sleep(0)
    assert other_tasks() == before


def reloads(registry: CollectorRegistry, result: str) -> float:
    value = registry.get_sample_value("gateway_config_reloads_total", {"result": result})
    return value or 0.0


async def test_reload_is_validated_whole_and_refused_whole(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = demo_config(tmp_path)
    data = tmp_path / "data"
    trunks_text = (data / "trunks.yaml").read_text(encoding="utf-8")
    async with started(config) as node:
        assert node.dialplan is not None and node.charging is not None
        registry = node.gateway.metrics.registry
        table, plan, rater = node.trunks.table, node.dialplan.plan, node.charging.rater
        # A valid trunk file that drops a trunk the dialplan routes to: refused as a whole.
        spec = yaml.safe_load(trunks_text)
        spec["trunks"] = [t for t in spec["trunks"] if t["name"] != "acme-pbx"]
        (data / "trunks.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
        with caplog.at_level(logging.ERROR, logger="gateway"):
            assert await node.reloader.reload() is False
        assert "unknown trunk 'acme-pbx'" in caplog.text and str(data / "dialplans") in caplog.text
        assert (node.trunks.table, node.dialplan.plan, node.charging.rater) == (table, plan, rater)
        # A good trunk change beside a broken tariff file: nothing changes either.
        spec = yaml.safe_load(trunks_text)
        carrier = next(t for t in spec["trunks"] if t["name"] == "carrier")
        carrier["destinations"][0]["port"] = moved = free_udp_tcp_port()
        (data / "trunks.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
        good_tariffs = (data / "tariffs.yaml").read_text(encoding="utf-8")
        (data / "tariffs.yaml").write_text("currency: [\n", encoding="utf-8")
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="gateway"):
            assert await node.reloader.reload() is False
        assert f"{data / 'tariffs.yaml'}:" in caplog.text
        assert node.trunks.table is table and reloads(registry, "refused") == 2
        # Everything valid: swapped together; readers through the holders see the new data.
        (data / "tariffs.yaml").write_text(good_tariffs, encoding="utf-8")
        node.reloader.request()
        assert await node.reloader.wait() is True
        assert reloads(registry, "ok") == 1
        assert node.trunks.table is not table and node.dialplan.plan is not plan
        assert node.charging.rater is not rater
        assert node.registrar.trunks.trunks["carrier"].destinations[0].port == moved  # type: ignore[union-attr]
        await node.drain()


async def test_an_operator_change_during_a_reload_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API disables a trunk while a reload validates files in its thread: the reload sees
    the running table changed under it and validates again, so the operator's change stays."""
    config = demo_config(tmp_path)
    async with started(config) as node:
        loop = asyncio.get_running_loop()
        prepare, calls = node.trunks.prepare, list[int]()

        def racing_prepare() -> TrunkTable:
            calls.append(1)
            table = prepare()
            if len(calls) == 1:  # the operator's PATCH lands before the reload swaps
                loop.call_soon_threadsafe(node.trunks.set_enabled, "acme-pbx", False)
            return table

        monkeypatch.setattr(node.trunks, "prepare", racing_prepare)
        assert await node.reloader.reload() is True
        assert len(calls) == 2 and node.trunks.trunks["acme-pbx"].enabled is False
        await node.drain()


@pytest.fixture
def handoff_channels(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """What the supervisor gives worker 1 of 2 (gateway.transport.handoff): its hand-off channels,
    as copies of the descriptors a worker process would inherit."""
    pairs = make_channels(2)
    value, fds = channels_for(1, pairs)
    inherited = {fd: os.dup(fd) for fd in fds}
    receive, _, sends = value.partition(":")
    monkeypatch.setenv(ENVIRONMENT, f"{inherited[int(receive)]}:"
                       + ",".join(str(inherited[int(fd)]) for fd in sends.split(",")))
    yield
    for pair in pairs:
        for sock in pair:
            sock.close()


@pytest.mark.usefixtures("handoff_channels")
async def test_a_worker_adopts_the_trunk_changes_of_the_api_worker(tmp_path: Path) -> None:
    """Worker 1 has no API: the change worker 0's API keeps in state_dir reaches its table."""
    one = demo_config(tmp_path)
    config = one.model_copy(update={"node": one.node.model_copy(update={"workers": 2})}).for_worker(1)
    async with started(config) as node:
        assert node.api is None
        api_side = TrunkHolder.load(config.registrar.trunks, node.trunks.overrides)
        api_side.set_enabled("acme-pbx", False)
        for _ in range(200):  # the follower looks once a second
            if not node.trunks.trunks["acme-pbx"].enabled:
                break
            await asyncio.sleep(0.05)
        assert node.trunks.trunks["acme-pbx"].enabled is False
        await node.drain()
