-- Move the candles staged in `candles_stage` (one interval, bucket starts as epoch microseconds)
-- into `candles`; a bucket that exists is replaced. Consumes the stage.
WITH staged AS (
    DELETE FROM candles_stage
    RETURNING symbol, bucket_us, open, high, low, close, volume, vwap, trade_count
)
INSERT INTO candles AS c
    (symbol, "interval", bucket_start, open, high, low, close, volume, vwap, trade_count, updated_at)
SELECT symbol, %(interval)s, 'epoch'::timestamptz + bucket_us * interval '1 microsecond',
       open, high, low, close, volume, vwap, trade_count, clock_timestamp()
FROM staged
ON CONFLICT (symbol, "interval", bucket_start) DO UPDATE
SET open = excluded.open, high = excluded.high, low = excluded.low, close = excluded.close,
    volume = excluded.volume, vwap = excluded.vwap, trade_count = excluded.trade_count,
    updated_at = excluded.updated_at
