"""Exactly once in the database whatever crashes: ``gateway billing consume`` (a real process)
loading a real Redis stream into a real PostgreSQL 15, while

- the consumer is killed with SIGKILL in the middle of the load and started again;
- PostgreSQL is restarted under load (fast shutdown, then started on the same data);
- Redis is restarted under load (with its data written on shutdown, as a deployment has it).

Each time the database ends with every event of the stream exactly once (the event id is the
primary key, so "once" is counting rows) and nothing left pending in the consumer group.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
import redis

from gateway.charging.events import encode
from gateway.charging.sinks import STREAM_EVENT_FIELD, STREAM_ID_FIELD
from tests.charging.helpers import PROJECT_ROOT, synthetic_event
from tests.charging.test_calls_end_to_end import persisted_on_restart
from tests.support.servers import PostgresServer, RedisServer, stop_process

STREAM = "charging:events"
EVENTS = 6000
KILL_EVENTS = 20_000  # enough that the kill lands in the middle of the load
WAIT = 60.0  # bound of every wait below: a failure, never a measurement


def fill_stream(redis_url: str, first: int, count: int) -> list[str]:
    """``count`` events on the stream (as the gateway's sink writes them); their ids."""
    client = redis.Redis.from_url(redis_url)
    ids = []
    try:
        pipe = client.pipeline(transaction=False)
        for i in range(first, first + count):
            raw = encode(synthetic_event(i, 1))
            event_id = json.loads(raw)["event_id"]
            ids.append(event_id)
            pipe.xadd(STREAM, {STREAM_ID_FIELD: event_id, STREAM_EVENT_FIELD: raw})
        pipe.execute()
    finally:
        client.close()
    return ids


def consumer(
    redis_url: str, db_url: str, tmp_path: Path, *, idle_exit: int | None = 15
) -> subprocess.Popen[bytes]:
    """``gateway billing consume`` into ``db_url``; exits after ``idle_exit`` empty 200 ms reads
    (3 s: longer than a server restart, so it is still there when the server is back)."""
    command = [
        sys.executable, "-m", "gateway", "billing", "consume", "--consumer", "bill-1", "--redis", redis_url,
        "--db", db_url, "--config", str(tmp_path / "absent.yaml"), "--batch", "100", "--block-ms", "200",
    ]
    if idle_exit is not None:
        command += ["--idle-exit", str(idle_exit)]
    log = (tmp_path / "consumer.log").open("ab")
    return subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=log, stderr=log,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def rows(db_url: str) -> int:
    try:
        with psycopg.connect(db_url, connect_timeout=2) as db:
            row = db.execute("SELECT count(*), count(DISTINCT event_id) FROM charging_events").fetchone()
    except psycopg.Error:
        return -1  # not there yet (migrating) or restarting
    assert row is not None and row[0] == row[1]
    return int(row[0])


def wait_until(what: str, check: Callable[[], bool], tmp_path: Path) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n" + log_of(tmp_path))
        time.sleep(0.02)


def log_of(tmp_path: Path) -> str:
    path = tmp_path / "consumer.log"
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def finished(proc: subprocess.Popen[bytes], tmp_path: Path) -> None:
    try:
        code = proc.wait(timeout=WAIT)
    except subprocess.TimeoutExpired:
        stop_process(proc)
        raise AssertionError("consumer did not finish\n" + log_of(tmp_path)) from None
    assert code == 0, log_of(tmp_path)


def all_acknowledged(redis_url: str) -> bool:
    client = redis.Redis.from_url(redis_url)
    try:
        return int(client.xpending(STREAM, "billing")["pending"]) == 0
    finally:
        client.close()


@contextmanager
def running(proc: subprocess.Popen[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    try:
        yield proc
    finally:
        stop_process(proc)


def test_consumer_killed_mid_batch_and_restarted(redis_url: str, pg_url: str, tmp_path: Path) -> None:
    fill_stream(redis_url, 0, KILL_EVENTS)
    with running(consumer(redis_url, pg_url, tmp_path, idle_exit=None)) as first:
        wait_until("the first batches", lambda: rows(pg_url) > 0, tmp_path)
        first.send_signal(signal.SIGKILL)  # whatever it held: written or not, acknowledged or not
        first.wait(timeout=10)
    assert rows(pg_url) < KILL_EVENTS, "the load was over before the kill: make KILL_EVENTS larger"
    with running(consumer(redis_url, pg_url, tmp_path)) as second:
        finished(second, tmp_path)
    assert rows(pg_url) == KILL_EVENTS
    assert all_acknowledged(redis_url)


def test_postgresql_restarted_under_load(
    redis_url: str, pg_url: str, postgres_srv: PostgresServer, tmp_path: Path
) -> None:
    fill_stream(redis_url, 0, EVENTS)
    with running(consumer(redis_url, pg_url, tmp_path)) as proc:
        wait_until("the first batches", lambda: rows(pg_url) > 0, tmp_path)
        postgres_srv.stop()
        postgres_srv.start()
        fill_stream(redis_url, EVENTS, 500)  # and more arrives meanwhile
        finished(proc, tmp_path)
    assert rows(pg_url) == EVENTS + 500
    assert "batch not committed" in log_of(tmp_path)  # the restart was seen, and overcome
    assert all_acknowledged(redis_url)


def test_redis_restarted_under_load(
    redis_url: str, redis_srv: RedisServer, pg_url: str, tmp_path: Path
) -> None:
    fill_stream(redis_url, 0, EVENTS)
    with persisted_on_restart(redis_srv), running(consumer(redis_url, pg_url, tmp_path)) as proc:
        wait_until("the first batches", lambda: rows(pg_url) > 0, tmp_path)
        redis_srv.stop()  # SIGTERM: Redis writes its RDB (stream, group, pending entries) and exits
        redis_srv.start()
        fill_stream(redis_url, EVENTS, 500)
        finished(proc, tmp_path)
    assert rows(pg_url) == EVENTS + 500
    assert all_acknowledged(redis_url)


@pytest.fixture(autouse=True)
def _no_consumer_log_between_tests(tmp_path: Path) -> None:
    (tmp_path / "consumer.log").unlink(missing_ok=True)
