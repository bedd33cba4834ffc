"""Several worker processes sharing the SIP port (``gateway run --workers N``, gateway.workers).

Pure checks of the per-worker configuration and the dialplan version follower, then the real
supervisor with two workers and a real redis-server: SIPp calls spread over both workers, a
REGISTER taken by one worker serves a call placed through the other, a killed worker is started
again, SIGHUP reaches every worker, SIGTERM stops everything with exit 0, and a configuration
that cannot be shared is refused before any worker starts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from gateway.call.service import read_status
from gateway.config import GatewayConfig, load_config
from gateway.datafile import DataFileError
from gateway.mgmt.dialplans import ActiveVersionFollower, DialplanVersions
from gateway.routing.reload import DialplanHolder
from tests.call.harness import (
    TIMERS,
    Lane,
    free_port,
    gateway_for,
    line_credentials,
    screen,
    sipp_command,
    sipp_server,
)
from tests.registrar.peers import register
from tests.support.gateway import PROJECT_ROOT, GatewayProcess, demo_trunks_file
from tests.support.servers import RedisServer, free_udp_tcp_ports

SEED = [PROJECT_ROOT / "dialplans"]


# -- pure ---------------------------------------------------------------------------------------


def test_each_worker_gets_its_own_identity_spool_and_status_sockets(tmp_path: Path) -> None:
    config = GatewayConfig.model_validate({
        "node": {"id": "gw1", "workers": 2, "worker_port_base": 5070},
        "call": {"status_socket": str(tmp_path / "call.sock")},
    })
    first, second = config.for_worker(0), config.for_worker(1)
    assert (first.node.id, second.node.id) == ("gw1-w0", "gw1-w1")  # charging event ids stay unique
    assert (first.node.own_port, second.node.own_port) == (5070, 5071)
    assert first.node.first and not second.node.first and config.node.first
    assert first.charging.spool.directory != second.charging.spool.directory
    assert second.call.status_socket == tmp_path / "call-w1.sock"
    assert first.api.enabled == config.api.enabled and not second.api.enabled  # the API runs once
    assert GatewayConfig().node.own_port is None  # a single process has no port of its own


def test_workers_without_shared_state_are_refused_naming_the_fields(tmp_path: Path) -> None:
    path = tmp_path / "config" / "gateway.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump({"node": {"workers": 2}, "call": {"limits_backend": "memory"}}))
    with pytest.raises(DataFileError) as refused:
        load_config(path, environ={})
    fields = {problem.field for problem in refused.value.problems}
    assert fields == {"redis.url", "call.limits_backend"}
    assert all(problem.source == str(path) for problem in refused.value.problems)
    # With Redis the same workers are fine (the location store and limits default to it).
    path.write_text(yaml.safe_dump({"node": {"workers": 2}}))
    assert load_config(path, environ={"REDIS_URL": "redis://127.0.0.1:1/0"}).node.workers == 2


async def test_follower_adopts_the_version_the_api_worker_made_active(tmp_path: Path) -> None:
    api_side = DialplanVersions(DialplanHolder.load(SEED), tmp_path)
    other = DialplanHolder.load(SEED)
    follower = ActiveVersionFollower(other, tmp_path, SEED)
    assert not follower.check()  # nothing applied yet: the seed serves
    text = api_side.get("acme")
    await api_side.replace("acme", text.replace("ACME Trading", "ACME Follower"), who="t")
    assert follower.check()
    assert other.plan.digest() == api_side.holder.plan.digest()
    assert not follower.check()  # unchanged: no reload
    # A damaged active version does not replace the plan in service.
    current = tmp_path / "dialplans" / "current"
    (tmp_path / "dialplans" / "versions" / "000999").mkdir()
    (tmp_path / "dialplans" / "versions" / "000999" / "acme.yaml").write_text("kind: nope\n")
    serving = other.plan.digest()
    current.write_text("999\n")
    assert not follower.check()
    assert other.plan.digest() == serving


# -- real processes -----------------------------------------------------------------------------


def worker_pids(supervisor: subprocess.Popen[bytes]) -> list[int]:
    children = Path(f"/proc/{supervisor.pid}/task/{supervisor.pid}/children").read_text().split()
    return sorted(int(pid) for pid in children)


def statuses(gw: GatewayProcess) -> list[dict[str, object]]:
    return [read_status(path) for path in gw.status_sockets()]


def wait_all_idle(gw: GatewayProcess, timeout: float = 15.0) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    while True:
        snaps = statuses(gw)
        keys = ("calls", "dialogs", "pending_invites", "timers", "limits", "transactions")
        left = [s for s in snaps if any(s[key] for key in keys)]
        if not left:
            return snaps
        if time.monotonic() > deadline:
            raise AssertionError(f"state left behind: {left}")
        time.sleep(0.1)


CALLEE = free_port()
CALLER_IP = "127.0.0.3"  # the calling trunk is told apart from the callee by its address alone


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory, redis_srv: RedisServer) -> Iterator[GatewayProcess]:
    if redis_srv.proc is None:
        redis_srv.start()
    redis_srv.flush()
    workdir = tmp_path_factory.mktemp("workers")
    lane = Lane("w", caller_ports=[], callee_ports=[CALLEE], caller_match=[{"host": CALLER_IP}])
    gw = gateway_for(workdir, [lane], log_level="INFO")
    gw.workers = 2
    gw.env = {"REDIS_URL": redis_srv.url}
    gw.extra_config["node"] = {"id": "test-gw", "worker_port_base": free_udp_tcp_ports(2)}
    gw.start(timeout=30)
    yield gw
    gw.stop()


def run_calls(gw: GatewayProcess, workdir: Path, *, calls: int, rate: int) -> None:
    """``calls`` SIPp calls, a fresh local socket (so a fresh SO_REUSEPORT hash) for each."""
    workdir.mkdir(parents=True, exist_ok=True)
    command = sipp_command(
        "call_uac.xml", port=free_port(), target=f"127.0.0.1:{gw.port}",
        calls=calls, rate=rate, transport="un", local_ip=CALLER_IP, extra=["-max_socket", "1000"],
    )
    with sipp_server(workdir / "uas", "call_uas.xml", CALLEE, calls=100000, timeout=60):
        result = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=90, check=False)
    assert result.returncode == 0, screen(workdir) + gw.log()[-3000:]


def test_calls_through_the_shared_port_reach_both_workers(
    two_workers: GatewayProcess, tmp_path: Path
) -> None:
    run_calls(two_workers, tmp_path, calls=200, rate=100)
    snaps = wait_all_idle(two_workers)
    completed = [int(str(s["completed"])) for s in snaps]
    assert sum(completed) == 200 and all(n > 0 for n in completed), completed
    assert all(s["failed"] == 0 for s in snaps), snaps


def test_a_killed_worker_is_started_again_and_takes_calls(
    two_workers: GatewayProcess, tmp_path: Path
) -> None:
    assert two_workers.proc is not None
    before = worker_pids(two_workers.proc)
    assert len(before) == 2
    os.kill(before[1], signal.SIGKILL)
    deadline = time.monotonic() + 20
    while True:
        now = worker_pids(two_workers.proc)
        if len(now) == 2 and before[1] not in now and two_workers.workers_up():
            break
        assert time.monotonic() < deadline, two_workers.log()[-3000:]
        time.sleep(0.2)
    assert before[0] in now  # the other worker was left alone
    run_calls(two_workers, tmp_path, calls=100, rate=100)
    wait_all_idle(two_workers)


def test_sighup_reaches_every_worker_and_stops_none(two_workers: GatewayProcess) -> None:
    assert two_workers.proc is not None
    before = worker_pids(two_workers.proc)
    reloaded = two_workers.log().count("reloaded: 2 trunks")
    two_workers.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 15
    while two_workers.log().count("reloaded: 2 trunks") < reloaded + 2:
        assert time.monotonic() < deadline, two_workers.log()[-3000:]
        time.sleep(0.05)
    assert worker_pids(two_workers.proc) == before and two_workers.proc.poll() is None


def test_sigterm_stops_the_supervisor_and_every_worker(tmp_path: Path, redis_url: str) -> None:
    lane = Lane("t", caller_ports=[], callee_ports=[free_port()], caller_match=[{"host": CALLER_IP}])
    gw = gateway_for(tmp_path, [lane])
    gw.workers, gw.env = 2, {"REDIS_URL": redis_url}
    gw.start(timeout=30)
    assert gw.proc is not None
    pids = worker_pids(gw.proc)
    assert gw.stop() == 0, gw.log()[-3000:]
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


def test_an_unshareable_configuration_stops_before_any_worker(tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path, extra_config={"dialplans": []})
    gw.write_config()
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "run", "--config", str(gw.config_path), "--workers", "2"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=30, env=env, check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "redis.url" in result.stderr and str(gw.config_path) in result.stderr, result.stderr


def test_a_registration_taken_by_one_worker_serves_calls_through_every_worker(
    tmp_path: Path, redis_url: str
) -> None:
    """The callee's REGISTER is taken by the one worker its Call-ID belongs to; calls from one
    SIPp socket spread over both workers (gateway.transport.handoff), so the other worker
    serves some of them from the registration it never saw."""
    caller, callee = free_port(), free_port()
    trunks = demo_trunks_file(tmp_path / "trunks.yaml", carrier=free_port(), pbx=free_port())
    data = yaml.safe_load(trunks.read_text())
    for trunk in data["trunks"]:  # the demo lines' 2 calls per second would refuse most
        trunk["max_cps"] = 100
    trunks.write_text(yaml.safe_dump(data))
    gw = GatewayProcess(
        tmp_path,
        sip_overrides={"timers": TIMERS},
        extra_config={
            "node": {"id": "test-gw", "worker_port_base": free_udp_tcp_ports(2)},
            "registrar": {"trunks": str(trunks), "qualify": {"enabled": False}},
            "call": {"status_socket": str(tmp_path / "call.sock")},
        },
        workers=2,
        env={"REDIS_URL": redis_url},
    )
    gw.start(timeout=30)
    calls = 20  # all on one worker: 2 chances in 2**20
    try:
        for number, port in (("62880001", caller), ("62880002", callee)):
            answer = register(gw.port, number, contact=f"sip:{number}@127.0.0.1:{port}", local_port=port)
            assert answer.status == 200, answer
        command = sipp_command("call_uac.xml", port=caller, target=f"127.0.0.1:{gw.port}", service="60002",
                               calls=calls, extra=line_credentials("62880001"))  # challenged (407)
        with sipp_server(tmp_path / "uas", "call_uas.xml", callee, calls=calls):
            result = subprocess.run(
                command, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
            )
        assert result.returncode == 0, screen(tmp_path) + gw.log()[-3000:]
        completed = [s["completed"] for s in wait_all_idle(gw)]
        assert sum(completed) == calls and all(completed), completed  # type: ignore[arg-type]
    finally:
        gw.stop()
