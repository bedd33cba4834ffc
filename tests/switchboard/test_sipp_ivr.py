"""The switchboard through real peers: SIPp calls 62880000 from the carrier trunk, keys digits
(RFC 4733 events played from a pcap, or SIP INFO) and is connected to a SIPp callee on the PBX
trunk; a Python RTP receiver checks the prompt audio the caller gets."""

from __future__ import annotations

import itertools
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.media.g711 import Codec
from gateway.media.prompts import PromptLibrary, is_silent
from tests.call.harness import free_port, line_credentials, screen, sipp_command, sipp_server, wait_idle
from tests.charging.test_calls_end_to_end import spooled, stops
from tests.media.rtp_tools import RtpReceiver
from tests.registrar.peers import register
from tests.support.gateway import GatewayProcess
from tests.support.servers import stop_process
from tests.switchboard.peers import (
    SATURDAY_NIGHT,
    WORKDAY_MORNING,
    caller_scenario,
    demo_gateway,
    wait_switchboard_idle,
)

CALLER = free_port()  # the carrier trunk's address: the SIPp caller sends from here
PBX = free_port()  # the PBX trunk: the SIPp callee (every hunt member is a PBX extension)


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    process = demo_gateway(tmp_path_factory.mktemp("sb-day"), carrier=CALLER, pbx=PBX, at=WORKDAY_MORNING)
    process.start()
    yield process
    process.stop()


def call(
    gw: GatewayProcess,
    workdir: Path,
    *,
    keys: str = "none",
    presses: list[tuple[int, str]] | None = None,
    info_key: str = "1",
    end: str = "connected",
    called: str = "62880000",
    caller_port: int = CALLER,
    callee_port: int = PBX,
    calling: str = "13911112222",
    late_offer: bool = False,
    refresh: bool = False,
    talk_ms: int = 500,
    privacy: bool = False,
) -> tuple[subprocess.CompletedProcess[str], RtpReceiver, str]:
    """One SIPp call; returns its result, the caller's RTP receiver and the callee's INVITE
    (the answering SIPp listens on ``callee_port``: the PBX trunk unless told otherwise)."""
    workdir.mkdir(parents=True, exist_ok=True)
    receiver = RtpReceiver()
    try:
        scenario = caller_scenario(
            workdir / "caller.xml",
            rtp_port=receiver.port,
            keys=keys,
            presses=presses or [],
            info_key=info_key,
            end=end,
            calling=calling,
            late_offer=late_offer,
            refresh=refresh,
            talk_ms=talk_ms,
            privacy=privacy,
        )
        with sipp_server(workdir / "uas", "call_uas.xml", callee_port, extra=["-trace_msg"]) as uas:
            command = sipp_command(
                "call_uac.xml",
                port=caller_port,
                target=f"127.0.0.1:{gw.port}",
                service=called,
                # A registered line's INVITE is challenged (407): its credentials, unused otherwise.
                extra=["-mi", "127.0.0.1", "-mp", str(free_port() & ~1), *line_credentials(calling)],
            )
            command[command.index("-sf") + 1] = str(scenario)
            result = subprocess.run(
                command, cwd=workdir, capture_output=True, text=True, timeout=90, check=False
            )
            if end.startswith("connected"):
                uas.wait(timeout=10)
    finally:
        receiver.stop()
    invites = "".join(p.read_text(errors="replace") for p in (workdir / "uas").glob("*_messages.log"))
    return result, receiver, invites


def assert_ok(result: subprocess.CompletedProcess[str], gw: GatewayProcess, workdir: Path) -> None:
    assert result.returncode == 0, screen(workdir) + gw.log()[-4000:]


def callee_invite(log: str) -> str:
    match = re.search(r"(INVITE sip:.*?)\r?\n\r?\n", log, re.S)
    assert match, log[-2000:]
    return match.group(1)


def settle(gw: GatewayProcess) -> None:
    wait_switchboard_idle(gw)
    wait_idle(gw)


def test_key_1_as_rfc4733_reaches_the_sales_hunt_group(day: GatewayProcess, tmp_path: Path) -> None:
    result, receiver, invites = call(day, tmp_path, keys="rtp", presses=[(600, "1")])
    assert_ok(result, day, tmp_path)
    # Sales hunts 60002 (an IAD line, not registered: skipped at once), then PBX extension 1001.
    assert callee_invite(invites).startswith(f"INVITE sip:1001@127.0.0.1:{PBX} ")
    assert "m=audio" in invites and f"m=audio {receiver.port} " in invites  # the caller's own SDP
    assert re.search(r"switchboard sb-[0-9a-f]+-\d+: connecting to hunt:sales", day.log())
    settle(day)


