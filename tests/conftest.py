"""Test fixtures on a real PostgreSQL: TEST_DATABASE_URL when set, else a server at
127.0.0.1:5432 when one answers, else the embedded server (MDP_TEST_EMBEDDED=1 forces it)."""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from core.config import DEFAULT_SYMBOLS
from core.db import (
    Connection,
    connect,
    create_database,
    dagster_storage_url,
    drop_database,
    prepare,
    with_database,
)
from core.embedded import EmbeddedPostgres
from mdp.processes import api_server

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # dagster, dagster-daemon
LOCAL_SERVER = "postgresql://127.0.0.1:5432/postgres"
SYMBOLS = DEFAULT_SYMBOLS.split(",")
USER, PASSWORD = "tester", "s3cret-test-password"


def _answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a maintenance database on the PostgreSQL server the tests use."""
    if url := os.environ.get("TEST_DATABASE_URL"):
        yield url
    elif os.environ.get("MDP_TEST_EMBEDDED") != "1" and _answers(LOCAL_SERVER):
        yield LOCAL_SERVER
    else:
        embedded = EmbeddedPostgres(tmp_path_factory.mktemp("embedded") / "postgres")
        yield embedded.start()
        embedded.stop()


@pytest.fixture(scope="session")
def database_url(server_url: str) -> Iterator[str]:
    """A fresh, migrated market database for this test session, dropped at the end."""
    name = f"mdp_test_{uuid.uuid4().hex[:8]}"
    create_database(server_url, name)
    url = with_database(server_url, name)
    prepare(url, SYMBOLS)
    yield url
    drop_database(server_url, name)


@pytest.fixture(scope="session")
def dagster_env(
    server_url: str, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """Environment for Dagster CLI processes: our dagster.yaml on a PostgreSQL instance database."""
    home = tmp_path_factory.mktemp("dagster_home")
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    name = f"dagster_test_{uuid.uuid4().hex[:8]}"
    create_database(server_url, name)
    yield {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_URL": dagster_storage_url(with_database(server_url, name)),
        "DATABASE_URL": database_url,
    }
    drop_database(server_url, name)


@pytest.fixture
def db(database_url: str) -> Iterator[Connection]:
    """A connection to the test database, back to its seeded symbols and no market data."""
    with connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE trade_inbox, trades, candles, ingest_batches")
        conn.execute("DELETE FROM symbols WHERE symbol <> ALL(%s)", [SYMBOLS])
        conn.execute("UPDATE symbols SET first_trade_at = NULL, last_trade_at = NULL")
        yield conn


def api_env(database_url: str) -> dict[str, str]:
    return {"DATABASE_URL": database_url, "INGEST_USERNAME": USER, "INGEST_PASSWORD": PASSWORD}


@pytest.fixture(scope="session")
def api_url(database_url: str) -> Iterator[str]:
    """A real `mdp serve` process on the test database."""
    with api_server(api_env(database_url)) as url:
        yield url


@pytest.fixture
def client(api_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_url, auth=(USER, PASSWORD), timeout=10) as c:
        yield c
