"""The billing store: charging events in SQL, each exactly once, and versioned statements.

Two backends behind one small interface (``BillingStore``):

- ``sqlite:///path/billing.sqlite3`` (the stdlib ``sqlite3``): the embedded default, in the
  gateway's state directory;
- ``postgresql://user@host:port/db`` (psycopg 3): production. Batches go in by ``COPY`` into a
  temporary table then one ``INSERT ... SELECT ... ON CONFLICT (event_id) DO NOTHING``: one
  round trip per batch instead of one per row.

Exactly once: ``event_id`` is the primary key and every insert is idempotent, so whatever is
delivered twice (a producer replay, a consumer killed after the commit and before ``XACK``) is
kept once; the consumer acknowledges the stream entries only after ``write`` returned (the
commit). ``write`` returns how many rows were new.

Migrations are the ordered plain SQL files of ``gateway/billing/migrations`` (``NNNN_name.sql``),
applied on open in one transaction each and recorded in ``schema_version``. Plain files rather
than a migration tool (Alembic and the like): the schema is two tables, the same SQL runs on
SQLite and PostgreSQL, the operator's DBA can read and replay them with ``psql``, and nothing
besides the driver is needed at run time. PostgreSQL takes an advisory lock while migrating so
that consumers starting together apply each file once.
"""

from __future__ import annotations

import abc
import contextlib
import re
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from gateway.charging.events import ChargingEvent, format_time

MIGRATIONS_DIR: Final = Path(__file__).resolve().parent / "migrations"
_MIGRATION_NAME: Final = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_PG_MIGRATION_LOCK: Final = 0x62696C6C  # "bill": pg_advisory_xact_lock key

EVENT_COLUMNS: Final = (
    "event_id", "event_type", "call_id", "seq", "node_id", "event_time", "group_id", "payer_role",
    "payer_number", "payer_group", "direction", "call_class", "calling_number", "called_number",
    "off_net_group", "answer_time", "end_time", "duration_ms", "billable_seconds", "tariff_id", "units",
    "amount_fen", "raw", "product", "service_number",
)

Row = tuple[Any, ...]


class StoreError(Exception):
    """The billing database refused or is unreachable (the batch was not committed)."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migration files in version order; a badly named file or a gap is an error."""
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if match is None:
            raise StoreError(f"{path}: migration files are named NNNN_name.sql")
        found.append(Migration(int(match.group(1)), path.name, path.read_text(encoding="utf-8")))
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise StoreError(f"{directory}: migration {expected:04d} is missing (found {migration.name})")
    return found


def _statements(sql: str) -> list[str]:
    """A migration file's statements (``;`` at a line end separates them; no procedures here)."""
    body = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return [part.strip() for part in re.split(r";\s*$", body, flags=re.MULTILINE) if part.strip()]


