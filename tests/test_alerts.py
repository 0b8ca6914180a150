"""The alert rules shipped for Prometheus (deploy/prometheus): valid, unit-tested with promtool,
and firing in a real Prometheus that scrapes a running API: "ingestion stale" once the drains stop
looking."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from core.db import Connection
from mdp.processes import free_port
from pipelines.ingestion import record_idle_cycle
from tests.support import wait_for

RULES = Path(__file__).resolve().parent.parent / "deploy" / "prometheus"


def promtool(*args: str) -> str:
    tool = shutil.which("promtool")
    assert tool, "promtool is needed for the alert tests (./run test installs it with apt)"
    done = subprocess.run([tool, *args], cwd=RULES, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_rules_are_valid_and_pass_their_unit_tests() -> None:
    assert "SUCCESS: 9 rules found" in promtool("check", "rules", "alerts.yml")
    assert "SUCCESS" in promtool("test", "rules", "alerts_test.yml")


def test_every_rule_has_a_summary_and_a_runbook_line() -> None:
    rules = [
        r for g in yaml.safe_load((RULES / "alerts.yml").read_text())["groups"] for r in g["rules"]
    ]
    for rule in rules:
        assert rule["annotations"]["summary"] and rule["annotations"]["runbook"], rule["alert"]
        assert rule["labels"]["severity"] in {"page", "warn"}, rule["alert"]


@pytest.fixture
def prometheus(api_url: str, tmp_path: Path) -> Iterator[str]:
    """A Prometheus scraping the test API every second and evaluating the shipped rules."""
    binary = shutil.which("prometheus")
    assert binary, "Prometheus is needed for the alert tests (./run test installs it with apt)"
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES / "alerts.yml")],
        "scrape_configs": [
            {"job_name": "mdp-api", "static_configs": [{"targets": [api_url.split("//")[1]]}]}
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    server = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(30)


def _alert(prometheus: str, name: str) -> dict[str, Any] | None:
    try:
        alerts = httpx.get(f"{prometheus}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
    except (httpx.HTTPError, KeyError, ValueError):
        return None
    return next((a for a in alerts if a["labels"]["alertname"] == name), None)


def _query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    try:
        body = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=5).json()
    except (httpx.HTTPError, ValueError):
        return []
    result: list[dict[str, Any]] = body.get("data", {}).get("result", [])
    return result


def test_prometheus_fires_ingestion_stale_when_the_drains_stop(
    prometheus: str, db: Connection
) -> None:
    record_idle_cycle(db)  # a drain looked just now: alive
    wait_for(
        "Prometheus sees ingestion alive and no alert",
        lambda: (
            _query(prometheus, "mdp_ingestion_alive == 1")
            and _alert(prometheus, "MdpIngestionStale") is None
        ),
        timeout=240,
        poll=1,
    )
    # No drain looks again (the daemon is stopped): stale after 3 intervals, firing a minute later.
    firing = wait_for(
        "MdpIngestionStale fires",
        lambda: (a := _alert(prometheus, "MdpIngestionStale")) and a["state"] == "firing" and a,
        timeout=240,
        poll=1,
    )
    assert firing  # wait_for returns the first truthy value: the firing alert
    assert firing["labels"]["severity"] == "page"
    assert "dagster-daemon.log" in firing["annotations"]["runbook"]
    assert _alert(prometheus, "MdpDatabaseDown") is None


def test_the_operations_guide_lists_every_alert_with_its_runbook() -> None:
    readme = (RULES.parent.parent / "docs" / "operations.md").read_text()
    for group in yaml.safe_load((RULES / "alerts.yml").read_text())["groups"]:
        for rule in group["rules"]:
            runbook = " ".join(rule["annotations"]["runbook"].split())
            assert f"| `{rule['alert']}` ({rule['labels']['severity']}) |" in readme
            assert runbook in readme, rule["alert"]
