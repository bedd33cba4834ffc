"""Every RFC 4475 torture message, sent byte-exact over UDP to the running gateway.

The expectation per file follows ``manifest.tsv`` and RFC 4475 §3 for what the gateway is today
(a UAS for OPTIONS and, with the registrar, REGISTER; other methods get 501 until call control
lands, which RFC 3261 §8.2.1 checks before anything else). Where the RFC leaves the choice to
the element ("may reject as malformed, or liberally process"), both answers are accepted.

Some files share a server-transaction key (RFC 3261 §17.2.3: branch, sent-by, method), e.g.
cparam01/cparam02: by the rules the second is a retransmission of the first and gets its
answer again. To judge each file on its own, this module's gateway runs with a tiny T1 (so
Timer J, 64*T1, ends such a transaction in 0.64 s) and the test lets it end before sending a
file whose key was already used.

Answers travel by the book: RFC 3261 §18.2.2 sends a UDP response to ``received`` with the
*sent-by port* of the top Via (5060, 5061 for a TLS Via, 5050 in quotbal.dat), so the test sends
from an unusual loopback address and listens there on those ports.
"""

from __future__ import annotations

import random
import re
import select
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import RFC4475_DIR
from tests.support.gateway import SIP_CORE_ONLY, GatewayProcess, probe_options

SILENT = frozenset[int]()
# Statuses that mean "the message was judged malformed or unacceptable before processing".
REJECTIONS = frozenset({400, 416, 420, 505, 513})


@dataclass(frozen=True)
class Expect:
    """Allowed final statuses (empty: the gateway must stay silent); ``processed`` allows any
    final status that is not a rejection (the request reached its method's handler)."""

    statuses: frozenset[int] = SILENT
    processed: bool = False

    def allows(self, status: int | None) -> bool:
        if status is None:
            return not self.statuses and not self.processed
        if status in self.statuses:
            return True
        return self.processed and status >= 200 and status not in REJECTIONS


def one_of(*statuses: int, processed: bool = False) -> Expect:
    return Expect(frozenset(statuses), processed)


PROCESSED = Expect(processed=True)

EXPECTED: dict[str, Expect] = {
    # 3.1.1 valid messages
    "wsinv.dat": PROCESSED,
    "intmeth.dat": one_of(501),  # unknown extension method
    "esc01.dat": PROCESSED,
    "escnull.dat": PROCESSED,
    "esc02.dat": one_of(501),  # RE%47IST%45R is not REGISTER
    "lwsdisp.dat": one_of(200),  # OPTIONS
    "longreq.dat": PROCESSED,
    "dblreq.dat": PROCESSED,  # and only one answer: the trailing INVITE lookalike is discarded
    "semiuri.dat": one_of(200),
    "transports.dat": one_of(200),
    "mpart01.dat": one_of(415, processed=True),  # MESSAGE, multipart/signed body framed by length
    "unreason.dat": Expect(),  # responses matching nothing: dropped
    "noreason.dat": Expect(),
    # 3.1.2 invalid messages
    "badinv01.dat": one_of(400),
    "clerr.dat": one_of(400),
    "ncl.dat": one_of(400),
    "scalar02.dat": one_of(400),
    "scalarlg.dat": Expect(),
    "quotbal.dat": one_of(400),
    "ltgtruri.dat": one_of(400),
    "lwsruri.dat": one_of(400),
    "lwsstart.dat": one_of(400, processed=True),
    "trws.dat": one_of(400, processed=True),
    "escruri.dat": one_of(400, processed=True),
    "baddate.dat": one_of(400, processed=True),
    "regbadct.dat": one_of(400),
    "badaspec.dat": one_of(400, processed=True),
    "baddn.dat": one_of(400, processed=True),
    "badvers.dat": one_of(505),
    "mismatch01.dat": one_of(400),
    "mismatch02.dat": one_of(501, 400),
    "bigcode.dat": Expect(),
    # 3.2 transaction layer
    "badbranch.dat": one_of(400, processed=True),
    # 3.3 application layer
    "insuf.dat": one_of(400),  # or silence when it cannot be answered: see test below
    "unkscm.dat": one_of(416),
    "novelsc.dat": one_of(416, 404),
    "unksm2.dat": one_of(400, 501),  # a registrar answers 400 (To is not a SIP AOR)
    "bext01.dat": one_of(420),
    "invut.dat": one_of(415, 501),  # 501 while INVITE is not served (§8.2.1 comes first)
    "regaut01.dat": PROCESSED,
    "multi01.dat": one_of(400, 501),  # 501 while INVITE is not served (§8.2.1 comes first)
    "mcl01.dat": one_of(400),
    "bcast.dat": Expect(),
    "zeromf.dat": one_of(200, 483),  # OPTIONS: a UAS processes Max-Forwards 0
    "cparam01.dat": PROCESSED,
    "cparam02.dat": PROCESSED,
    "regescrt.dat": PROCESSED,
    "sdp01.dat": one_of(406, 400, 501),
    # 3.4 backward compatibility
    # Processed, or refused by call control for lack of a Contact (mandatory since RFC 3261 §8.1.1.8).
    "inv2543.dat": one_of(400, processed=True),
}
MAY_BE_SILENT = {"insuf.dat"}  # no Call-ID, From or To: "must not crash", 400 only "ideally"


