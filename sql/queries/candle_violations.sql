-- Candles of one interval in [start, end) that break the OHLC invariants: the extremes bound open
-- and close; open and close, high and low are set together, and a bar with an open has extremes;
-- volume, trade count and VWAP go together; and a bar counts at least one trade somewhere (a
-- field is NULL when no trade of the bucket may update it, docs/design.md §5).
SELECT symbol, bucket_start, open, high, low, close, volume, trade_count
FROM candles
WHERE "interval" = %(interval)s
  AND bucket_start >= %(start)s AND bucket_start < %(end)s
  AND ((open IS NULL OR low <= least(open, close) AND greatest(open, close) <= high)
       AND (open IS NULL) = (close IS NULL) AND (high IS NULL) = (low IS NULL)
       AND (open IS NULL OR high IS NOT NULL)
       AND (trade_count = 0) = (volume = 0) AND (trade_count = 0) = (vwap IS NULL)
       AND trade_count >= 0 AND (high IS NOT NULL OR trade_count >= 1)) IS NOT TRUE
ORDER BY symbol, bucket_start
