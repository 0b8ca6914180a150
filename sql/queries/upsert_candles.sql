-- Move the candles staged in `candles_stage` (one interval, times as epoch microseconds) into
-- `candles`; a bucket that exists is replaced. Consumes the stage.
WITH staged AS (
    DELETE FROM candles_stage
    RETURNING symbol, bucket_us, open, high, low, close, volume, vwap, trade_count, open_us,
              close_us
)
INSERT INTO candles AS c
    (symbol, "interval", bucket_start, open, high, low, close, volume, vwap, trade_count,
     open_at, close_at, updated_at)
SELECT symbol, %(interval)s, 'epoch'::timestamptz + bucket_us * interval '1 microsecond',
       open, high, low, close, volume, vwap, trade_count,
       'epoch'::timestamptz + open_us * interval '1 microsecond',
       'epoch'::timestamptz + close_us * interval '1 microsecond',
       clock_timestamp()
FROM staged
ON CONFLICT (symbol, "interval", bucket_start) DO UPDATE
SET open = excluded.open, high = excluded.high, low = excluded.low, close = excluded.close,
    volume = excluded.volume, vwap = excluded.vwap, trade_count = excluded.trade_count,
    open_at = excluded.open_at, close_at = excluded.close_at, updated_at = excluded.updated_at