def manifest_files() -> list[str]:
    lines = (RFC4475_DIR / "manifest.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return [line.split("\t")[0] for line in lines if line]


def test_expectations_cover_the_manifest() -> None:
    assert sorted(EXPECTED) == sorted(manifest_files())
    assert sorted(EXPECTED) == sorted(p.name for p in RFC4475_DIR.glob("*.dat"))


T1 = 0.01
TIMER_J = 64 * T1


@pytest.fixture(scope="module")
def torture_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(
        tmp_path_factory.mktemp("torture"),
        sip_overrides={"timers": {"t1": T1, "t2": 4 * T1, "t4": 5 * T1}},
        extra_config=SIP_CORE_ONLY,
    )
    gw.start()
    try:
        yield gw
    finally:
        gw.stop()


_VIA_KEY = re.compile(rb"^(?:Via|v)[ \t]*:[ \t]*([^\r\n;,]*)[^\r\n]*?branch=([^;,\r\n ]*)", re.I | re.M)
_used_keys: dict[tuple[bytes, bytes, bytes], float] = {}


def wait_for_distinct_transaction(data: bytes) -> None:
    """Sleep until Timer J ended a transaction an earlier file created with the same key."""
    via = _VIA_KEY.search(data)
    if via is None:
        return
    key = (data.split(b" ", 1)[0], via.group(1).strip(), via.group(2))
    if key in _used_keys:
        time.sleep(max(0.0, _used_keys[key] + TIMER_J * 1.5 - time.monotonic()))
    _used_keys[key] = time.monotonic()


@pytest.fixture(scope="module")
def peer() -> Iterator[dict[int, socket.socket]]:
    """UDP sockets on an unusual loopback address, on every port the files' Vias name."""
    rng = random.Random()
    for _ in range(50):
        host = f"127.{rng.randint(1, 254)}.{rng.randint(0, 254)}.{rng.randint(1, 254)}"
        sockets: dict[int, socket.socket] = {}
        try:
            for port in (5060, 5061, 5050):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sockets[port] = sock
                sock.bind((host, port))
        except OSError:
            for sock in sockets.values():
                sock.close()
            continue
        yield sockets
        for sock in sockets.values():
            sock.close()
        return
    pytest.skip("no loopback address with ports 5060, 5061 and 5050 free")


def collect(sockets: dict[int, socket.socket], wait: float) -> list[tuple[int, bytes]]:
    """Datagrams arriving within ``wait`` seconds of each other (the first within ``wait``)."""
    got = []
    while True:
        ready, _, _ = select.select(list(sockets.values()), [], [], wait)
        if not ready:
            return got
        for sock in ready:
            got.append((sock.getsockname()[1], sock.recv(65535)))
        wait = min(wait, 0.15)


def header(response: bytes, name: str) -> str | None:
    for line in response.split(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name.lower().encode():
            return value.strip().decode("utf-8", "replace")
    return None


def status_of(response: bytes) -> tuple[int, str]:
    start = response.split(b"\r\n", 1)[0].decode("utf-8", "replace")
    version, code, reason = start.split(" ", 2)
    assert version == "SIP/2.0"
    return int(code), reason


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_torture_message_over_udp(
    name: str, torture_gateway: GatewayProcess, peer: dict[int, socket.socket]
) -> None:
    data = (RFC4475_DIR / name).read_bytes()
    expect = EXPECTED[name]
    collect(peer, 0)  # nothing left over from an earlier file
    wait_for_distinct_transaction(data)
    peer[5060].sendto(data, (torture_gateway.host, torture_gateway.port))
    # Generous for an answer (returns as soon as it arrives), short for the expected silences.
    answers = collect(peer, 5.0 if expect.statuses or expect.processed else 0.5)
    # Only answers to this file count (a late answer to an earlier file is not this one's).
    call_id = header(data, "Call-ID") or header(data, "i")
    answers = [(port, a) for port, a in answers if (header(a, "Call-ID") or header(a, "i")) == call_id]
    if not answers:
        assert expect.allows(None) or name in MAY_BE_SILENT, f"{name}: no answer, expected {expect}"
        return
    # An INVITE's final response is retransmitted until the ACK (Timer G, RFC 3261 §17.2.1),
    # which the test does not send: identical datagrams are one answer.
    distinct = set(answers)
    assert len(distinct) == 1, f"{name}: {len(distinct)} answers: {[a[:60] for _, a in distinct]}"
    port, response = answers[0]
    status, reason = status_of(response)
    assert expect.allows(status), f"{name}: got {status} {reason}, expected {expect}"
    assert reason.strip(), f"{name}: empty Reason-Phrase"
    if status == 400:
        assert reason != "Bad Request", f"{name}: the Reason-Phrase must say what was wrong"
    # RFC 3261 §8.2.6.2: the UAS tags To (Call-ID was copied: checked above).
    to = header(response, "To") or header(response, "t")
    assert to is not None and "tag=" in to.replace(" ", ""), f"{name}: To without tag: {to}"
    # RFC 3261 §18.2.1: the sent-by is never our sender's address, so ``received`` is added.
    via = header(response, "Via") or ""
    sender = peer[5060].getsockname()[0]
    assert f"received={sender}" in via.replace(" ", ""), f"{name}: Via not stamped: {via}"
    if status == 501:
        assert header(response, "Allow"), f"{name}: 501 without Allow (RFC 3261 §8.2.1)"
    if status == 420:
        assert "nothingSupportsThis" in (header(response, "Unsupported") or "")
    # §18.2.2: to the sent-by port (default 5060, 5061 for TLS), not to where it came from.
    if name == "bext01.dat":
        assert port == 5061
    elif name == "quotbal.dat":
        assert port == 5050
    else:
        assert port == 5060


def test_gateway_survived_the_torture(torture_gateway: GatewayProcess) -> None:
    assert torture_gateway.proc is not None and torture_gateway.proc.poll() is None
    answer = probe_options(torture_gateway.host, torture_gateway.port, timeout=5)
    assert answer is not None and answer.startswith(b"SIP/2.0 200 ")
    assert "Traceback" not in torture_gateway.log()
