"""Kamailio 5.6 with the shipped ``deploy/kamailio/kamailio.cfg`` in front of two gateway nodes
(two processes on distinct ports sharing one real redis-server): SIPp's calls through Kamailio
are spread over both nodes by Call-ID hash; one node is SIGKILLed under load; once the
dispatcher's OPTIONS probing marked it down (the time this takes is printed), every new call
succeeds on the other node.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from gateway.charging.events import EventType
from tests.call.harness import TIMERS, screen, sipp_command, sipp_server
from tests.charging.test_calls_end_to_end import (
    CARRIER,
    SCENARIO,
    background,
    calls_file,
    six_second_tariffs,
    streamed,
    wait_until,
)
from tests.support.gateway import PROJECT_ROOT, GatewayProcess, demo_trunks_file, probe_options
from tests.support.servers import free_port, free_udp_tcp_port, require_binary, stop_process

KAMAILIO_CFG = PROJECT_ROOT / "deploy" / "kamailio" / "kamailio.cfg"
HOLD_MS = 1000


def node(workdir: Path, name: str, redis_url: str, front_port: int) -> GatewayProcess:
    """A gateway node; calls from Kamailio (its address and port) come in on the acme-pbx trunk."""
    workdir.mkdir(parents=True, exist_ok=True)
    return GatewayProcess(
        workdir,
        sip_overrides={"timers": TIMERS},
        extra_config={
            "node": {"id": name},
            "redis": {"url": redis_url},
            "registrar": {
                "trunks": str(demo_trunks_file(workdir / "trunks.yaml", carrier=CARRIER, pbx=front_port)),
                "qualify": {"enabled": False},
                "location_store": "redis",
            },
            "accounts": {"store": "memory"},
            "call": {"status_socket": str(workdir / "call.sock")},
            "charging": {"tariffs": str(six_second_tariffs(workdir / "tariffs.yaml"))},
        },
    )


@contextmanager
def kamailio(workdir: Path, port: int, nodes: list[GatewayProcess]) -> Iterator[Path]:
    """Kamailio on ``port`` dispatching to ``nodes``; yields its control socket (for kamcmd)."""
    workdir.mkdir(parents=True, exist_ok=True)
    targets = workdir / "dispatcher.list"
    targets.write_text("".join(f"1 sip:127.0.0.1:{n.port}\n" for n in nodes), encoding="utf-8")
    ctl = workdir / "kamailio.ctl"
    log = (workdir / "kamailio.log").open("wb")
    proc = subprocess.Popen(
        [
            require_binary("kamailio"), "-f", str(KAMAILIO_CFG), "-m", "64", "-x", "tlsf", "-DD", "-E",
            "-l", f"udp:127.0.0.1:{port}", "-Y", str(workdir), "-P", str(workdir / "kamailio.pid"),
            "-A", f'DISPATCHER_LIST="{targets}"', "-A", f'CTL_SOCKET="unix:{ctl}"',
        ],
        stdout=log,
        stderr=log,
    )
    try:
        wait_until("Kamailio relays OPTIONS to a node", lambda: probe_options("127.0.0.1", port) is not None)
        yield ctl
    finally:
        stop_process(proc)
        log.close()


def node_state(ctl: Path, gateway: GatewayProcess) -> str:
    """The dispatcher's flags for ``gateway`` (``AP`` active, ``IP`` inactive) per kamcmd."""
    out = subprocess.run(
        [require_binary("kamcmd"), "-s", f"unix:{ctl}", "dispatcher.list"],
        capture_output=True, text=True, timeout=10, check=False,
    ).stdout
    uri = f"sip:127.0.0.1:{gateway.port}"
    lines = out.splitlines()
    for index, line in enumerate(lines):
        if uri in line:
            for following in lines[index : index + 4]:
                if "FLAGS" in following:
                    return following.split(":", 1)[1].strip()
    return ""


def caller(workdir: Path, front: int, calls: int, rate: float, tag: str) -> list[str]:
    workdir.mkdir(parents=True, exist_ok=True)
    inf = calls_file(workdir / "calls.csv", [("62345678", "1001", HOLD_MS)] * calls)
    return sipp_command(
        str(SCENARIO), port=free_port(), target=f"127.0.0.1:{front}", calls=calls, rate=rate,
        extra=["-inf", str(inf), "-cid_str", f"{tag}-%u@%s"], timeout=60,
    )


def answered_on(redis_url: str, tag: str) -> dict[str, int]:
    """Started (answered) calls of ``tag`` per node, from the charging stream."""
    counts: dict[str, int] = {}
    for event in streamed(redis_url):
        if event.event_type is EventType.START and event.a_leg_sip_call_id.startswith(f"{tag}-"):
            counts[event.node_id] = counts.get(event.node_id, 0) + 1
    return counts


def test_kamailio_spreads_calls_and_new_calls_succeed_once_a_killed_node_is_marked_down(
    tmp_path: Path, redis_url: str
) -> None:
    front = free_udp_tcp_port()
    one = node(tmp_path / "n1", "n1", redis_url, front)
    two = node(tmp_path / "n2", "n2", redis_url, front)
    with ExitStack() as stack:
        for gateway in (one, two):
            gateway.start()
            stack.callback(gateway.stop)
        carrier = sipp_server(tmp_path / "carrier", "call_uas.xml", CARRIER, calls=1000, timeout=120)
        stack.enter_context(carrier)
        ctl = stack.enter_context(kamailio(tmp_path / "kamailio", front, [one, two]))
        wait_until("both nodes active", lambda: "A" in node_state(ctl, one) and "A" in node_state(ctl, two))

        spread = subprocess.run(caller(tmp_path / "spread", front, 20, 10, "spread"), cwd=tmp_path / "spread",
                                capture_output=True, timeout=90, check=False)
        assert spread.returncode == 0, screen(tmp_path / "spread")
        wait_until("20 answered calls recorded", lambda: sum(answered_on(redis_url, "spread").values()) == 20)
        per_node = answered_on(redis_url, "spread")
        assert per_node.get("n1", 0) > 0 and per_node.get("n2", 0) > 0, per_node

        # Under load, node two dies; its calls in progress are lost with it.
        loaded = caller(tmp_path / "load", front, 40, 10, "load")
        load = stack.enter_context(background(loaded, tmp_path / "load"))
        wait_until("calls flowing", lambda: sum(answered_on(redis_url, "load").values()) >= 5)
        assert two.proc is not None
        two.proc.kill()
        killed = time.monotonic()
        two.proc.wait(timeout=10)
        two.proc = None
        wait_until("node two marked down", lambda: "I" in node_state(ctl, two))
        detection = time.monotonic() - killed
        print(f"dispatcher detection after SIGKILL: {detection:.2f} s")  # reported, not asserted
        load.wait(timeout=90)

        after = subprocess.run(caller(tmp_path / "after", front, 20, 10, "after"), cwd=tmp_path / "after",
                               capture_output=True, timeout=90, check=False)
        assert after.returncode == 0, screen(tmp_path / "after")
        wait_until("20 answered calls after detection", lambda: answered_on(redis_url, "after") == {"n1": 20})
