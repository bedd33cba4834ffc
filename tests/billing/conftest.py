"""Fixtures of the billing tests: a real PostgreSQL 15 for the session, emptied per test."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.billing.store import BillingStore, open_store
from tests.support.servers import PostgresServer, postgres_server


@pytest.fixture(scope="session")
def postgres_srv() -> Iterator[PostgresServer]:
    """One PostgreSQL cluster for the session. Its directory is made with ``mkdtemp`` (mode 0700,
    then chowned to ``postgres``): pytest's own temporary tree is root's and not traversable."""
    workdir = Path(tempfile.mkdtemp(prefix="billing-pg-"))
    try:
        with postgres_server(workdir) as server:
            yield server
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def pg_url(postgres_srv: PostgresServer) -> str:
    """URL of the session's PostgreSQL, with the billing tables dropped before the test."""
    if postgres_srv.proc is None:
        postgres_srv.start()
    postgres_srv.reset()
    return postgres_srv.url


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BillingStore]:
    """A migrated billing store on each backend: SQLite in the test's directory, and the real
    PostgreSQL (emptied)."""
    sqlite = f"sqlite:///{tmp_path / 'billing.sqlite3'}"
    url = sqlite if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))
    opened = open_store(url)
    yield opened
    opened.close()
