-- The 1m candles inside the given (symbol, [start, stop)) buckets of a coarser interval: the input
-- of a roll-up. One primary-key range scan per bucket (see trades_in_minutes.sql for OFFSET 0).
SELECT c.symbol, (extract(epoch FROM c.bucket_start) * 1000000)::int8 AS bucket_start,
       c.open, c.high, c.low, c.close, c.volume, c.vwap, c.trade_count,
       (extract(epoch FROM c.open_at) * 1000000)::int8 AS open_at,
       (extract(epoch FROM c.close_at) * 1000000)::int8 AS close_at
FROM unnest(%(symbol)s::text[], %(start)s::timestamptz[], %(stop)s::timestamptz[])
    AS b(symbol, start, stop)
CROSS JOIN LATERAL (
    SELECT symbol, bucket_start, open, high, low, close, volume, vwap, trade_count, open_at,
           close_at
    FROM candles
    WHERE symbol = b.symbol AND "interval" = '1m'
      AND bucket_start >= b.start AND bucket_start < b.stop
    OFFSET 0
) c
