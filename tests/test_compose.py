"""The Docker Compose deployment, checked without a Docker engine: every service, command, port,
environment variable and dependency is wired the way the docs say, every command exists in the
image the Dockerfile builds, and nothing without a login listens beyond the host."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.names import CODE_LOCATION

ROOT = Path(__file__).resolve().parent.parent
SERVICES = {
    "postgres", "migrate", "api", "feeder", "dagster-code", "dagster-webserver", "dagster-daemon",
    "prometheus", "proxy",
}  # fmt: skip
PLATFORM_SERVICES = SERVICES - {"postgres", "prometheus", "proxy"}
CONTRACT_ENV = {
    "DATABASE_URL", "DAGSTER_HOME", "INGEST_USERNAME", "INGEST_PASSWORD",
    "INGESTION_INTERVAL_SECONDS", "SYMBOLS", "PARTITIONS_START_DATE", "MARKET_TIMEZONE", "LAKE_DIR",
    "API_URL",
}  # fmt: skip


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_every_service_is_there_with_the_image_built_here(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == SERVICES
    for name in PLATFORM_SERVICES:
        assert services[name]["build"] == "."
        assert services[name]["image"] == "market-data-platform"


def test_postgres_keeps_its_data_reports_health_and_holds_dagster_too(
    compose: dict[str, Any],
) -> None:
    postgres = compose["services"]["postgres"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    mounts = postgres["volumes"]
    assert "pgdata:/var/lib/postgresql/data" in mounts
    assert "pgdata" in compose["volumes"]
    [init] = [m for m in mounts if "docker-entrypoint-initdb.d" in m]
    script = ROOT / init.split(":")[0]
    assert "CREATE DATABASE dagster" in script.read_text()


def test_each_service_runs_its_command_after_what_it_needs(compose: dict[str, Any]) -> None:
    services = compose["services"]
    expect = {
        "migrate": (["mdp", "db", "migrate"], {"postgres": "service_healthy"}),
        "api": (["mdp", "serve"], {"migrate": "service_completed_successfully"}),
        "feeder": (["mdp", "feed", "--url", "http://api:8000"], {"api": "service_healthy"}),
        "dagster-code": (["dagster", "api", "grpc"], {"migrate": "service_completed_successfully"}),
        "dagster-webserver": (["dagster-webserver"], {"dagster-code": "service_started"}),
        "dagster-daemon": (["dagster-daemon", "run"], {"dagster-code": "service_started"}),
    }
    for name, (command, needs) in expect.items():
        assert services[name]["command"][: len(command)] == command, name
        conditions = {k: v["condition"] for k, v in services[name]["depends_on"].items()}
        assert needs.items() <= conditions.items(), name
    assert services["api"]["ports"] == ["8000:8000"]
    assert services["dagster-webserver"]["ports"] == ["127.0.0.1:3000:3000"]
    assert "/health/readiness" in " ".join(services["api"]["healthcheck"]["test"])
    assert services["migrate"]["restart"] == "no"


def test_the_environment_follows_the_contract(compose: dict[str, Any]) -> None:
    for name in PLATFORM_SERVICES:
        environment = compose["services"][name]["environment"]
        assert set(environment) >= CONTRACT_ENV | {"DAGSTER_PG_URL"}, name
        assert environment["DATABASE_URL"].startswith("postgresql://mdp:")
        assert environment["DATABASE_URL"].endswith("@postgres:5432/market")
        assert environment["DAGSTER_PG_URL"].startswith("postgresql+psycopg2://")
        assert environment["DAGSTER_PG_URL"].endswith("@postgres:5432/dagster")
        assert environment["API_URL"] == "http://api:8000"
        # The ingest password is never baked in: compose refuses to start without one.
        assert environment["INGEST_PASSWORD"].startswith("${INGEST_PASSWORD:?")


def test_dagster_services_share_one_code_location_over_grpc(compose: dict[str, Any]) -> None:
    services = compose["services"]
    code = services["dagster-code"]["command"]
    port = code[code.index("-p") + 1]
    assert code[code.index("-m") + 1] == CODE_LOCATION
    for name in ("dagster-webserver", "dagster-daemon"):
        command = services[name]["command"]
        workspace = yaml.safe_load((ROOT / command[command.index("-w") + 1]).read_text())
        [location] = workspace["load_from"]
        assert location["grpc_server"]["host"] == "dagster-code"
        assert str(location["grpc_server"]["port"]) == port
        assert location["grpc_server"]["location_name"] == CODE_LOCATION


def test_prometheus_scrapes_the_api_with_the_shipped_alerts(compose: dict[str, Any]) -> None:
    prometheus = compose["services"]["prometheus"]
    mounts = {m.split(":")[1]: ROOT / m.split(":")[0] for m in prometheus["volumes"] if "/" in m}
    config = yaml.safe_load(mounts["/etc/prometheus/prometheus.yml"].read_text())
    assert mounts["/etc/prometheus/alerts.yml"] == ROOT / "deploy" / "prometheus" / "alerts.yml"
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    [job] = config["scrape_configs"]
    assert job["job_name"] == "mdp-api"  # the alert rules select it
    assert job["static_configs"] == [{"targets": ["api:8000"]}]
    assert job["metrics_path"] == "/metrics"
    assert "prometheus" in compose["volumes"]


def test_only_the_api_and_the_login_proxy_listen_beyond_this_machine(
    compose: dict[str, Any],
) -> None:
    """The Dagster UI can stop ingestion and neither it nor Prometheus asks for a password: they
    are published on the loopback interface only, and reach further through the opt-in proxy."""
    services = compose["services"]
    published = {name: s["ports"] for name, s in services.items() if "ports" in s}
    assert published.pop("api") == ["8000:8000"]  # ingest asks for INGEST_PASSWORD
    assert published.pop("proxy") == ["3001:3001", "9091:9091", "80:80", "443:443"]
    assert published == {
        "dagster-webserver": ["127.0.0.1:3000:3000"],
        "prometheus": ["127.0.0.1:9090:9090"],
    }
    assert services["proxy"]["profiles"] == ["proxy"]  # runs only when asked for


def caddy_blocks(text: str) -> dict[str, list[str]]:
    """The top-level blocks of a Caddyfile (site addresses, snippets), each as its lines."""
    blocks: dict[str, list[str]] = {}
    depth, name = 0, ""
    for raw in text.splitlines():
        line = raw.split("#")[0].strip()
        if not line:
            continue
        if depth == 0 and line.endswith("{"):
            name = line.removesuffix("{").strip()
            blocks[name] = []
        elif depth > 1 or line != "}":
            blocks[name].append(line)
        depth += line.endswith("{") - (line == "}")
    return blocks


def test_the_proxy_asks_for_a_password_before_the_dagster_ui_and_prometheus(
    compose: dict[str, Any],
) -> None:
    proxy = compose["services"]["proxy"]
    [config] = [m.split(":")[0] for m in proxy["volumes"] if m.endswith(":/etc/caddy/Caddyfile:ro")]
    blocks = caddy_blocks((ROOT / config).read_text())
    assert blocks["(login)"] == ["basic_auth {", "{$PROXY_USERNAME} {$PROXY_PASSWORD_HASH}", "}"]
    environment = proxy["environment"]
    # No hash is baked in: without one, Caddy refuses to start ("cannot be empty or missing").
    assert environment["PROXY_PASSWORD_HASH"] == "${PROXY_PASSWORD_HASH:-}"
    webserver = compose["services"]["dagster-webserver"]["command"]
    upstreams = {
        "DAGSTER_SITE": f"dagster-webserver:{webserver[webserver.index('-p') + 1]}",
        "PROMETHEUS_SITE": "prometheus:9090",  # its default port, published on 127.0.0.1
    }
    for site, upstream in upstreams.items():
        assert blocks["{$" + site + "}"] == ["import login", f"reverse_proxy {upstream}"]
        port = environment[site].removeprefix("${" + site + ":-:").removesuffix("}")
        assert f"{port}:{port}" in proxy["ports"]
    assert set(blocks) == {"", "(login)"} | {"{$" + site + "}" for site in upstreams}
    assert blocks[""] == ["admin off"]  # the global options: no admin API
    assert "proxy" in compose["volumes"]  # certificates survive a restart


def test_the_image_holds_what_the_commands_need() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (.+?) \S+$", dockerfile, flags=re.M))
    sources = {part for line in copied for part in line.split()}
    assert {"mdp", "serving", "pipelines", "sql", "deploy", "workspace.yaml", "dagster.yaml",
            "pyproject.toml", "uv.lock"} <= sources  # fmt: skip
    assert 'cp dagster.yaml "$DAGSTER_HOME/dagster.yaml"' in dockerfile
    assert "uv sync --frozen --no-dev" in dockerfile
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "mdp" in scripts
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith(("dagster-webserver==", "dagster-postgres==")) for d in dependencies)


def test_the_operations_guide_tells_how_to_deploy_with_compose() -> None:
    readme = (ROOT / "docs" / "operations.md").read_text()
    assert "docker compose up" in readme
    assert "INGEST_PASSWORD" in readme
