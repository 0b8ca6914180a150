-- The /stream events after a cursor: accepted trades by acceptance order (`seq`, promoted or still
-- in the inbox, resends left out) and candle changes by `id`, each optionally limited to symbols.
-- One statement, one snapshot: a trade being promoted is seen exactly once.
--
-- Trades are taken %(batch)s at a time in `seq` order from each table's `seq` index, and the
-- resends and other symbols among them left out afterwards, a probe per row: a reader far behind
-- a large inbox reads as fast as one at the head. A `scanned` row says the last `seq` looked at
-- (the next read starts after it) and how many rows were: %(batch)s means more may follow.
WITH candidates AS MATERIALIZED (
    SELECT *
    FROM (
        (SELECT seq, symbol, ts, price, volume, source, event_id, true AS promoted
         FROM trades
         WHERE %(want_trades)s AND seq > %(after_trade)s
         ORDER BY seq LIMIT %(batch)s)
        UNION ALL
        (SELECT seq, symbol, ts, price, volume, source, event_id, false
         FROM trade_inbox
         WHERE %(want_trades)s AND seq > %(after_trade)s
         ORDER BY seq LIMIT %(batch)s)
    ) both_tables
    ORDER BY seq
    LIMIT %(batch)s
)
SELECT kind, id, symbol, data
FROM (
    SELECT 'scanned' AS kind, max(seq) AS id, NULL AS symbol, count(*)::text AS data
    FROM candidates
    UNION ALL
    (SELECT 'trade', seq, symbol, json_build_object(
                'symbol', symbol, 'ts', ts, 'price', price, 'volume', volume, 'source', source,
                'event_id', event_id, 'seq', seq)::text
     FROM candidates c
     WHERE (%(symbols)s::text[] IS NULL OR symbol = ANY(%(symbols)s::text[]))
       AND (promoted OR (
            NOT EXISTS (SELECT FROM trades t WHERE t.source = c.source AND t.event_id = c.event_id)
            AND NOT EXISTS (SELECT FROM trade_inbox j
                            WHERE j.source = c.source AND j.event_id = c.event_id AND j.seq < c.seq)))
     ORDER BY seq)
    UNION ALL
    (SELECT 'candle', u.id, u.symbol, json_build_object(
                'symbol', c.symbol, 'interval', c."interval",
                'bucket_start', to_char(c.bucket_start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                'open', c.open, 'high', c.high, 'low', c.low, 'close', c.close, 'volume', c.volume,
                'vwap', c.vwap, 'trade_count', c.trade_count)::text
     FROM candle_updates u
     JOIN candles c USING (symbol, "interval", bucket_start)
     WHERE %(want_candles)s AND u.id > %(after_candle)s AND NOT u.whole_day
       AND (%(symbols)s::text[] IS NULL OR u.symbol = ANY(%(symbols)s::text[]))
     ORDER BY u.id
     LIMIT %(batch)s)
) e
ORDER BY CASE kind WHEN 'scanned' THEN 0 WHEN 'trade' THEN 1 ELSE 2 END, id
