"""One way to reach the market database: URL dialects, connections and the migration runner."""

from __future__ import annotations

import re
from functools import cache
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg.rows import TupleRow

from core.files import shipped

MIGRATIONS_DIR = shipped("sql")

_SCHEME = re.compile(r"^postgres(?:ql)?(?:\+\w+)?://")


def libpq_url(url: str) -> str:
    """The libpq URI (`postgresql://…`) for any accepted spelling of a PostgreSQL URL."""
    if not _SCHEME.match(url):
        raise ValueError("DATABASE_URL must be a postgresql:// URL")
    return _SCHEME.sub("postgresql://", url, count=1)


def sqlalchemy_url(url: str) -> str:
    """The same database for SQLAlchemy and Dagster, on the psycopg 3 driver."""
    return _SCHEME.sub("postgresql+psycopg://", libpq_url(url), count=1)


def dagster_storage_url(url: str) -> str:
    """The same database for Dagster's instance storage: dagster-postgres drives psycopg2."""
    return _SCHEME.sub("postgresql+psycopg2://", libpq_url(url), count=1)


def with_database(url: str, database: str) -> str:
    """The same server and credentials, another database."""
    parts = urlsplit(libpq_url(url))
    return urlunsplit(parts._replace(path=f"/{database}"))


Connection = psycopg.Connection[TupleRow]

# Every writer of trades and candles holds this lock for its whole transaction: a micro-batch
# (promotion and bucket refresh), a day's recomputation, an announcement of changed candles. So a
# recomputed day never overwrites newer micro-batch results, and change ids follow commit order.
CANDLES_LOCK_KEY = 0x6D6470_B47C


def connect(url: str, *, autocommit: bool = False) -> Connection:
    return psycopg.connect(libpq_url(url), connect_timeout=5, autocommit=autocommit)


def migration_ids() -> list[str]:
    """The ids of the migrations this code expects, in order (file stems in `sql/`)."""
    return sorted(p.stem for p in MIGRATIONS_DIR.glob("*.sql"))


def migrate(url: str) -> list[str]:
    """Apply the pending `sql/` migrations under yoyo's lock; returns the ids it applied."""
    from yoyo import get_backend, read_migrations

    backend = get_backend(sqlalchemy_url(url))
    migrations = read_migrations(str(MIGRATIONS_DIR))
    with backend.lock():
        pending = backend.to_apply(migrations)
        backend.apply_migrations(pending)
    return [m.id for m in pending]


def create_database(admin_url: str, database: str) -> None:
    """Create `database` on the server behind `admin_url` unless it exists."""
    with connect(admin_url, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
        if not exists:
            conn.execute(
                psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(database))
            )


def drop_database(admin_url: str, database: str) -> None:
    """Drop `database` (if it exists) on the server behind `admin_url`, closing its sessions."""
    with connect(admin_url, autocommit=True) as conn:
        conn.execute(
            psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                psycopg.sql.Identifier(database)
            )
        )


def seed_symbols(url: str, symbols: list[str]) -> None:
    """Register `symbols` (from SYMBOLS); symbols already known are kept."""
    with connect(url) as conn:
        conn.execute(
            "INSERT INTO symbols (symbol) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING",
            (symbols,),
        )


def prepare(url: str, symbols: list[str]) -> list[str]:
    """Migrate the market database and seed its symbols: what `mdp db migrate` does."""
    applied = migrate(url)
    seed_symbols(url, symbols)
    return applied


QUERIES_DIR = MIGRATIONS_DIR / "queries"


@cache
def query(name: str) -> str:
    """The text of `sql/queries/<name>.sql`."""
    return (QUERIES_DIR / f"{name}.sql").read_text(encoding="utf-8")
