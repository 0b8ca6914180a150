# One image for every Python service of the platform: the API, the feeder, the migration job and
# Dagster (code server, webserver, daemon). docker-compose.yml picks the command per service.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_COMPILE_BYTECODE=1 \
    UV_PYTHON_DOWNLOADS=never \
    PATH=/opt/venv/bin:$PATH \
    DAGSTER_HOME=/opt/dagster/home

RUN pip install --no-cache-dir uv==0.13.8

WORKDIR /app
# Dependencies first, from the lock, so code changes do not reinstall them.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project

COPY core ./core
COPY mdp ./mdp
COPY serving ./serving
COPY pipelines ./pipelines
COPY sql ./sql
COPY workspace.yaml dagster.yaml ./
COPY deploy ./deploy
# Installed like any user installs it (a built wheel, not this folder): SQL and Dagster's files
# ship inside the package.
RUN uv sync --frozen --no-dev --no-editable \
    && mkdir -p "$DAGSTER_HOME" \
    && cp dagster.yaml "$DAGSTER_HOME/dagster.yaml"

EXPOSE 8000 3000 4000
CMD ["mdp", "serve", "--host", "0.0.0.0", "--port", "8000"]
