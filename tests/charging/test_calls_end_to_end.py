"""Charging through the real gateway process: demo-tenant calls placed by SIPp, events read from a
real redis-server by the reference billing consumer.

- Calls of known durations (local, national, international, intra-group, emergency) give exactly
  one stop event each, with the billable seconds and the amount the tariff gives.
- Redis stopped in the middle of a call load and started again: every call has its start and
  stop once after the consumer's de-duplication, in order.
- The gateway killed with SIGKILL after its calls ended (Redis down, events in the spool) and
  started again on the same state directory: the spooled events reach the stream.

The tariff is the demo tenant's (``config/tariffs.yaml``) with a 6 s billing unit instead of
60 s and the same prices per minute, so calls of a few seconds still cover more than one unit.
"""

from __future__ import annotations

import asyncio
import math
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import pytest
import redis
import redis.asyncio as aioredis
import yaml

from gateway.charging.consumer import BillingConsumer, ConsumerOptions
from gateway.charging.events import CallClass, ChargingEvent, EndReason, EventType, Payer, PayerRole, decode
from gateway.charging.sinks import STREAM_EVENT_FIELD
from gateway.charging.spool import read_segment
from tests.call.harness import (
    TIMERS,
    free_port,
    line_credentials,
    screen,
    sipp_command,
    sipp_server,
    wait_for,
)
from tests.charging.helpers import DEMO_TARIFFS
from tests.registrar.peers import register
from tests.support.gateway import GatewayProcess, demo_trunks_file
from tests.support.servers import RedisServer, stop_process

SCENARIO = Path(__file__).resolve().parent / "sipp" / "charged_uac.xml"
STREAM = "charging:events"
UNIT_SECONDS = 6
# The demo tariff in fen per minute: 0.10, 0.30 and 0.80 yuan; intra-group and emergency free.
FEN_PER_MINUTE = {
    CallClass.LOCAL: 10,
    CallClass.NATIONAL: 30,
    CallClass.INTERNATIONAL: 80,
    CallClass.INTRA_GROUP_SHORT: 0,
    CallClass.EMERGENCY: 0,
}
# Intra-group and emergency calls are free by the charging rules, whatever the tariff says.
FREE_TARIFF_IDS = {
    CallClass.INTRA_GROUP_SHORT: "demo-2026/free/intra_group",
    CallClass.EMERGENCY: "demo-2026/free/emergency",
}
WAIT = 20.0  # upper bound of every poll below: a failure, never a measurement

CALLER = free_port()  # SIPp caller, registered as IAD line 62880001 from this port
CALLEE = free_port()  # SIPp callee, registered as IAD line 62880002
CARRIER = free_port()
PBX = free_port()


def six_second_tariffs(path: Path) -> Path:
    """``config/tariffs.yaml`` billed per started 6 s, each price scaled to keep its per-minute rate."""
    data: dict[str, Any] = yaml.safe_load(DEMO_TARIFFS.read_text())
    scale = Decimal(UNIT_SECONDS) / Decimal(data["billing_unit_seconds"])
    for row in data["classes"].values():
        row["price_fen_per_unit"] = str(Decimal(str(row["price_fen_per_unit"])) * scale)
    data["billing_unit_seconds"] = UNIT_SECONDS
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def demo_gateway(workdir: Path, redis_url: str) -> GatewayProcess:
    """The demo tenant with Redis for charging only (registrations and accounts in memory, so a
    Redis outage changes nothing but where the charging events go)."""
    workdir.mkdir(parents=True, exist_ok=True)
    return GatewayProcess(
        workdir,
        sip_overrides={"timers": TIMERS},
        extra_config={
            "redis": {"url": redis_url},
            "registrar": {
                "trunks": str(demo_trunks_file(workdir / "trunks.yaml", carrier=CARRIER, pbx=PBX)),
                "qualify": {"enabled": False},
                "location_store": "memory",
            },
            "accounts": {"store": "memory"},
            "call": {"status_socket": str(workdir / "call.sock")},
            "charging": {
                "tariffs": str(six_second_tariffs(workdir / "tariffs.yaml")),
                "retry_interval_s": 0.2,  # replay soon after Redis is back
            },
        },
    )


def spool_dir(gw: GatewayProcess) -> Path:
    return gw.workdir / "var" / "charging-spool"


def spooled(gw: GatewayProcess) -> list[ChargingEvent]:
    """What the gateway's spool holds now (the active segment included; a torn tail is skipped)."""
    directory = spool_dir(gw)
    if not directory.is_dir():
        return []
    segments = [read_segment(path) for path in sorted(directory.glob("*.jsonl"))]
    return [decode(raw) for segment in segments for _, raw in segment.records]


