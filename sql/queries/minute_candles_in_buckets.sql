-- The 1m candles inside the given (symbol, [start, stop)) buckets of a coarser interval: the input
-- of a roll-up.
SELECT c.symbol, c.bucket_start, c.open, c.high, c.low, c.close, c.volume, c.vwap, c.trade_count
FROM unnest(%(symbol)s::text[], %(start)s::timestamptz[], %(stop)s::timestamptz[])
    AS b(symbol, start, stop)
JOIN candles c
  ON c.symbol = b.symbol AND c."interval" = '1m'
 AND c.bucket_start >= b.start AND c.bucket_start < b.stop
