"""The switchboard's test bench: a gateway subprocess with the demo tenant (carrier and PBX
trunks moved to free ports), a test copy of the acme dialplan (short prompts, short timeouts,
every hunt member a PBX extension answered by SIPp) and SIPp callers built per test."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from gateway.call.service import read_status
from tests.call.harness import TIMERS, free_port
from tests.media.rtp_tools import write_dtmf_pcap
from tests.support.gateway import PROJECT_ROOT, GatewayProcess, demo_trunks_file

WORKDAY_MORNING = "2026-11-23T10:00:00+08:00"  # a Monday: business hours, the day menu
SATURDAY_NIGHT = "2026-11-21T20:00:00+08:00"  # after hours: the night menu


def test_dialplans(directory: Path, hunting: dict[str, dict[str, Any]] | None = None) -> Path:
    """The shipped dialplans with acme's switchboard made quick to test; ``hunting`` changes
    hunt groups (by name) and the ``operator`` group after that."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROJECT_ROOT / "dialplans" / "carrier.yaml", directory)
    acme: dict[str, Any] = yaml.safe_load((PROJECT_ROOT / "dialplans" / "acme.yaml").read_text())
    sb = acme["switchboard"]
    day = sb["menus"]["day"]
    day.update(prompt=["connect_en"], first_digit_timeout=1, inter_digit_timeout=1, retries=1)
    day["invalid_prompt"] = ["invalid_en"]
    night = sb["menus"]["night"]
    night.update(prompt=["closed_en"], options={"9": {"member": "61008"}})
    sb["hunt_groups"]["sales"].update(members=["60002", "61001"], ring_seconds=5)
    sb["hunt_groups"]["support"].update(members=["61002"], ring_seconds=5)
    sb["operator"].update(members=["61009"], ring_seconds=5)
    for name, changes in (hunting or {}).items():
        (sb["operator"] if name == "operator" else sb["hunt_groups"][name]).update(changes)
    (directory / "acme.yaml").write_text(yaml.safe_dump(acme, allow_unicode=True), encoding="utf-8")
    return directory


