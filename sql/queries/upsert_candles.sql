-- Write computed candles of one interval; a bucket that exists is replaced. Bucket starts arrive
-- as epoch microseconds (UTC), the unit the Polars computation works in.
INSERT INTO candles AS c
    (symbol, "interval", bucket_start, open, high, low, close, volume, vwap, trade_count, updated_at)
SELECT symbol, %(interval)s, 'epoch'::timestamptz + bucket_us * interval '1 microsecond',
       open, high, low, close, volume, vwap, trade_count, clock_timestamp()
FROM unnest(%(symbol)s::text[], %(bucket_start)s::int8[], %(open)s::float8[], %(high)s::float8[],
            %(low)s::float8[], %(close)s::float8[], %(volume)s::float8[], %(vwap)s::float8[],
            %(trade_count)s::int8[])
    AS n(symbol, bucket_us, open, high, low, close, volume, vwap, trade_count)
ON CONFLICT (symbol, "interval", bucket_start) DO UPDATE
SET open = excluded.open, high = excluded.high, low = excluded.low, close = excluded.close,
    volume = excluded.volume, vwap = excluded.vwap, trade_count = excluded.trade_count,
    updated_at = excluded.updated_at
