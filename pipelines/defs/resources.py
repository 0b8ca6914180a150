"""The market database as a Dagster resource, and the in-process executor every job runs on
(a subprocess per step would cost seconds per micro-batch)."""

import dagster as dg

from core.db import Connection, connect


class MarketDatabase(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The market database at DATABASE_URL."""

    url: str

    def connect(self) -> Connection:
        return connect(self.url)


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(
        resources={"market_db": MarketDatabase(url=dg.EnvVar("DATABASE_URL"))},
        executor=dg.in_process_executor,
    )
