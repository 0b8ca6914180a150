"""`mdp db migrate`: numbered migrations from sql/, recorded, idempotent; readiness knows."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import get_args

import httpx
import psycopg
import pytest

from core.db import Connection, connect, create_database, migration_ids, prepare, with_database
from core.intervals import INTERVALS, Interval
from mdp.processes import api_server
from tests.conftest import SYMBOLS, api_env


@pytest.fixture
def empty_database(server_url: str) -> Iterator[str]:
    name = f"mdp_empty_{uuid.uuid4().hex[:8]}"
    create_database(server_url, name)
    yield with_database(server_url, name)
    with connect(server_url, autocommit=True) as conn:
        conn.execute(
            psycopg.sql.SQL("DROP DATABASE {} WITH (FORCE)").format(psycopg.sql.Identifier(name))
        )


def test_migrations_apply_once_and_are_recorded(empty_database: str) -> None:
    assert prepare(empty_database, SYMBOLS) == migration_ids()
    assert prepare(empty_database, [*SYMBOLS, "NVDA"]) == []
    with connect(empty_database) as conn:
        recorded = [
            r[0] for r in conn.execute("SELECT migration_id FROM _yoyo_migration ORDER BY 1")
        ]
        symbols = [r[0] for r in conn.execute("SELECT symbol FROM symbols ORDER BY 1")]
    assert recorded == migration_ids()
    assert symbols == sorted([*SYMBOLS, "NVDA"])


def test_readiness_is_red_until_the_schema_is_migrated(empty_database: str) -> None:
    with api_server(api_env(empty_database)) as url:
        response = httpx.get(f"{url}/health/readiness")
        assert response.status_code == 503
        assert response.json()["migrations_pending"] == migration_ids()
        ingest = httpx.post(f"{url}/ingest/tick", json={}, auth=("x", "y"))
        assert ingest.status_code == 401
        prepare(empty_database, SYMBOLS)
        assert httpx.get(f"{url}/health/readiness").status_code == 200


def test_the_intervals_are_named_alike_everywhere(db: Connection) -> None:
    [(check,)] = db.execute(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conrelid = 'candles'::regclass AND contype = 'c'"
        " AND pg_get_constraintdef(oid) LIKE '%%interval%%'"
    ).fetchall()
    in_the_table = re.findall(r"'(\w+)'::text", check)
    assert list(INTERVALS) == list(get_args(Interval)) == in_the_table
