-- The /stream events after a cursor: accepted trades by acceptance order (`seq`, promoted or still
-- in the inbox, resends left out) and candle changes by `id`, each optionally limited to symbols.
-- One statement, one snapshot: a trade being promoted is seen exactly once.
--
-- Both are taken %(batch)s at a time in order from an index (each table's `seq`, the change log's
-- `id`), and what the reader does not want (resends, other symbols, whole days recomputed) is left
-- out afterwards, a probe per row: a reader far behind reads as fast as one at the head, and its
-- cursor moves past what it does not want. Three rows come first and say how far each part looked
-- and what is kept: `trades_scanned` (the last `seq` looked at, and how many rows: %(batch)s means
-- more may follow), `candles_scanned` (the same for change ids) and `candles_kept` (the oldest
-- change id still in the log: older ones were pruned).
WITH trade_candidates AS MATERIALIZED (
    SELECT *
    FROM (
        (SELECT seq, symbol, ts, price, volume, source, event_id, conditions, cancelled_at,
                true AS promoted
         FROM trades
         WHERE %(want_trades)s AND seq > %(after_trade)s
         ORDER BY seq LIMIT %(batch)s)
        UNION ALL
        (SELECT seq, symbol, ts, price, volume, source, event_id, conditions, cancelled_at,
                false
         FROM trade_inbox
         WHERE %(want_trades)s AND seq > %(after_trade)s
         ORDER BY seq LIMIT %(batch)s)
    ) both_tables
    ORDER BY seq
    LIMIT %(batch)s
),
candle_candidates AS MATERIALIZED (
    SELECT id, symbol, "interval", bucket_start, whole_day
    FROM candle_updates
    WHERE %(want_candles)s AND id > %(after_candle)s
    ORDER BY id
    LIMIT %(batch)s
)
SELECT kind, id, symbol, data
FROM (
    SELECT 'trades_scanned' AS kind, max(seq) AS id, NULL AS symbol, count(*)::text AS data
    FROM trade_candidates
    UNION ALL
    SELECT 'candles_scanned', max(id), NULL, count(*)::text
    FROM candle_candidates
    UNION ALL
    SELECT 'candles_kept', CASE WHEN %(want_candles)s THEN (SELECT min(id) FROM candle_updates) END,
           NULL, NULL
    UNION ALL
    (SELECT 'trade', seq, symbol, json_strip_nulls(json_build_object(  -- conditions only if any
                'symbol', symbol, 'ts', ts, 'price', price, 'volume', volume, 'source', source,
                'event_id', event_id, 'seq', seq, 'conditions', conditions,
                'cancelled_at', cancelled_at))::text
     FROM trade_candidates c
     WHERE (%(symbols)s::text[] IS NULL OR symbol = ANY(%(symbols)s::text[]))
       AND (promoted OR (
            NOT EXISTS (SELECT FROM trades t WHERE t.source = c.source AND t.event_id = c.event_id)
            -- `j.seq - c.seq < 0`, not `j.seq < c.seq`: no index on seq can serve it, so the
            -- probe is one lookup in the event_id hash index whatever the statistics (without
            -- them, a fast-grown inbox got a primary-key range per probe: 1.4 s a read).
            AND NOT EXISTS (SELECT FROM trade_inbox j
                            WHERE j.source = c.source AND j.event_id = c.event_id
                              AND j.seq - c.seq < 0)))
     ORDER BY seq)
    UNION ALL
    (SELECT 'candle', u.id, u.symbol, json_build_object(
                'symbol', u.symbol, 'interval', u."interval",
                'bucket_start', to_char(u.bucket_start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                'open', c.open, 'high', c.high, 'low', c.low, 'close', c.close, 'volume', c.volume,
                'vwap', c.vwap, 'trade_count', coalesce(c.trade_count, 0),
                'revision', c.revision)::text
     FROM candle_candidates u
     LEFT JOIN candles c USING (symbol, "interval", bucket_start)  -- gone: every trade cancelled
     WHERE NOT u.whole_day
       AND (%(symbols)s::text[] IS NULL OR u.symbol = ANY(%(symbols)s::text[]))
     ORDER BY u.id)
) e
ORDER BY CASE kind WHEN 'trades_scanned' THEN 0 WHEN 'candles_scanned' THEN 1
                   WHEN 'candles_kept' THEN 2 WHEN 'trade' THEN 3 ELSE 4 END,
         id
