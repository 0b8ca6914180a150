"""The physical reference of the write benchmarks: a binary COPY of the same rows into a plain
table (no index, no identity, no constraint), what the disk and PostgreSQL can take."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from core.db import connect

TABLE = "bench_plain_copy"


def plain_copy_rate(url: str, columns: dict[str, str], rows: Sequence[Sequence[Any]]) -> float:
    """rows/s of one binary COPY of `rows` into a fresh plain table of `columns` (name: type),
    dropped afterwards."""
    with connect(url) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        conn.execute(f"CREATE TABLE {TABLE} ({', '.join(f'{n} {t}' for n, t in columns.items())})")
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
