"""The platform's one settings object, read from the environment (README: Configuration)."""

from __future__ import annotations

from datetime import date
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.intervals import market_zone_problem

DEFAULT_SYMBOLS = "AAPL,GOOGL,MSFT,TSLA,AMZN"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_ignore_empty=True, extra="ignore")

    database_url: str | None = None
    dagster_home: Path | None = None
    dagster_pg_url: str | None = None
    """Dagster's instance storage; unset, a `dagster` database beside the market database."""
    ingest_username: str | None = None
    ingest_password: SecretStr | None = None
    ingestion_interval_seconds: float = Field(default=10.0, gt=0)
    symbols: str = DEFAULT_SYMBOLS
    partitions_start_date: date = date(2024, 1, 1)
    lake_dir: Path = Path("data/lake")
    api_url: str = "http://127.0.0.1:8000"
    market_timezone: str = "UTC"
    """Where the trading day begins (an IANA zone, e.g. America/New_York): 1d candles, daily
    partitions, the lake's days, Polygon day bars and "today" (docs/design.md §5)."""

    data_dir: Path = Field(default=Path("data"), validation_alias="MDP_DATA_DIR")
    log_level: str = Field(default="INFO", validation_alias="MDP_LOG_LEVEL")
    ingest_max_body_bytes: int = Field(
        default=10 * 1024 * 1024, gt=0, validation_alias="MDP_INGEST_MAX_BODY_BYTES"
    )
    dev_no_auth: bool = Field(default=False, validation_alias="MDP_DEV_NO_AUTH")
    dagster_url: str = Field(default="http://127.0.0.1:3000", validation_alias="MDP_DAGSTER_URL")
    streams_per_process: int = Field(default=4096, gt=0, validation_alias="MDP_STREAMS_PER_PROCESS")
    """`/stream` and `/ws` connections one API process follows at most; past it, refused."""
    read_api_keys: SecretStr | None = None
    """Comma-separated keys for reads (the WebSocket `auth` step); unset, reads are public."""
    ingest_max_inflight_bytes: int = Field(
        default=32 * 1024 * 1024, gt=0, validation_alias="MDP_INGEST_MAX_INFLIGHT_BYTES"
    )
    """Ingest body bytes one API process holds at once; past them a batch is refused with 503. A
    body costs the process about 5.5 times its size until it is committed (the body, its decoded
    ticks, its inbox rows: 55 MiB for 10 MiB), so 32 MiB, three bodies at the limit, bounds that to
    ~180 MiB; and it is more than the inbox commits at once (200,000 ticks, ~24 MiB of JSON), so a
    larger budget would only lengthen the queue."""
    stocks_max_channels: int = Field(
        default=10_000, gt=0, validation_alias="MDP_STOCKS_MAX_CHANNELS"
    )
    """Channels one /stocks connection may hold (a wildcard, `T.*`, is one)."""
    stocks_max_connections_per_key: int = Field(
        default=10, gt=0, validation_alias="MDP_STOCKS_MAX_CONNECTIONS_PER_KEY"
    )
    """/stocks connections one read key may hold on one API process (with READ_API_KEYS set)."""

    @field_validator("market_timezone")
    @classmethod
    def _market_day_nests_hours(cls, name: str) -> str:
        if problem := market_zone_problem(name):
            raise ValueError(problem)
        return name

    @property
    def market_zone(self) -> ZoneInfo:
        return ZoneInfo(self.market_timezone)

    @model_validator(mode="after")
    def _one_body_fits_in_flight(self) -> Settings:
        if self.ingest_max_inflight_bytes < self.ingest_max_body_bytes:
            raise ValueError(
                "MDP_INGEST_MAX_INFLIGHT_BYTES must be at least MDP_INGEST_MAX_BODY_BYTES: "
                "otherwise a batch at the body limit could never be accepted"
            )
        return self

    @property
    def symbol_list(self) -> list[str]:
        return [s.strip() for s in self.symbols.split(",") if s.strip()]

    @property
    def read_keys(self) -> frozenset[str]:
        keys = self.read_api_keys.get_secret_value() if self.read_api_keys else ""
        return frozenset(k.strip() for k in keys.split(",") if k.strip())


@lru_cache
def get_settings() -> Settings:
    return Settings()
