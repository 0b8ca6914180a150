"""The platform as an installed package, not a source checkout: built into a fresh virtual
environment (non-editable, so nothing is read from this folder) and run from an unrelated folder:
`mdp db migrate`, then `mdp up` with the Dagster code location loaded."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core.db import create_database, drop_database, migration_ids, with_database
from mdp.processes import free_port, stop, wait_until_live
from pipelines.names import CODE_LOCATION

ROOT = Path(__file__).resolve().parent.parent
LOCATIONS = "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }"


@pytest.fixture
def installed(tmp_path: Path) -> Path:
    """A fresh environment with the platform installed from a built wheel; its bin folder."""
    uv = ROOT / ".tools" / "bin" / "uv"
    uv_path = str(uv) if uv.exists() else shutil.which("uv")
    assert uv_path, "uv is installed by ./run"
    venv = tmp_path / "venv"
    env = {
        **os.environ,
        "UV_PROJECT_ENVIRONMENT": str(venv),
        "UV_OFFLINE": "1",  # every locked wheel is in uv's cache since ./run synced
        "UV_PYTHON_DOWNLOADS": "never",
    }
    subprocess.run(
        [
            uv_path,
            "sync",
            "--quiet",
            "--frozen",
            "--no-dev",
            "--no-editable",
            "--python",
            "python3",
        ],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=600,
    )
    return venv / "bin"


@pytest.fixture
def fresh_database(server_url: str) -> Iterator[str]:
    name = f"mdp_package_{uuid.uuid4().hex[:8]}"
    create_database(server_url, name)
    yield with_database(server_url, name)
    drop_database(server_url, name)


def test_an_installed_platform_runs_from_any_folder(
    installed: Path, fresh_database: str, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("INGEST_", "MDP_", "DAGSTER"))},
        "DATABASE_URL": fresh_database,
        "MDP_DATA_DIR": str(elsewhere / "data"),
    }
    env.pop("PYTHONPATH", None)

    def run(*command: str) -> str:
        done = subprocess.run(
            command, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    sql = run(
        str(installed / "python"), "-c", "import core.files; print(core.files.shipped('sql'))"
    )
    assert Path(sql.strip()).is_relative_to(installed.parent)  # the wheel's copy, not ours
    migrated = run(str(installed / "mdp"), "db", "migrate")
    assert f"applied {len(migration_ids())} migration(s)" in migrated

    port, dagster_port = free_port(), free_port()
    up = subprocess.Popen(
        [
            installed / "mdp",
            "up",
            "--no-feed",
            "--port",
            str(port),
            "--dagster-port",
            str(dagster_port),
        ],
        cwd=elsewhere,
        env=env,
    )
    try:
        api = f"http://127.0.0.1:{port}"
        wait_until_live(api, up, timeout=180)
        assert httpx.get(f"{api}/health/readiness", timeout=10).json()["ready"] is True
        assert httpx.get(f"{api}/dashboard", timeout=10).status_code == 200
        deadline = time.monotonic() + 180
        while True:
            assert up.poll() is None, "mdp up ended"
            try:
                entries = httpx.post(
                    f"http://127.0.0.1:{dagster_port}/graphql",
                    json={"query": LOCATIONS},
                    timeout=10,
                ).json()["data"]["workspaceOrError"]["locationEntries"]
            except (httpx.HTTPError, KeyError, TypeError):
                entries = []
            if [(e["name"], e["loadStatus"]) for e in entries] == [(CODE_LOCATION, "LOADED")]:
                break
            assert time.monotonic() < deadline, f"the code location did not load: {entries}"
            time.sleep(1)
    finally:
        stop(up, timeout=120)
    assert up.returncode == 0
