-- Candles of one interval in [start, end) that break the OHLC invariants: the extremes bound open
-- and close, and a bar has volume and at least one trade.
SELECT symbol, bucket_start, open, high, low, close, volume, trade_count
FROM candles
WHERE "interval" = %(interval)s
  AND bucket_start >= %(start)s AND bucket_start < %(end)s
  AND NOT (low <= least(open, close) AND greatest(open, close) <= high
           AND volume > 0 AND trade_count >= 1)
ORDER BY symbol, bucket_start
