-- The log of candle changes that /stream follows: one row per candle a micro-batch (or an
-- announcement through POST /internal/agg-update) changed. Writers hold the candles lock, so `id`
-- order is commit order and a reader resuming after an id misses nothing. Rows older than a few
-- minutes are pruned by the writers.
CREATE TABLE candle_updates (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    symbol       text NOT NULL,
    "interval"   text NOT NULL,
    bucket_start timestamptz NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