def demo_gateway(
    workdir: Path,
    *,
    carrier: int,
    pbx: int,
    at: str,
    switchboard: dict[str, Any] | None = None,
    hunting: dict[str, dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
) -> GatewayProcess:
    """The demo tenant's switchboard; ``extra``: more top-level config sections (``api``)."""
    trunks = demo_trunks_file(workdir / "trunks.yaml", carrier=carrier, pbx=pbx)
    rtp = free_port() & ~1
    return GatewayProcess(
        workdir,
        sip_overrides={"timers": TIMERS},
        extra_config={
            "registrar": {"trunks": str(trunks), "qualify": {"enabled": False}},
            "call": {"status_socket": str(workdir / "call.sock")},
            "charging": {"tariffs": str(PROJECT_ROOT / "config" / "tariffs.yaml")},
            "dialplans": [str(test_dialplans(workdir / "dialplans", hunting))],
            "switchboard": {
                "status_socket": str(workdir / "switchboard.sock"),
                "fixed_time": at,
                "rtp_port_first": rtp,
                "rtp_port_last": rtp + 40,
                "media_timeout": 30,
                **(switchboard or {}),
            },
            **(extra or {}),
        },
    )


def switchboard_status(gw: GatewayProcess) -> dict[str, Any]:
    return read_status(gw.workdir / "switchboard.sock")


IDLE_KEYS = ("calls", "dialogs", "timers", "rtp_sessions", "rtp_ports_in_use", "legs")


def wait_switchboard_idle(gw: GatewayProcess, timeout: float = 15.0) -> dict[str, Any]:
    """No switchboard call, dialog, timer, RTP session, port or leg of the core is left."""
    deadline = time.monotonic() + timeout
    while True:
        snap = switchboard_status(gw)
        if not any(snap[k] for k in IDLE_KEYS):
            return snap
        if time.monotonic() > deadline:
            raise AssertionError(f"switchboard state left behind: {snap}")
        time.sleep(0.1)


_INVITE = """\
  <send retrans="500">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:[$calling]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:[$calling]@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

v=0
o=caller 1 1 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio {rtp_port} RTP/AVP 0 8 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <!-- A registered line's INVITE is challenged (407, RFC 3261 §22.3): answered with -au / -ap. -->
  <recv response="407" optional="true" auth="true" next="auth"/>
  <recv response="200" next="answered">
    <action><ereg regexp=";tag=[^;&gt;\\r\\n]*" search_in="hdr" header="To:" assign_to="totag"/></action>
  </recv>
  <label id="auth"/>
  <send>
    <![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      [last_Via:]
      From: <sip:[$calling]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <send retrans="500">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:[$calling]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 2 INVITE
      [authentication]
      Contact: <sip:[$calling]@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

v=0
o=caller 1 1 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio {rtp_port} RTP/AVP 0 8 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15

    ]]>
  </send>
  <!-- A late copy of the first INVITE's 407 (the gateway saw our retransmission). -->
  <recv response="407" optional="true"/>
  <recv response="100" optional="true"/>
  <recv response="200">
    <action><ereg regexp=";tag=[^;&gt;\\r\\n]*" search_in="hdr" header="To:" assign_to="totag"/></action>
  </recv>
  <label id="answered"/>
  <send>
    <![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:[$calling]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[$totag]
      Call-ID: [call_id]
      CSeq: [last_cseq_number] ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
"""

_RTP_KEYS = """\
  <pause milliseconds="{pause_ms}"/>
  <nop><action><exec play_pcap_audio="{pcap}"/></action></nop>
"""

_REFRESH = """\
  <pause milliseconds="300"/>
  <send retrans="500">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:[$calling]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[$totag]
      Call-ID: [call_id]
      CSeq: 5 INVITE
      Contact: <sip:[$calling]@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

v=0
o=caller 1 2 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio {rtp_port} RTP/AVP 8 101
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000

    ]]>
  </send>
  <recv response="200"/>
  <send>
    <![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:[$calling]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[$totag]
      Call-ID: [call_id]
      CSeq: 5 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
"""

_INFO_KEY = """\
  <pause milliseconds="800"/>
  <send retrans="500">
    <![CDATA[
      INFO sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:[$calling]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[$totag]
      Call-ID: [call_id]
      CSeq: {cseq} INFO
      Max-Forwards: 70
      Content-Type: application/dtmf-relay
      Content-Length: [len]

Signal={key}
Duration=160
    ]]>
  </send>
  <recv response="200"/>
"""

_REINVITED = """\
  <recv request="INVITE" timeout="30000"/>
  <send retrans="500">
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[$calling]@[local_ip]:[local_port]>
      Content-Type: application/sdp
      Content-Length: [len]

v=0
o=caller 1 2 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio {rtp_port} RTP/AVP 0
a=rtpmap:0 PCMU/8000

    ]]>
  </send>
  <recv request="ACK"/>
"""

_CALLER_BYE = """\
  <pause milliseconds="{talk_ms}"/>
  <send retrans="500">
    <![CDATA[
      BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:[$calling]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[$totag]
      Call-ID: [call_id]
      CSeq: 9 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
"""

_HANGUP_BY_GATEWAY = """\
  <recv request="BYE" timeout="30000"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
"""


def caller_scenario(
    path: Path,
    *,
    rtp_port: int,
    keys: str = "none",
    presses: list[tuple[int, str]] = (),  # type: ignore[assignment]
    info_key: str = "1",
    end: str = "connected",
    talk_ms: int = 500,
    calling: str = "13911112222",
    reinvites: int = 1,
    late_offer: bool = False,
    refresh: bool = False,
    privacy: bool = False,
) -> Path:
    """A SIPp caller: INVITE with PCMU/PCMA/telephone-event (RTP to ``rtp_port``), keys as
    RFC 4733 (``keys="rtp"``: after each pause, the keys of ``presses`` from a pcap written
    beside the scenario), SIP INFO or none, then either the connection (re-INVITE with the
    callee's SDP, then BYE) or the gateway's BYE. ``privacy``: the INVITE asks for it
    (``Privacy: id``, RFC 3325 §9.3) and carries the caller's P-Asserted-Identity."""
    body = f'  <nop><action><assignstr assign_to="calling" value="{calling}"/></action></nop>\n'
    invite = _INVITE.format(rtp_port=rtp_port)
    if late_offer:  # the SDP moves from the INVITE to the ACK (RFC 3261 §13.2.1)
        sdp = invite.split("v=0", 1)[1].split("    ]]>")[0]
        invite = invite.replace(  # both INVITEs: the first and the one with credentials
            "      Content-Type: application/sdp\n      Content-Length: [len]\n\nv=0" + sdp,
            "      Content-Length: 0\n\n",
        ).replace(
            "      CSeq: [last_cseq_number] ACK\n      Max-Forwards: 70\n      Content-Length: 0\n\n",
            "      CSeq: [last_cseq_number] ACK\n      Max-Forwards: 70\n"
            "      Content-Type: application/sdp\n      Content-Length: [len]\n\nv=0" + sdp,
            1,
        )
    if privacy:
        for cseq in ("1", "2"):
            invite = invite.replace(
                f"      CSeq: {cseq} INVITE\n",
                f"      CSeq: {cseq} INVITE\n      Privacy: id\n"
                "      P-Asserted-Identity: <sip:[$calling]@[local_ip]>\n",
            )
    body += invite
    if keys == "rtp":
        for i, (pause_ms, pressed) in enumerate(presses):
            pcap = path.parent / f"dtmf_{i}.pcap"
            write_dtmf_pcap(pcap, pressed, first_timestamp=8000 + 80_000 * i)
            body += _RTP_KEYS.format(pause_ms=pause_ms, pcap=pcap.name)
    elif keys == "info":
        if refresh:  # a re-INVITE switching to PCMA while in the menu, answered by the IVR
            body += _REFRESH.format(rtp_port=rtp_port)
        body += _INFO_KEY.format(key=info_key, cseq=6 if refresh else 4)
    if end == "caller_bye":  # stays in the menu for talk_ms, then hangs up
        body += _CALLER_BYE.format(talk_ms=talk_ms)
    elif end == "connected":
        body += _REINVITED.format(rtp_port=rtp_port) * reinvites + _CALLER_BYE.format(talk_ms=talk_ms)
    elif end == "connected_held":  # connected, then held until the gateway's BYE (an operator's)
        body += _REINVITED.format(rtp_port=rtp_port) * reinvites + _HANGUP_BY_GATEWAY
    else:
        body += _HANGUP_BY_GATEWAY
    path.write_text(
        '<?xml version="1.0" encoding="ISO-8859-1" ?>\n<!DOCTYPE scenario SYSTEM "sipp.dtd">\n'
        f'<scenario name="switchboard caller">\n{body}</scenario>\n',
        encoding="utf-8",
    )
    return path