def _apply_migrations(execute: Callable[..., Any], placeholder: str) -> None:
    """Create the version table and apply, in order, the migrations not applied yet, inside the
    caller's transaction. ``execute(sql[, params])`` runs one statement and returns a cursor;
    ``placeholder`` is the driver's parameter mark (``?`` for SQLite, ``%s`` for psycopg)."""
    execute(
        "CREATE TABLE IF NOT EXISTS schema_version "
        "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    done = {row[0] for row in execute("SELECT version FROM schema_version").fetchall()}
    record = f"INSERT INTO schema_version VALUES ({placeholder}, {placeholder}, {placeholder})"
    for migration in migrations():
        if migration.version in done:
            continue
        for statement in _statements(migration.sql):
            execute(statement)
        execute(record, (migration.version, migration.name, format_time(datetime.now(UTC))))


def event_row(event: ChargingEvent, raw: bytes) -> Row:
    """One ``charging_events`` row (columns as ``EVENT_COLUMNS``)."""
    payer = event.payer
    rating = event.rating
    return (
        event.event_id, event.event_type.value, event.call_id, event.seq, event.node_id, event.event_time,
        event.group, payer.role.value if payer else None, payer.number if payer else None,
        payer.group if payer else event.group, event.direction.value, event.call_class.value,
        event.calling.normalised, event.called.normalised, int(event.off_net_group), event.times.answer,
        event.times.end, event.duration_ms, event.billable_seconds, rating.tariff_id, rating.units,
        rating.amount_fen, raw.decode("utf-8"), event.product, event.service_number,
    )


class BillingStore(abc.ABC):
    """One connection to the billing database."""

    url: str

    @abc.abstractmethod
    def write(self, rows: Sequence[Row]) -> int:
        """Insert the events not already there and commit; how many were new."""

    @abc.abstractmethod
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run a read query written with ``?`` placeholders."""

    @abc.abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Run one statement (``?`` placeholders) and commit."""

    @abc.abstractmethod
    def schema_version(self) -> int: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    def count_events(self) -> int:
        return int(self.query("SELECT count(*) FROM charging_events")[0][0])


class SqliteStore(BillingStore):
    def __init__(self, path: Path, url: str) -> None:
        self.url = url
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are ours (BEGIN IMMEDIATE ... COMMIT).
        self._db = sqlite3.connect(str(path), isolation_level=None, timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")  # readers (statements) do not block the consumer
        self._db.execute("PRAGMA synchronous=FULL")  # a commit survives a power cut: XACK follows it
        self._migrate()
        self._insert = (
            f"INSERT INTO charging_events ({', '.join(EVENT_COLUMNS)}) VALUES "
            f"({', '.join('?' for _ in EVENT_COLUMNS)}) ON CONFLICT (event_id) DO NOTHING"
        )

    def _migrate(self) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")  # one migrating process at a time
        try:
            _apply_migrations(lambda sql, params=(): db.execute(sql, params), "?")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def write(self, rows: Sequence[Row]) -> int:
        if not rows:
            return 0
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            before = db.total_changes
            db.executemany(self._insert, rows)
            new = db.total_changes - before
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise StoreError(f"{self.url}: {exc}") from exc
        return new

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        try:
            return list(self._db.execute(sql, tuple(params)).fetchall())
        except sqlite3.Error as exc:
            raise StoreError(f"{self.url}: {exc}") from exc

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        try:
            self._db.execute(sql, tuple(params))
        except sqlite3.Error as exc:
            raise StoreError(f"{self.url}: {exc}") from exc

    def schema_version(self) -> int:
        return int(self.query("SELECT coalesce(max(version), 0) FROM schema_version")[0][0])

    def close(self) -> None:
        self._db.close()


class PostgresStore(BillingStore):
    def __init__(self, url: str) -> None:
        import psycopg  # noqa: PLC0415 - only deployments on PostgreSQL load the driver

        self.url = url
        self._psycopg = psycopg
        self._db: Any = None
        self._connect()
        self._migrate()

    def _connect(self) -> None:
        try:
            self._db = self._psycopg.connect(self.url, autocommit=True, connect_timeout=5)
        except self._psycopg.Error as exc:
            raise StoreError(f"{_redacted(self.url)}: {exc}") from exc

    def _ensure(self) -> Any:
        """The connection, reconnected after PostgreSQL was restarted (the failed batch is redone)."""
        if self._db is None or self._db.closed or self._db.broken:
            self._connect()
        return self._db

    def _migrate(self) -> None:
        db = self._ensure()
        with db.transaction(), db.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_MIGRATION_LOCK,))
            _apply_migrations(lambda sql, params=None: cur.execute(sql, params), "%s")

    def write(self, rows: Sequence[Row]) -> int:
        if not rows:
            return 0
        columns = ", ".join(EVENT_COLUMNS)
        try:
            db = self._ensure()
            with db.transaction(), db.cursor() as cur:
                cur.execute(
                    "CREATE TEMP TABLE IF NOT EXISTS incoming_events "
                    "(LIKE charging_events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
                )
                with cur.copy(f"COPY incoming_events ({columns}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
                # DISTINCT ON: a batch may itself hold an event twice (ON CONFLICT would refuse).
                cur.execute(
                    f"INSERT INTO charging_events ({columns}) "
                    f"SELECT DISTINCT ON (event_id) {columns} FROM incoming_events "
                    "ON CONFLICT (event_id) DO NOTHING"
                )
                new = int(cur.rowcount)
        except self._psycopg.Error as exc:
            self._discard()
            raise StoreError(f"{_redacted(self.url)}: {exc}") from exc
        return new

    def _discard(self) -> None:
        if self._db is not None:
            with contextlib.suppress(self._psycopg.Error):
                self._db.close()
        self._db = None

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        try:
            db = self._ensure()
            with db.cursor() as cur:
                cur.execute(sql.replace("?", "%s"), tuple(params))
                rows = [tuple(row) for row in cur.fetchall()]
        except self._psycopg.Error as exc:
            self._discard()
            raise StoreError(f"{_redacted(self.url)}: {exc}") from exc
        return rows

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        try:
            db = self._ensure()
            with db.cursor() as cur:
                cur.execute(sql.replace("?", "%s"), tuple(params))
        except self._psycopg.Error as exc:
            self._discard()
            raise StoreError(f"{_redacted(self.url)}: {exc}") from exc

    def schema_version(self) -> int:
        return int(self.query("SELECT coalesce(max(version), 0) FROM schema_version")[0][0])

    def close(self) -> None:
        self._discard()


def _redacted(url: str) -> str:
    """The URL without its password (error messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


def open_store(url: str) -> BillingStore:
    """``sqlite:///abs/path``, ``sqlite:relative/path`` or ``postgresql://...``; migrated on open."""
    scheme = url.split(":", 1)[0]
    if scheme == "sqlite":
        rest = url[len("sqlite:") :]
        path = rest[2:] if rest.startswith("//") else rest
        if not path:
            raise StoreError(f"{url}: no database file in the sqlite URL")
        return SqliteStore(Path(path), url)
    if scheme in ("postgresql", "postgres"):
        return PostgresStore(url)
    raise StoreError(f"{url}: unknown billing database (sqlite:///PATH or postgresql://...)")


@contextlib.contextmanager
def store_at(url: str) -> Iterator[BillingStore]:
    store = open_store(url)
    try:
        yield store
    finally:
        store.close()
