"""The registrar in the running gateway, driven by real peers: SIPp, sipsak, baresip; Redis shared
by two gateway processes and kept across a restart."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.registrar.location import Binding, RedisLocationStore
from tests.registrar.peers import LINES, PASSWORD, contacts, register, registrar_gateway, users_csv
from tests.support.gateway import PROJECT_ROOT, GatewayProcess
from tests.support.servers import free_port, require_binary, stop_process
from tests.support.sipp import run_sipp

SIPP_DIR = PROJECT_ROOT / "bench" / "sipp"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """One gateway with the demo trunks and the in-memory location store."""
    proc = registrar_gateway(tmp_path_factory.mktemp("gw-mem"))
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def test_sipp_registers_the_iad_lines_at_load(gw: GatewayProcess, tmp_path: Path) -> None:
    csv = users_csv(tmp_path / "users.csv", [(n, n, PASSWORD) for n in LINES])
    result = run_sipp(f"127.0.0.1:{gw.port}", tmp_path, scenario=SIPP_DIR / "register_auth_uac.xml",
                      injection=csv, rate=250, calls=1000, timeout=60)
    assert result.returncode == 0, result.output
    assert (result.successful, result.failed) == (1000, 0)
    assert all(contacts(gw.port, line) for line in LINES)


def test_sipp_wrong_password_and_unknown_user_get_only_401(gw: GatewayProcess, tmp_path: Path) -> None:
    rows = [(n, n, "wrong-secret") for n in LINES] + [("62889999", "62889999", PASSWORD),
                                                      ("62881000", "62881000", PASSWORD)]
    csv = users_csv(tmp_path / "bad.csv", rows)
    result = run_sipp(f"127.0.0.1:{gw.port}", tmp_path, scenario=SIPP_DIR / "register_auth_reject_uac.xml",
                      injection=csv, rate=100, calls=100, timeout=60)
    assert result.returncode == 0, result.output
    assert (result.successful, result.failed) == (100, 0)


def test_sipsak_register_and_options(gw: GatewayProcess) -> None:
    sipsak = require_binary("sipsak")
    contact = f"sip:62880003@127.0.0.1:{free_port(2)}"
    reg = subprocess.run(
        [sipsak, "-U", "-C", contact, "-s", f"sip:62880003@127.0.0.1:{gw.port}", "-a", PASSWORD,
         "-u", "62880003", "-x", "300"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert reg.returncode == 0, reg.stdout + reg.stderr
    assert contact in contacts(gw.port, "62880003")
    options = subprocess.run([sipsak, "-v", "-s", f"sip:62880003@127.0.0.1:{gw.port}"],
                             capture_output=True, text=True, timeout=30, check=False)
    assert options.returncode == 0 and "200 OK" in options.stdout, options.stdout + options.stderr
    wrong = subprocess.run(
        [sipsak, "-U", "-C", contact, "-s", f"sip:62880003@127.0.0.1:{gw.port}", "-a", "nope",
         "-u", "62880003"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert wrong.returncode != 0


def test_line_may_not_register_another_number(gw: GatewayProcess) -> None:
    # 62880004's own credentials, presented for 62880005: authenticated, but not its number.
    assert register(gw.port, "62880005", username="62880004").status == 403


def lookup(redis_url: str, aor: str) -> list[Binding]:
    """The bindings of ``aor`` as any gateway process sharing the Redis sees them."""

    async def run() -> list[Binding]:
        store = RedisLocationStore(redis_url)
        try:
            return await store.lookup(aor, time.time())
        finally:
            await store.close()

    return asyncio.run(run())


def test_baresip_registers_and_stays_registered(tmp_path: Path, redis_url: str) -> None:
    baresip = require_binary("baresip")
    proc = registrar_gateway(tmp_path / "gw", redis_url=redis_url, min_expires=2, default_expires=10)
    proc.start()
    conf = tmp_path / "baresip"
    conf.mkdir()
    port = free_port(2)
    # Headless: no audio driver, no UI; aufile from /dev/null satisfies the audio settings.
    (conf / "config").write_text(
        f"poll_method epoll\nsip_listen 127.0.0.1:{port}\nsip_trans_def udp\n"
        "module_path /usr/lib/baresip/modules\nmodule g711.so\nmodule_app account.so\n"
        "audio_player aufile,/dev/null\naudio_source aufile,/dev/null\naudio_alert aufile,/dev/null\n",
        encoding="utf-8",
    )
    account = f"<sip:62880007@127.0.0.1:{proc.port};transport=udp>;auth_pass={PASSWORD};regint=4"
    (conf / "accounts").write_text(account + "\n", encoding="utf-8")
    agent = subprocess.Popen([baresip, "-f", str(conf)], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        seen: list[float] = []  # successive expiry times: each refresh pushes it further
        deadline = time.monotonic() + 40
        while len(seen) < 3:  # registered, then refreshed twice
            assert time.monotonic() < deadline, f"baresip did not refresh: {seen}\n{proc.log()}"
            bindings = lookup(redis_url, "62880007")
            if bindings:
                assert bindings[0].source.port == port  # where requests for 62880007 go (NAT)
                if not seen or bindings[0].expires_at > seen[-1]:
                    seen.append(bindings[0].expires_at)
            else:
                assert not seen, "the binding lapsed between refreshes"
            time.sleep(0.3)
    finally:
        stop_process(agent)
        proc.stop()


def test_two_gateways_share_one_redis_and_a_restart_keeps_bindings(tmp_path: Path, redis_url: str) -> None:
    a = registrar_gateway(tmp_path / "a", redis_url=redis_url)
    b = registrar_gateway(tmp_path / "b", redis_url=redis_url)
    a.start()
    b.start()
    try:
        assert register(a.port, "62880006", contact="sip:62880006@127.0.0.1:7001").status == 200
        assert register(b.port, "62880006", contact="sip:62880006@127.0.0.1:7002").status == 200
        both = {"sip:62880006@127.0.0.1:7001", "sip:62880006@127.0.0.1:7002"}
        assert set(contacts(b.port, "62880006")) == both
        assert set(contacts(a.port, "62880006")) == set(contacts(b.port, "62880006"))
        a.stop()
        a.start()  # same port, same Redis
        assert set(contacts(a.port, "62880006")) == both
    finally:
        a.stop()
        b.stop()
