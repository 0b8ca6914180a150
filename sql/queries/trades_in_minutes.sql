-- The canonical trades inside the given (symbol, 1-minute bucket) pairs: what a micro-batch
-- recomputes after promoting trades into those buckets. One index range scan per pair: as a plain
-- join the planner cannot estimate the per-pair ranges and hashes the whole table instead
-- (OFFSET 0 keeps the lateral subquery from being flattened into such a join).
SELECT t.symbol, (extract(epoch FROM t.ts) * 1000000)::int8 AS ts, t.seq, t.price, t.volume
FROM unnest(%(symbol)s::text[], %(minute)s::timestamptz[]) AS b(symbol, minute)
CROSS JOIN LATERAL (
    SELECT symbol, ts, seq, price, volume
    FROM trades
    WHERE symbol = b.symbol AND ts >= b.minute AND ts < b.minute + interval '1 minute'
    OFFSET 0
) t