def streamed(url: str) -> list[ChargingEvent]:
    """Every event in the stream, duplicates included, in stream order."""
    client = redis.Redis.from_url(url)
    try:
        entries = cast(list[tuple[bytes, dict[bytes, bytes]]], client.xrange(STREAM))
    finally:
        client.close()
    return [decode(fields[STREAM_EVENT_FIELD.encode()]) for _, fields in entries]


def wait_until(what: str, check: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout}s: {what}")
        time.sleep(0.05)


def stops(events: list[ChargingEvent]) -> list[ChargingEvent]:
    return [e for e in events if e.event_type is EventType.STOP]


class Collected:
    """The consumer's output: the events it delivered, in order."""

    def __init__(self) -> None:
        self.events: list[ChargingEvent] = []

    def write(self, event: ChargingEvent, raw: bytes) -> None:
        self.events.append(event)

    def flush(self) -> None:
        return


@dataclass
class Consumed:
    events: list[ChargingEvent]
    duplicates: int


def consume(url: str) -> Consumed:
    """Run the reference billing consumer (group ``billing``, de-duplication by event id) until idle."""

    async def run() -> Consumed:
        client = aioredis.Redis.from_url(url)
        try:
            output = Collected()
            consumer = BillingConsumer(client, ConsumerOptions(block_ms=200), output)
            await consumer.setup()
            await consumer.run(idle_polls=2)
            return Consumed(output.events, consumer.duplicates)
        finally:
            await client.aclose()

    return asyncio.run(run())


def calls_file(path: Path, rows: list[tuple[str, str, int]]) -> Path:
    """SIPp injection file: number dialled; calling number; hold in ms (one line per call)."""
    path.write_text("SEQUENTIAL\n" + "".join(f"{a};{b};{c}\n" for a, b, c in rows), encoding="utf-8")
    return path


def caller_command(
    workdir: Path,
    gw: GatewayProcess,
    port: int,
    rows: list[tuple[str, str, int]],
    *,
    rate: float,
    tag: str,
    line: str | None = None,
) -> list[str]:
    """SIPp placing one call per row; Call-IDs are ``{tag}-{call number}@127.0.0.1``. The calls
    of ``line`` (from the IAD's port: line 62880001) answer the 407 with its credentials."""
    workdir.mkdir(parents=True, exist_ok=True)
    inf = calls_file(workdir / "calls.csv", rows)
    line = line or ("62880001" if port == CALLER else None)
    credentials = line_credentials(line) if line is not None else []
    return sipp_command(
        str(SCENARIO),
        port=port,
        target=f"127.0.0.1:{gw.port}",
        calls=len(rows),
        rate=rate,
        extra=["-inf", str(inf), "-cid_str", f"{tag}-%u@%s", *credentials],
        timeout=60,
    )


def place_calls(command: list[str], workdir: Path) -> subprocess.CompletedProcess[bytes]:
    """Run the SIPp caller to its end (its traces stay in ``workdir``)."""
    return subprocess.run(command, cwd=workdir, capture_output=True, timeout=90, check=False)


def call_ids(tag: str, calls: int) -> set[str]:
    return {f"{tag}-{n}@127.0.0.1" for n in range(1, calls + 1)}


def by_call(events: list[ChargingEvent]) -> dict[str, list[ChargingEvent]]:
    calls: dict[str, list[ChargingEvent]] = {}
    for event in events:
        calls.setdefault(event.a_leg_sip_call_id, []).append(event)
    return calls


def assert_each_call_once_in_order(events: list[ChargingEvent], expected: set[str]) -> None:
    """Every expected call has exactly its start (seq 1) then its stop (seq 2), nothing else."""
    calls = by_call(events)
    assert set(calls) == expected, sorted(set(calls) ^ expected)
    for call_id, mine in calls.items():
        shape = [(e.event_type, e.seq) for e in mine]
        assert shape == [(EventType.START, 1), (EventType.STOP, 2)], (call_id, shape)
        stop = mine[1]
        assert stop.release is not None and stop.release.reason is EndReason.NORMAL, stop
        assert stop.duration_ms > 0 and stop.rating.units >= 1, stop
        assert len({e.call_id for e in mine}) == 1, mine
    ids = [e.event_id for e in events]
    assert len(ids) == len(set(ids))


