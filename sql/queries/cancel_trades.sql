-- Cancel trades by identity, inside the caller's transaction (which holds the candles lock): a
-- promoted trade is marked in `trades`, a pending one in every inbox row of its identity (so the
-- first accepted copy, which promotion will keep, carries the mark). One row per item asked, in
-- the order asked: its outcome (`cancelled`, `already_cancelled`: before, or by an earlier item,
-- `unknown`) and, for a trade it cancelled, its symbol and time (its candles are restated next).
WITH items AS (
    SELECT source, event_id, n
    FROM unnest(%(sources)s::text[], %(event_ids)s::text[]) WITH ORDINALITY AS a(source, event_id, n)
),
asked AS (SELECT source, event_id, min(n) AS n FROM items GROUP BY 1, 2),
known AS (
    SELECT a.n, a.source, a.event_id, t.source IS NOT NULL AS promoted,
           coalesce(t.cancelled_at IS NOT NULL, p.cancelled) AS was_cancelled,
           coalesce(t.symbol, p.symbol) AS symbol, coalesce(t.ts, p.ts) AS ts
    FROM asked a
    LEFT JOIN trades t ON t.source = a.source AND t.event_id = a.event_id
    LEFT JOIN LATERAL (  -- the first accepted copy still pending
        SELECT i.symbol, i.ts,
               EXISTS (SELECT FROM trade_inbox j
                       WHERE j.source = a.source AND j.event_id = a.event_id
                         AND j.cancelled_at IS NOT NULL) AS cancelled
        FROM trade_inbox i
        WHERE i.source = a.source AND i.event_id = a.event_id
        ORDER BY i.seq
        LIMIT 1
    ) p ON true
),
promoted AS (
    UPDATE trades t SET cancelled_at = %(at)s
    FROM known k
    WHERE t.source = k.source AND t.event_id = k.event_id AND NOT k.was_cancelled
),
pending AS (
    UPDATE trade_inbox i SET cancelled_at = %(at)s
    FROM known k
    WHERE i.source = k.source AND i.event_id = k.event_id AND NOT k.promoted
      AND NOT k.was_cancelled
),
outcomes AS (
    SELECT n, source, event_id, symbol, ts,
           CASE WHEN symbol IS NULL THEN 'unknown'
                WHEN was_cancelled THEN 'already_cancelled'
                ELSE 'cancelled' END AS outcome
    FROM known
)
SELECT i.source, i.event_id,
       CASE WHEN i.n > o.n AND o.outcome = 'cancelled' THEN 'already_cancelled'
            ELSE o.outcome END,
       CASE WHEN i.n = o.n AND o.outcome = 'cancelled' THEN o.symbol END,
       CASE WHEN i.n = o.n AND o.outcome = 'cancelled' THEN o.ts END
FROM items i
JOIN outcomes o USING (source, event_id)
ORDER BY i.n
