"""Fixtures of the billing tests: a real PostgreSQL 15 for the session, emptied per test."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

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
