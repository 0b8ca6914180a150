"""One way to reach the market database: URL dialects, connections and the migration runner."""

from __future__ import annotations

import logging
import re
from functools import cache
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo

import psycopg
from psycopg.rows import TupleRow

from core.files import shipped
from core.intervals import day_window, market_date, market_zone_problem

log = logging.getLogger(__name__)

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
LOCK_CANDLES = f"SELECT pg_advisory_xact_lock({CANDLES_LOCK_KEY})"

# The channel every commit of trades or candle changes notifies (the inbox writer, and the trigger
# on `candle_updates` of migration 0008) and each API process's listener hears.
STREAM_CHANNEL = "mdp_stream"


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


def prepare(url: str, symbols: list[str], market_timezone: str = "UTC") -> list[str]:
    """Migrate the market database, seed its symbols and store the market's zone: what `mdp db
    migrate` and `mdp up` do."""
    applied = migrate(url)
    seed_symbols(url, symbols)
    set_market_timezone(url, market_timezone)
    return applied


def market_zone(conn: Connection) -> ZoneInfo:
    """The market's zone as the database holds it: the one its queries put days in."""
    [(name,)] = conn.execute("SELECT timezone FROM market_settings").fetchall()
    return ZoneInfo(name)


def set_market_timezone(url: str, name: str) -> str | None:
    """Store `name` (MARKET_TIMEZONE) as the market's zone. When it differs from the stored one,
    the days already computed follow the old days: returns (and logs) which days to recompute and
    the command that does it; None when nothing changed."""
    if problem := market_zone_problem(name):
        raise ValueError(problem)
    with connect(url) as conn:
        try:
            conn.execute("SELECT now() AT TIME ZONE %s", (name,))
        except psycopg.errors.InvalidParameterValue as exc:
            unknown = f"MARKET_TIMEZONE {name!r} is not a zone this PostgreSQL knows"
            raise ValueError(unknown) from exc
        [(old,)] = conn.execute("SELECT timezone FROM market_settings FOR UPDATE").fetchall()
        if old == name:
            return None
        conn.execute("UPDATE market_settings SET timezone = %s", (name,))
        [(first, last)] = conn.execute(
            "SELECT min(first_trade_at), max(last_trade_at) FROM symbols"
        ).fetchall()
    advice = f"MARKET_TIMEZONE changed from {old} to {name}: "
    if first is None:
        advice += "no trades yet, nothing to recompute"
    else:
        # The old first 1d candle starts at its midnight, perhaps in the new zone's day before.
        old_zone, new_zone = ZoneInfo(old), ZoneInfo(name)
        old_start = day_window(market_date(first, old_zone), old_zone)[0]
        days = market_date(old_start, new_zone), market_date(last, new_zone)
        advice += (
            f"the 1d candles, daily partitions and lake files of {days[0]} … {days[1]} follow the"
            f" old days until recomputed: run `mdp backfill {days[0]} {days[1]}`"
        )
    log.warning(advice)
    return advice


QUERIES_DIR = MIGRATIONS_DIR / "queries"
# A line `\ir parts/<part>.sql` (psql's include, relative to `sql/queries/`): a piece of text that
# several statements share, such as the bar of a group of trades under the sale-condition rules.
_INCLUDE = re.compile(r"^[ \t]*\\ir[ \t]+(\S+)[ \t]*$", flags=re.MULTILINE)


@cache
def query(name: str) -> str:
    """The text of `sql/queries/<name>.sql`, each `\\ir` line replaced by the text it includes: the
    server plans the statement as if that text were written in it, as it would be by hand."""
    text = (QUERIES_DIR / f"{name}.sql").read_text(encoding="utf-8")
    return _INCLUDE.sub(lambda line: _part(line[1]), text)


def _part(path: str) -> str:
    return (QUERIES_DIR / path).read_text(encoding="utf-8").rstrip("\n")