def test_key_1_as_sip_info_reaches_the_sales_hunt_group(day: GatewayProcess, tmp_path: Path) -> None:
    result, _receiver, invites = call(day, tmp_path, keys="info", info_key="1")
    assert_ok(result, day, tmp_path)
    assert callee_invite(invites).startswith(f"INVITE sip:1001@127.0.0.1:{PBX} ")
    settle(day)


def test_no_input_goes_to_the_operator_after_the_retries(day: GatewayProcess, tmp_path: Path) -> None:
    result, _receiver, invites = call(day, tmp_path)
    assert_ok(result, day, tmp_path)
    assert callee_invite(invites).startswith(f"INVITE sip:1009@127.0.0.1:{PBX} ")  # operator: 61009
    settle(day)


def test_an_invalid_key_replays_the_menu_then_the_next_key_counts(
    day: GatewayProcess, tmp_path: Path
) -> None:
    result, _receiver, invites = call(day, tmp_path, keys="rtp", presses=[(600, "5"), (1400, "2")])
    assert_ok(result, day, tmp_path)
    assert callee_invite(invites).startswith(f"INVITE sip:1002@127.0.0.1:{PBX} ")  # support: 61002
    settle(day)


def test_a_short_number_keyed_at_the_menu_is_dialled(day: GatewayProcess, tmp_path: Path) -> None:
    result, _receiver, invites = call(day, tmp_path, keys="rtp", presses=[(600, "61005")])
    assert_ok(result, day, tmp_path)
    assert callee_invite(invites).startswith(f"INVITE sip:1005@127.0.0.1:{PBX} ")
    settle(day)


def test_the_caller_hears_the_prompt_file_in_20ms_g711_packets(day: GatewayProcess, tmp_path: Path) -> None:
    result, receiver, _invites = call(day, tmp_path, keys="info", info_key="1")
    assert_ok(result, day, tmp_path)
    packets = [p for _, p in receiver.packets]
    assert packets and {p.payload_type for p in packets} == {0}  # PCMU, the caller's first choice
    ssrcs = {p.ssrc for p in packets}
    assert len(ssrcs) == 1
    for a, b in itertools.pairwise(packets):
        assert (b.sequence - a.sequence) & 0xFFFF == 1  # no gap, no reordering on loopback
        assert (b.timestamp - a.timestamp) & 0xFFFFFFFF == 160  # 20 ms of 8 kHz per packet
        assert len(b.payload) == 160
    # The prompt starts (marker) on the caller's ACK and is the file's audio, frame for frame.
    frames = PromptLibrary.load().get("connect_en")
    assert frames is not None
    expected = frames.frames[Codec.PCMU]
    start = next(i for i, p in enumerate(packets) if p.marker and p.payload == expected[0])
    played = [p.payload for p in packets[start : start + 30]]
    assert played == list(expected[: len(played)]) and len(played) >= 20
    assert any(not is_silent(f, Codec.PCMU) for f in played)
    settle(day)


def test_after_hours_the_night_menu_plays_and_9_reaches_the_duty_member(tmp_path: Path) -> None:
    night = demo_gateway(tmp_path / "gw", carrier=CALLER, pbx=PBX, at=SATURDAY_NIGHT)
    night.start()
    try:
        result, receiver, invites = call(night, tmp_path / "call", keys="rtp", presses=[(1000, "9")])
        assert_ok(result, night, tmp_path / "call")
        assert "answered in menu night" in night.log()
        assert callee_invite(invites).startswith(f"INVITE sip:1008@127.0.0.1:{PBX} ")
        closed = PromptLibrary.load().get("closed_en")
        assert closed is not None
        payloads = {p.payload for _, p in receiver.packets}
        assert sum(frame in payloads for frame in closed.frames[Codec.PCMU][:40]) >= 30
        settle(night)
    finally:
        night.stop()


def test_an_internal_line_reaches_the_switchboard_by_its_short_number(
    day: GatewayProcess, tmp_path: Path
) -> None:
    line_port = free_port()
    answer = register(
        day.port, "62880001", contact=f"sip:62880001@127.0.0.1:{line_port}", local_port=line_port
    )
    assert answer.status == 200, answer
    result, _receiver, invites = call(
        day, tmp_path, keys="info", info_key="2", called="60000", caller_port=line_port, calling="62880001"
    )
    assert_ok(result, day, tmp_path)
    assert callee_invite(invites).startswith(f"INVITE sip:1002@127.0.0.1:{PBX} ")
    settle(day)


