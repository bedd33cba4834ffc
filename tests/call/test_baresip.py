"""Two baresip instances register as IAD lines and call each other through the gateway by short
number: the call is answered (auto answer), hung up by the caller, and nothing is left behind.
baresip is driven through its ``ctrl_tcp`` module (netstring-framed JSON commands)."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.call.harness import TIMERS, free_port, status, wait_for, wait_idle
from tests.registrar.peers import PASSWORD, contacts
from tests.support.gateway import GatewayProcess, demo_trunks_file
from tests.support.servers import require_binary, stop_process, wait_for_tcp


@contextmanager
def baresip(workdir: Path, number: str, gateway_port: int, *, transport: str = "udp",
            config: str = "") -> Iterator[int]:
    """A headless baresip registered as ``number`` over ``transport``; yields its ctrl_tcp port.
    ``config``: more lines for its config file (TLS: ``sip_cafile``)."""
    sip_port, ctrl_port = free_port(), free_port()
    workdir.mkdir(parents=True)
    (workdir / "config").write_text(
        f"poll_method epoll\nsip_listen 127.0.0.1:{sip_port}\nsip_trans_def {transport}\n{config}"
        "module_path /usr/lib/baresip/modules\nmodule g711.so\nmodule_app account.so\n"
        "module_app menu.so\nmodule_app ctrl_tcp.so\n"
        f"ctrl_tcp_listen 127.0.0.1:{ctrl_port}\n"
        "audio_player aufile,/dev/null\naudio_source aufile,/dev/null\naudio_alert aufile,/dev/null\n",
        encoding="utf-8",
    )
    (workdir / "accounts").write_text(
        f"<sip:{number}@127.0.0.1:{gateway_port};transport={transport}>;auth_pass={PASSWORD};regint=60;"
        "answermode=auto\n",
        encoding="utf-8",
    )
    proc = subprocess.Popen(
        [require_binary("baresip"), "-f", str(workdir)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_tcp("127.0.0.1", ctrl_port)
        yield ctrl_port
    finally:
        stop_process(proc)


def command(ctrl_port: int, name: str, params: str = "") -> None:
    payload = json.dumps({"command": name, "params": params, "token": "t"}).encode()
    with socket.create_connection(("127.0.0.1", ctrl_port), timeout=5) as sock:
        sock.sendall(str(len(payload)).encode() + b":" + payload + b",")
        sock.recv(65535)  # the command's answer


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[GatewayProcess]:
    trunks = demo_trunks_file(tmp_path / "trunks.yaml", carrier=free_port(), pbx=free_port())
    process = GatewayProcess(
        tmp_path / "gw",
        sip_overrides={"timers": TIMERS},
        extra_config={
            "registrar": {"trunks": str(trunks), "qualify": {"enabled": False}},
            "call": {"status_socket": str(tmp_path / "gw" / "call.sock")},
        },
    )
    process.start()
    yield process
    process.stop()


def test_two_baresip_lines_call_each_other_by_short_number(gw: GatewayProcess, tmp_path: Path) -> None:
    with (
        baresip(tmp_path / "caller", "62880003", gw.port) as caller,
        baresip(tmp_path / "callee", "62880004", gw.port),
    ):
        deadline = time.monotonic() + 15
        while not (contacts(gw.port, "62880003") and contacts(gw.port, "62880004")):
            assert time.monotonic() < deadline, "baresip did not register"
            time.sleep(0.2)
        command(caller, "dial", f"sip:60004@127.0.0.1:{gw.port}")
        wait_for(gw, lambda snap: any(c["state"] == "confirmed" for c in snap["active"]), timeout=15)
        command(caller, "hangup")
        snap = wait_idle(gw)
    assert snap["completed"] == 1 and status(gw)["failed"] == 0
