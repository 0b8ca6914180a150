-- The canonical trades inside the given (symbol, 1-minute bucket) pairs: what a micro-batch
-- recomputes after promoting trades into those buckets.
SELECT t.symbol, t.ts, t.seq, t.price, t.volume
FROM unnest(%(symbol)s::text[], %(minute)s::timestamptz[]) AS b(symbol, minute)
JOIN trades t
  ON t.symbol = b.symbol AND t.ts >= b.minute AND t.ts < b.minute + interval '1 minute'