def test_charging_records_the_switchboard_path(day: GatewayProcess, tmp_path: Path) -> None:
    result, _receiver, _invites = call(day, tmp_path, keys="rtp", presses=[(600, "61005")])
    assert_ok(result, day, tmp_path)
    settle(day)
    events = stops(spooled(day))
    callers = [e for e in events if e.switchboard_path and e.originating != "acme-switchboard"]
    assert callers, events[-3:]
    last = callers[-1]  # the caller's own record (each member leg has its own, see test_sipp_hunt)
    assert list(last.switchboard_path[:2]) == ["menu:day", "keys:61005"], last
    assert "member:61005" in last.switchboard_path and "answered:61005" in last.switchboard_path
    assert last.b_leg_sip_call_id and last.terminating == "61005"


def test_the_operator_blind_transfers_the_caller_with_refer(day: GatewayProcess, tmp_path: Path) -> None:
    """Key 9 → operator 61009 (a SIPp on the PBX trunk), who REFERs the caller to 60003 (an IAD
    line registered from another port); the caller is re-INVITEd twice (operator, then 60003)."""
    target_port = free_port()
    answer = register(
        day.port, "62880003", contact=f"sip:62880003@127.0.0.1:{target_port}", local_port=target_port
    )
    assert answer.status == 200, answer
    receiver = RtpReceiver()
    try:
        scenario = caller_scenario(
            tmp_path / "caller.xml",
            rtp_port=receiver.port,
            keys="info",
            info_key="9",
            reinvites=2,
            talk_ms=300,
        )
        operator = sipp_command("call_uas.xml", port=PBX, service="60003", extra=["-trace_msg"])
        operator[operator.index("-sf") + 1] = str(Path(__file__).parent / "sipp" / "operator_refer.xml")
        (tmp_path / "op").mkdir()
        (tmp_path / "target").mkdir()
        op = subprocess.Popen(
            operator, cwd=tmp_path / "op", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            with sipp_server(
                tmp_path / "target", "call_uas.xml", target_port, extra=["-trace_msg"]
            ) as target:
                time.sleep(0.3)
                command = sipp_command(
                    "call_uac.xml",
                    port=CALLER,
                    target=f"127.0.0.1:{day.port}",
                    service="62880000",
                    extra=["-mi", "127.0.0.1", "-mp", str(free_port() & ~1)],
                )
                command[command.index("-sf") + 1] = str(scenario)
                result = subprocess.run(
                    command, cwd=tmp_path, capture_output=True, text=True, timeout=90, check=False
                )
                target.wait(timeout=10)
            op.wait(timeout=10)
        finally:
            stop_process(op)
    finally:
        receiver.stop()
    assert result.returncode == 0, screen(tmp_path) + screen(tmp_path / "op") + day.log()[-4000:]
    assert op.returncode == 0, screen(tmp_path / "op")
    target_log = "".join(p.read_text(errors="replace") for p in (tmp_path / "target").glob("*_messages.log"))
    assert callee_invite(target_log).startswith(f"INVITE sip:62880003@127.0.0.1:{target_port}")
    assert "61009 transfers the caller to 60003" in day.log()
    settle(day)


def test_a_silent_caller_is_hung_up_and_leaves_no_port_behind(tmp_path: Path) -> None:
    """No RTP and no key from the caller for ``media_timeout``: BYE, RTP session and port gone."""
    gw = demo_gateway(
        tmp_path / "gw", carrier=CALLER, pbx=PBX, at=WORKDAY_MORNING, switchboard={"media_timeout": 1.5}
    )
    gw.start()
    try:
        result, receiver, _invites = call(gw, tmp_path / "call", end="gateway_bye")
        assert_ok(result, gw, tmp_path / "call")
        assert "no media from the caller" in gw.log()
        assert receiver.packets  # the prompt was being sent until then
        settle(gw)
    finally:
        gw.stop()


def test_a_late_offer_caller_gets_our_offer_and_answers_in_the_ack(
    day: GatewayProcess, tmp_path: Path
) -> None:
    result, receiver, invites = call(day, tmp_path, keys="info", info_key="1", late_offer=True)
    assert_ok(result, day, tmp_path)
    assert callee_invite(invites).startswith(f"INVITE sip:1001@127.0.0.1:{PBX} ")
    assert f"m=audio {receiver.port} " in invites  # the caller's answer from its ACK, offered on
    assert receiver.packets and {p.payload_type for _, p in receiver.packets} == {0}
    settle(day)


def test_a_re_invite_in_the_menu_is_answered_by_the_ivr_and_switches_the_law(
    day: GatewayProcess, tmp_path: Path
) -> None:
    result, receiver, _invites = call(day, tmp_path, keys="info", info_key="1", refresh=True)
    assert_ok(result, day, tmp_path)
    laws = [p.payload_type for _, p in receiver.packets]
    assert laws[0] == 0 and laws[-1] == 8 and sorted(set(laws)) == [0, 8]  # PCMU, then PCMA
    settle(day)
