"""`mdp bench`: measured numbers and ratios, printed as one JSON document (docs/design.md §9)."""

from __future__ import annotations

import inspect
import json
import os
import platform
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from core.config import Settings
from core.db import connect, create_database, prepare, with_database
from core.embedded import EmbeddedPostgres

BENCH_DATABASE = "mdp_bench"


@contextmanager
def bench_database(settings: Settings) -> Iterator[str]:
    """A migrated database of its own (`mdp_bench`) on the configured or the embedded server."""
    embedded: EmbeddedPostgres | None = None
    if settings.database_url:
        create_database(settings.database_url, BENCH_DATABASE)
        url = with_database(settings.database_url, BENCH_DATABASE)
    else:
        embedded = EmbeddedPostgres(settings.data_dir / "postgres")
        embedded.start()
        url = embedded.database(BENCH_DATABASE)
    try:
        prepare(url, settings.symbol_list, settings.market_timezone)
        yield url
    finally:
        if embedded is not None:
            embedded.stop()


def best_of(rounds: int, action: Callable[[], object]) -> float:
    """The best of `rounds` wall-clock timings of `action`, in seconds."""
    timings = []
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        timings.append(time.perf_counter() - started)
    return min(timings)


def machine(url: str) -> dict[str, Any]:
    with connect(url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(memory / 2**30, 1),
        "python": platform.python_version(),
        "postgres": row[0] if row else None,
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


Suite = Callable[..., dict[str, Any]]


def suites() -> dict[str, Suite]:
    """Every benchmark by name; each takes `(url, settings)` and its own keyword-only options,
    with their defaults."""
    from mdp.bench.candles import bench_candles
    from mdp.bench.capacity import bench_capacity
    from mdp.bench.crowd import bench_crowd
    from mdp.bench.freshness import bench_freshness
    from mdp.bench.imports import bench_import
    from mdp.bench.ingest import bench_ingest
    from mdp.bench.lake import bench_lake
    from mdp.bench.serve import bench_serve
    from mdp.bench.soak import bench_soak
    from mdp.bench.stream import bench_stream

    return {
        "ingest": bench_ingest,
        "candles": bench_candles,
        "serve": bench_serve,
        "freshness": bench_freshness,
        "capacity": bench_capacity,
        "stream": bench_stream,
        "crowd": bench_crowd,
        "lake": bench_lake,
        "import": bench_import,
        "soak": bench_soak,
    }


def options_of(suite: Suite) -> set[str]:
    """The options a benchmark takes: its keyword-only parameters."""
    parameters = inspect.signature(suite).parameters.values()
    return {p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}


def all_options() -> set[str]:
    """Every option of every benchmark."""
    return set().union(*map(options_of, suites().values()))


def unused_options(chosen: list[str], options: dict[str, Any]) -> set[str]:
    """The options given that none of the chosen benchmarks takes."""
    available = suites()
    return set(options) - set().union(*(options_of(available[name]) for name in chosen))


def run_benchmarks(chosen: list[str], settings: Settings, options: dict[str, Any]) -> int:
    """Run the `chosen` benchmarks, each with the `options` it takes (the others keep their
    defaults), and print one JSON report."""
    available = suites()
    with bench_database(settings) as url:
        report: dict[str, Any] = {"machine": machine(url)}
        for name in dict.fromkeys(chosen):
            suite = available[name]
            report[name] = suite(
                url, settings, **{k: v for k, v in options.items() if k in options_of(suite)}
            )
    print(json.dumps(report, indent=2))
    return 0
