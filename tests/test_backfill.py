"""`mdp backfill START END`: one Dagster backfill of the candle partitions of a range of days, run
by a Dagster of the command's own when no platform runs; exact candles, and an honest failure."""

from __future__ import annotations

import subprocess
import sys
from datetime import date
from pathlib import Path

import httpx

from core.db import Connection
from pipelines.ingestion import drain_inbox
from tests.candle_reference import assert_candles_match_trades
from tests.conftest import ROOT
from tests.support import send, tick

DAYS = [date(2026, 11, 19), date(2026, 11, 20), date(2026, 11, 21)]


def backfill(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mdp", "backfill", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_backfill_recomputes_every_day_of_the_range_and_says_when_one_fails(
    client: httpx.Client, db: Connection, dagster_env: dict[str, str], tmp_path: Path
) -> None:
    send(client, [tick(i, ts=f"{DAYS[i % 3]}T{i % 24:02}:{i % 60:02}:00Z", price=100.0 + i % 9)
                  for i in range(600)])  # fmt: skip
    drain_inbox(db)
    db.execute("DELETE FROM candles")  # lost: the backfill must bring them back
    env = {**dagster_env, "MDP_DATA_DIR": str(tmp_path)}

    done = backfill(env, str(DAYS[0]), str(DAYS[-1]))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "done, 3 day(s) materialized" in done.stdout
    assert_candles_match_trades(db)

    db.execute(
        "CREATE FUNCTION refuse_candles() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN RAISE EXCEPTION 'candles of 2026-11-20 refused by the test'; END $$"
    )
    db.execute(
        "CREATE TRIGGER refuse_candles BEFORE INSERT ON candles FOR EACH ROW"
        " WHEN (NEW.bucket_start::date = '2026-11-20') EXECUTE FUNCTION refuse_candles()"
    )
    try:
        failed = backfill(env, str(DAYS[0]), str(DAYS[-1]))
    finally:
        db.execute("DROP TRIGGER refuse_candles ON candles")
        db.execute("DROP FUNCTION refuse_candles()")
    assert failed.returncode == 1
    assert "COMPLETED_FAILED" in failed.stderr or "FAILED" in failed.stderr
    assert "candles of 2026-11-20 refused by the test" in failed.stderr
    assert_candles_match_trades(db)  # the failed run changed nothing


def test_days_outside_the_partitions_are_refused(dagster_env: dict[str, str]) -> None:
    refused = backfill(dagster_env, "2026-11-21", "2026-11-19")
    assert refused.returncode == 2
    assert "START before END" in refused.stderr
