-- The market database: symbols, the durable ingest landing, canonical trades, candles and the
-- micro-batch heartbeat. Timestamps are timestamptz (UTC, microseconds); prices and volumes float8.

CREATE TABLE symbols (
    symbol         text PRIMARY KEY CHECK (symbol ~ '^[A-Z0-9][A-Z0-9._-]{0,15}$'),
    created_at     timestamptz NOT NULL DEFAULT now(),
    first_trade_at timestamptz,
    last_trade_at  timestamptz
);

-- One row per acknowledged tick, appended before the 202 and removed only when promoted to
-- `trades` in the same transaction. `seq` is the acceptance order: writers hold a transaction-level
-- advisory lock, so seq order is commit order.
CREATE TABLE trade_inbox (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    symbol      text NOT NULL,
    ts          timestamptz NOT NULL,
    price       float8 NOT NULL,
    volume      float8 NOT NULL,
    source      text NOT NULL,
    event_id    text NOT NULL
);

-- Canonical trades: identity (source, event_id), first accepted version wins. `seq` carries the
-- inbox acceptance order and breaks ties between equal timestamps (it fixes open and close).
CREATE TABLE trades (
    source      text NOT NULL CHECK (length(source) BETWEEN 1 AND 64),
    event_id    text NOT NULL CHECK (length(event_id) BETWEEN 1 AND 128),
    seq         bigint NOT NULL UNIQUE,
    symbol      text NOT NULL REFERENCES symbols,
    ts          timestamptz NOT NULL,
    price       float8 NOT NULL CHECK (price > 0 AND price < 'Infinity'),
    volume      float8 NOT NULL CHECK (volume > 0 AND volume < 'Infinity'),
    received_at timestamptz NOT NULL,
    batch_id    bigint NOT NULL,
    PRIMARY KEY (source, event_id)
);
CREATE INDEX trades_symbol_ts ON trades (symbol, ts, seq);
CREATE INDEX trades_ts ON trades (ts);

CREATE TABLE candles (
    symbol       text NOT NULL REFERENCES symbols,
    "interval"   text NOT NULL CHECK ("interval" IN ('1m', '5m', '15m', '1h', '1d')),
    bucket_start timestamptz NOT NULL,
    open         float8 NOT NULL,
    high         float8 NOT NULL,
    low          float8 NOT NULL,
    close        float8 NOT NULL,
    volume       float8 NOT NULL,
    vwap         float8 NOT NULL,
    trade_count  bigint NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, "interval", bucket_start)
);

-- One row per ingestion micro-batch: the heartbeat of the freshness model and its counts.
CREATE TABLE ingest_batches (
    batch_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at    timestamptz NOT NULL,
    finished_at   timestamptz NOT NULL DEFAULT now(),
    first_seq     bigint,
    last_seq      bigint,
    inbox_rows    integer NOT NULL,
    promoted      integer NOT NULL,
    duplicates    integer NOT NULL,
    min_ts        timestamptz,
    max_ts        timestamptz,
    run_id        text
);
CREATE INDEX ingest_batches_finished_at ON ingest_batches (finished_at);
