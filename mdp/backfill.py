"""`mdp backfill START END [--select ASSETS]`: one Dagster backfill of the candle partitions of the
market days START…END (MARKET_TIMEZONE), submitted to the platform's Dagster as the UI's
Materialize button does (so it is on the UI's backfills page) and followed until it ends. With no
platform running on the data folder, the command runs Dagster for itself (code server, daemon and
webserver, no API) on the platform's database and instance."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx

from core.config import Settings
from core.intervals import CANDLE_ASSETS, market_date
from mdp.processes import free_port
from mdp.progress import ProgressLine
from mdp.up import Platform, Refused, describe, holder, platform_lock
from pipelines.names import LAKE

POLL_SECONDS = 1.0

LAUNCH = """
mutation ($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on PartitionSetNotFoundError { message }
    ... on UnauthorizedError { message }
  }
}"""
STATUS = """
query ($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    ... on PartitionBackfill {
      status
      error { message }
      assetBackfillData { assetBackfillStatuses { ... on AssetPartitionsStatusCounts {
        numPartitionsTargeted numPartitionsInProgress numPartitionsMaterialized
        numPartitionsFailed } } }
      runs(limit: 100) { runId status tags { key value } }
    }
  }
}"""
FAILURES = """
query ($runId: ID!) {
  logsForRun(runId: $runId) {
    ... on EventConnection { events { ... on ExecutionStepFailureEvent {
      error { message causes { message } } } } }
  }
}"""
ENDED = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}


class BackfillError(Exception):
    pass


def run_backfill(settings: Settings, start: date, end: date, select: list[str]) -> int:
    if unknown := set(select) - set(CANDLE_ASSETS) - {LAKE}:
        print(f"mdp backfill: unknown assets {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    today = market_date(datetime.now(UTC), settings.market_zone)
    if not settings.partitions_start_date <= start <= end <= today:
        print(
            f"mdp backfill: days must lie within {settings.partitions_start_date} (the first "
            f"partition, PARTITIONS_START_DATE) and today ({today}), START before END",
            file=sys.stderr,
        )
        return 2
    days = [start + timedelta(days=n) for n in range((end - start).days + 1)]
    try:
        with platform_dagster(settings) as (dagster_url, stopping):
            backfill = _launch(dagster_url, select, days)
            print(f"backfill {backfill}: {len(days)} day(s), {', '.join(select)}", flush=True)
            print(f"           {dagster_url}/runs/b/{backfill}", flush=True)
            report = _follow(dagster_url, backfill, stopping)
            if report["status"] == "COMPLETED_SUCCESS":
                print(f"backfill {backfill}: done, {len(days)} day(s) materialized")
                return 0
            print(f"backfill {backfill}: {report['status']}", file=sys.stderr)
            for line in _failures(dagster_url, report):
                print(f"  {line}", file=sys.stderr)
            return 1
    except (BackfillError, Refused, httpx.HTTPError) as exc:
        print(f"mdp backfill: {exc}", file=sys.stderr)
        return 1


@contextmanager
def platform_dagster(settings: Settings) -> Iterator[tuple[str, threading.Event | None]]:
    """The Dagster UI of the platform running on the data folder; else one run for the command
    (stopped at its end), with the event a Ctrl-C sets."""
    try:
        lock = platform_lock(settings.data_dir)
    except Refused:
        url = holder(settings.data_dir).get("dagster_ui")
        if not url:
            raise
        yield url, None
        return
    with lock:
        url = f"http://127.0.0.1:{free_port()}"
        describe(lock, dashboard=None, dagster_url=url)
        platform = Platform(settings, lock, "127.0.0.1", url, name="mdp backfill")
        try:
            if not platform.start():
                raise BackfillError(f"Dagster did not start: {platform.failure or 'stopped'}")
            yield url, platform.stopping
        finally:
            platform.stop()


def _graphql(url: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    answer = httpx.post(
        f"{url}/graphql", json={"query": query, "variables": variables}, timeout=60
    ).json()
    if "errors" in answer:
        raise BackfillError(answer["errors"][0]["message"])
    data: dict[str, Any] = answer["data"]
    return data


def _launch(url: str, select: list[str], days: list[date]) -> str:
    params = {
        "assetSelection": [{"path": [key]} for key in select],
        "partitionNames": [day.isoformat() for day in days],
        "title": f"mdp backfill {days[0]}…{days[-1]}",
    }
    launched = _graphql(url, LAUNCH, {"params": params})["launchPartitionBackfill"]
    if launched["__typename"] != "LaunchBackfillSuccess":
        raise BackfillError(launched.get("message") or launched["__typename"])
    backfill: str = launched["backfillId"]
    return backfill


def _follow(url: str, backfill: str, stopping: threading.Event | None) -> dict[str, Any]:
    """Poll the backfill until it ends, showing progress; its last state."""
    progress = Progress()
    while True:
        report: dict[str, Any] = _graphql(url, STATUS, {"id": backfill})["partitionBackfillOrError"]
        counts = report["assetBackfillData"]["assetBackfillStatuses"] or [{}]
        progress.show(
            done=min(c.get("numPartitionsMaterialized", 0) for c in counts),
            running=max(c.get("numPartitionsInProgress", 0) for c in counts),
            failed=max(c.get("numPartitionsFailed", 0) for c in counts),
            total=max(c.get("numPartitionsTargeted", 0) for c in counts),
        )
        if report["status"] in ENDED:
            progress.end()
            return report
        if stopping is not None and stopping.wait(POLL_SECONDS):
            progress.end()
            raise BackfillError(f"interrupted; the backfill {backfill} was left to Dagster")
        if stopping is None:
            time.sleep(POLL_SECONDS)


def _failures(url: str, report: dict[str, Any]) -> Iterator[str]:
    """What failed: the backfill's own error, and each failed run's days and step errors."""
    if report.get("error"):
        yield report["error"]["message"]
    for run in report.get("runs") or []:
        if run["status"] != "FAILURE":
            continue
        tags = {t["key"]: t["value"] for t in run["tags"]}
        days = tags.get("dagster/partition") or "…".join(
            filter(None, (tags.get("dagster/asset_partition_range_start"),
                          tags.get("dagster/asset_partition_range_end")))
        )  # fmt: skip
        yield f"run {run['runId']} ({days or 'partitions unknown'}) failed:"
        events = _graphql(url, FAILURES, {"runId": run["runId"]})["logsForRun"]["events"]
        for event in events:
            if error := event.get("error"):
                for cause in [error, *error["causes"]]:  # the step's, then what raised it
                    yield f"  {cause['message'].strip()}"


class Progress(ProgressLine):
    """Partitions done, running and failed: a line per change when not on a terminal."""

    def __init__(self) -> None:
        super().__init__()
        self.last: tuple[int, ...] = ()

    def show(self, *, done: int, running: int, failed: int, total: int) -> None:
        width = 30
        filled = width * done // total if total else 0
        line = (
            f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} partitions"
            f" ({running} running, {failed} failed) {time.monotonic() - self.started:.0f} s"
        )
        if self.tty or (done, running, failed, total) != self.last:
            self.draw(line)
            self.last = (done, running, failed, total)
