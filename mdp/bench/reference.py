"""The physical reference of the write benchmarks: a binary COPY of the same rows into a plain
table (no index, no identity, no constraint), what the disk and PostgreSQL can take; and, to show
what a table's own indexes and constraints cost, the same COPY into a table made like it. Each the
best of a few tries."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from core.db import connect

TABLE = "bench_plain_copy"


def plain_copy_rate(
    url: str,
    columns: dict[str, str],
    rows: Sequence[Sequence[Any]],
    *,
    like: str | None = None,
    tries: int = 3,
) -> float:
    """rows/s of one binary COPY of `rows` into a fresh plain table of `columns` (name: type),
    dropped afterwards, the best of `tries` (a reference is what the machine can do, not one
    sample of it); with `like`, into a table made like that one instead (its indexes, constraints
    and foreign keys; `columns` then names the columns `rows` fill)."""
    return max(_copy_rate(url, columns, rows, like) for _ in range(tries))


def _copy_rate(
    url: str, columns: dict[str, str], rows: Sequence[Sequence[Any]], like: str | None
) -> float:
    with connect(url) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        if like is None:
            conn.execute(
                f"CREATE TABLE {TABLE} ({', '.join(f'{n} {t}' for n, t in columns.items())})"
            )
        else:
            conn.execute(f"CREATE TABLE {TABLE} (LIKE {like} INCLUDING ALL)")
            for (definition,) in conn.execute(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
                " WHERE conrelid = %s::regclass AND contype = 'f'",
                (like,),
            ).fetchall():
                conn.execute(f"ALTER TABLE {TABLE} ADD {definition}")
        conn.commit()
        started = time.perf_counter()
        with conn.cursor().copy(
            f"COPY {TABLE} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(list(columns.values()))
            for row in rows:
                copy.write_row(row)
        conn.commit()
        seconds = time.perf_counter() - started
        conn.execute(f"DROP TABLE {TABLE}")
    return len(rows) / seconds
