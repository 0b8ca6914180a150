"""`mdp bench soak`, short: the whole platform under a steady feed and steady readers makes no
error, loses and doubles nothing, keeps every candle exact and reports memory over time. The long
variant is the same command with `--minutes`; its figures are in docs/performance.md."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_a_short_soak_ends_reconciled_without_errors(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}  # its own embedded server
    env["MDP_DATA_DIR"] = str(tmp_path)
    finished = subprocess.run(
        [sys.executable, "-m", "mdp", "bench", "soak", "--minutes", "0.5"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    soak = json.loads(finished.stdout)["soak"]

    assert soak["errors"]["total"] == 0, soak["errors"]
    assert soak["reconciliation"]["acked"] > 5000
    assert soak["reconciliation"] | {"acked": 0} == {
        "acked": 0,
        "missing": 0,
        "duplicated": 0,
        "candle_differences": 0,
    }
    assert soak["dagster_runs"].get("STARTED", 0) + soak["dagster_runs"].get("SUCCESS", 0) >= 1
    assert soak["stream_events"] > 0
    assert set(soak["reads_ms"]) >= {"/candles 1m", "/v2/aggs 5m", "/status/ingestion"}
    samples = soak["memory_mib"]["samples"]
    assert sum(s.get("api", 0) > 0 and s.get("dagster_daemon", 0) > 0 for s in samples) >= 10
    assert soak["cpu_cores_used"]["api"] > 0