@contextmanager
def background(command: list[str], workdir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A SIPp caller running while the test acts; stopped by its PID if the test fails first."""
    proc = subprocess.Popen(command, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        stop_process(proc)


def save_setting(url: str, value: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        client.config_set("save", value)
    finally:
        client.close()


@contextmanager
def persisted_on_restart(server: RedisServer) -> Iterator[None]:
    """Have the session's redis-server (started with ``--save ""``) write its RDB file when
    stopped, so what reached the stream before an outage is still there after it (a Redis
    without persistence loses the stream with the restart, which is no test of the gateway).
    Afterwards the file is removed and saving is off again, as the other tests expect."""
    save_setting(server.url, "3600 1")
    try:
        yield
    finally:
        (server.workdir / "dump.rdb").unlink(missing_ok=True)
        if server.proc is not None:
            save_setting(server.url, "")


def no_calls(gw: GatewayProcess) -> None:
    """Wait until call control holds no call (every call's end, hence its stop, was recorded)."""
    wait_for(gw, lambda snap: snap["calls"] == 0)


@pytest.fixture(autouse=True)
def quiet_gateway(request: pytest.FixtureRequest) -> None:
    """A test on the module's gateway starts once nothing of an earlier test is in flight. The
    far ends are SIPp processes counting calls (``-m``): a retransmission of an earlier call's
    request (its far end gone, the gateway retransmits until Timer B/F) reaching this test's far
    end on the same port would count there as a call of its own (aborted), and that far end
    would stop answering one call early: the test's last call then times out (408)."""
    if "gw" in request.fixturenames:
        gateway = request.getfixturevalue("gw")
        wait_for(gateway, lambda snap: snap["calls"] == 0 and snap["transactions"] == 0, timeout=15)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, redis_srv: RedisServer) -> Iterator[GatewayProcess]:
    """The demo tenant on Redis, with IAD lines 62880001 (the caller) and 62880002 registered."""
    if redis_srv.proc is None:
        redis_srv.start()
    process = demo_gateway(tmp_path_factory.mktemp("charging-e2e"), redis_srv.url)
    process.start()
    try:
        for number, port in (("62880001", CALLER), ("62880002", CALLEE)):
            answer = register(process.port, number, contact=f"sip:{number}@127.0.0.1:{port}", local_port=port)
            assert answer.status == 200, answer
        yield process
    finally:
        process.stop()


# One call per class from IAD line 62880001: (dialled, class, hold ms). No hold ends near a
# multiple of the 6 s unit, so the units are those of the hold time whatever the delays.
RATED_CALLS = [
    ("00442071234567", CallClass.INTERNATIONAL, 7000),
    ("62345678", CallClass.LOCAL, 2000),
    ("01012345678", CallClass.NATIONAL, 3000),
    ("60002", CallClass.INTRA_GROUP_SHORT, 2000),
    ("110", CallClass.EMERGENCY, 2000),
]


def test_calls_of_known_durations_are_rated_once_each(
    gw: GatewayProcess, redis_url: str, tmp_path: Path
) -> None:
    rows = [(dialled, "62880001", hold) for dialled, _, hold in RATED_CALLS]
    command = caller_command(tmp_path / "uac", gw, CALLER, rows, rate=1, tag="rated")  # the IAD: 2 calls/s
    carrier_calls = sum(1 for _, cls, _ in RATED_CALLS if cls is not CallClass.INTRA_GROUP_SHORT)
    with (
        sipp_server(tmp_path / "carrier", "call_uas.xml", CARRIER, calls=carrier_calls),
        sipp_server(tmp_path / "line", "call_uas.xml", CALLEE, calls=1),
    ):
        result = place_calls(command, tmp_path / "uac")
    assert result.returncode == 0, screen(tmp_path / "uac") + gw.log()[-3000:]
    wait_until("a stop event per call", lambda: len(stops(streamed(redis_url))) >= len(RATED_CALLS))
    no_calls(gw)

    events = streamed(redis_url)
    assert_each_call_once_in_order(events, call_ids("rated", len(RATED_CALLS)))
    rated = {e.called.dialled: e for e in stops(events)}
    assert len(rated) == len(RATED_CALLS)
    for dialled, call_class, hold_ms in RATED_CALLS:
        stop = rated[dialled]
        rating = stop.rating
        assert stop.call_class is call_class, stop
        assert stop.group == "acme", stop
        assert rating.tariff_id == FREE_TARIFF_IDS.get(call_class, f"demo-2026/default/{call_class.value}")
        assert stop.payer == Payer(PayerRole.CALLING_LINE, "02162880001", "acme"), stop
        assert rating.billing_unit_seconds == UNIT_SECONDS
        # Billed from answer to BYE: the hold, give or take one unit of rounding.
        hold = hold_ms / 1000
        assert abs(stop.billable_seconds - hold) <= UNIT_SECONDS, stop
        assert abs(rating.charged_seconds - hold) <= UNIT_SECONDS, rating
        assert abs(rating.units - math.ceil(hold / UNIT_SECONDS)) <= 1, rating
        assert rating.charged_seconds == rating.units * UNIT_SECONDS
        assert rating.units == math.ceil(stop.duration_ms / (UNIT_SECONDS * 1000)), stop
        price = Decimal(FEN_PER_MINUTE[call_class]) * UNIT_SECONDS / 60
        assert Decimal(rating.price_fen_per_unit) == price, rating
        assert rating.amount_fen == rating.units * price, rating
    # The unit counts of these holds, so the amounts are exactly 8 * 2, 1, 3, 0 and 0 fen.
    assert [rated[d].rating.amount_fen for d, _, _ in RATED_CALLS] == [16, 1, 3, 0, 0], rated


# acme-pbx extension 1001 calling a local number, several calls at a time.
LOAD_CALLS = 32
LOAD_HOLD_MS = 1000


def test_redis_outage_under_call_load_loses_and_duplicates_nothing(
    gw: GatewayProcess, redis_srv: RedisServer, redis_url: str, tmp_path: Path
) -> None:
    rows = [("62345678", "1001", LOAD_HOLD_MS)] * LOAD_CALLS
    command = caller_command(tmp_path / "uac", gw, PBX, rows, rate=8, tag="load")  # the PBX: 10 calls/s
    with (
        persisted_on_restart(redis_srv),
        sipp_server(tmp_path / "carrier", "call_uas.xml", CARRIER, calls=LOAD_CALLS),
        background(command, tmp_path / "uac") as caller,
    ):
        wait_until("8 calls ended into Redis", lambda: len(stops(streamed(redis_url))) >= 8)
        redis_srv.stop()
        wait_until("8 more calls ended into the spool", lambda: len(stops(spooled(gw))) >= 8)
        redis_srv.start()
        assert caller.wait(timeout=90) == 0, screen(tmp_path / "uac") + gw.log()[-3000:]
    wait_until("the spool replayed", lambda: not list(spool_dir(gw).glob("*.jsonl")))
    wait_until("every stop in the stream", lambda: len(by_call(stops(streamed(redis_url)))) == LOAD_CALLS)
    no_calls(gw)

    log = gw.log()
    assert "Redis unreachable" in log and "spool replayed" in log, log[-3000:]
    consumed = consume(redis_url)
    assert_each_call_once_in_order(consumed.events, call_ids("load", LOAD_CALLS))
    # What the stream held minus what the consumer dropped as copies is what it delivered.
    assert len(streamed(redis_url)) - consumed.duplicates == len(consumed.events) == 2 * LOAD_CALLS


def test_gateway_killed_after_calls_ended_delivers_their_events_when_restarted(
    redis_srv: RedisServer, redis_url: str, tmp_path: Path
) -> None:
    calls = 4
    redis_srv.stop()  # down from the start: every event goes to the spool
    gw = demo_gateway(tmp_path / "gw", redis_url)
    gw.start()
    try:
        rows = [("62345678", "1001", 200)] * calls
        command = caller_command(tmp_path / "uac", gw, PBX, rows, rate=5, tag="killed")
        with sipp_server(tmp_path / "carrier", "call_uas.xml", CARRIER, calls=calls):
            result = place_calls(command, tmp_path / "uac")
        assert result.returncode == 0, screen(tmp_path / "uac") + gw.log()[-3000:]
        # Durable means written and fsync'd into the spool: then, and only then, kill.
        wait_until("every stop in the spool", lambda: len(stops(spooled(gw))) == calls)
        assert gw.proc is not None
        gw.proc.kill()
        gw.proc.wait(timeout=10)
        gw.proc = None
        assert_each_call_once_in_order(spooled(gw), call_ids("killed", calls))

        redis_srv.start()
        redis_srv.flush()
        gw.start()
        wait_until("the spool replayed", lambda: not list(spool_dir(gw).glob("*.jsonl")))
        assert len(stops(streamed(redis_url))) == calls
        consumed = consume(redis_url)
        assert_each_call_once_in_order(consumed.events, call_ids("killed", calls))
        assert consumed.duplicates == 0
        assert "spooled events from a previous run" in gw.log()
    finally:
        gw.stop()
