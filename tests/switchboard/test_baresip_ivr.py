"""baresip (registered as an IAD line) calls the switchboard by its short number, keys 1 with
its ``sndcode`` command (RFC 4733 telephone-events) and is connected to the sales hunt group's
PBX extension (SIPp); the gateway re-INVITEs baresip with the callee's SDP, baresip hangs up."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.call.harness import free_port, sipp_server, wait_idle
from tests.call.test_baresip import command
from tests.registrar.peers import PASSWORD, contacts
from tests.support.servers import require_binary, stop_process, wait_for_tcp
from tests.switchboard.peers import WORKDAY_MORNING, demo_gateway, switchboard_status, wait_switchboard_idle

pytestmark = pytest.mark.slow


@contextmanager
def baresip(workdir: Path, number: str, gateway_port: int) -> Iterator[int]:
    """A headless baresip registered as ``number``; yields its ctrl_tcp port. Its audio source is
    a 30 s tone file: baresip sends RFC 4733 events from its audio transmitter, which only runs
    while the source produces audio (an empty file would stop it)."""
    sip_port, ctrl_port = free_port(), free_port()
    workdir.mkdir(parents=True)
    tone = workdir / "tone.wav"
    subprocess.run(
        [
            require_binary("sox"),
            "-n",
            "-r",
            "8000",
            "-c",
            "1",
            "-b",
            "16",
            str(tone),
            "synth",
            "30",
            "sine",
            "440",
        ],
        check=True,
    )
    (workdir / "config").write_text(
        f"poll_method epoll\nsip_listen 127.0.0.1:{sip_port}\nsip_trans_def udp\n"
        "module_path /usr/lib/baresip/modules\nmodule g711.so\nmodule aufile.so\n"
        "module_app account.so\nmodule_app menu.so\nmodule_app ctrl_tcp.so\n"
        f"ctrl_tcp_listen 127.0.0.1:{ctrl_port}\n"
        f"audio_player aufile,/dev/null\naudio_source aufile,{tone}\naudio_alert aufile,/dev/null\n",
        encoding="utf-8",
    )
    (workdir / "accounts").write_text(
        f"<sip:{number}@127.0.0.1:{gateway_port};transport=udp>;auth_pass={PASSWORD};regint=60\n",
        encoding="utf-8",
    )
    log = (workdir / "baresip.log").open("wb")
    proc = subprocess.Popen(
        [require_binary("baresip"), "-f", str(workdir)], stdin=subprocess.DEVNULL, stdout=log, stderr=log
    )
    try:
        wait_for_tcp("127.0.0.1", ctrl_port)
        yield ctrl_port
    finally:
        stop_process(proc)
        log.close()


def wait_state(gw: Any, state: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not any(c["state"] == state for c in switchboard_status(gw)["active"]):
        assert time.monotonic() < deadline, (
            f"no switchboard call in {state}: {switchboard_status(gw)}\n{gw.log()}"
        )
        time.sleep(0.1)


def test_baresip_keys_1_and_reaches_sales(tmp_path: Path) -> None:
    pbx = free_port()
    gw = demo_gateway(tmp_path / "gw", carrier=free_port(), pbx=pbx, at=WORKDAY_MORNING)
    gw.start()
    try:
        with (
            sipp_server(tmp_path / "uas", "call_uas.xml", pbx, extra=["-trace_msg"]) as uas,
            baresip(tmp_path / "baresip", "62880004", gw.port) as ctrl,
        ):
            deadline = time.monotonic() + 15
            while not contacts(gw.port, "62880004"):
                assert time.monotonic() < deadline, "baresip did not register"
                time.sleep(0.2)
            command(ctrl, "dial", f"sip:60000@127.0.0.1:{gw.port}")
            wait_state(gw, "menu")
            time.sleep(0.5)  # the caller's ACK starts the menu; a key before it is still taken
            command(ctrl, "sndcode", "1")
            wait_state(gw, "connected")
            command(ctrl, "hangup")
            uas.wait(timeout=10)
        log = "".join(p.read_text(errors="replace") for p in (tmp_path / "uas").glob("*_messages.log"))
        assert f"INVITE sip:1001@127.0.0.1:{pbx} " in log
        assert "connecting to hunt:sales" in gw.log()
        wait_switchboard_idle(gw)
        wait_idle(gw)
    finally:
        gw.stop()
