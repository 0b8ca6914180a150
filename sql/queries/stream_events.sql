-- The /stream events after a cursor: accepted trades by acceptance order (`seq`, promoted or still
-- in the inbox, resends left out) and candle changes by `id`, each optionally limited to symbols.
-- One statement, one snapshot: a trade being promoted is seen exactly once.
SELECT 'trade' AS kind, seq AS id, symbol, json_build_object(
           'symbol', symbol, 'ts', ts, 'price', price, 'volume', volume, 'source', source,
           'event_id', event_id, 'seq', seq)::text AS data
FROM (
    SELECT seq, symbol, ts, price, volume, source, event_id
    FROM trades
    WHERE seq > %(after_trade)s
    UNION ALL
    SELECT seq, symbol, ts, price, volume, source, event_id
    FROM trade_inbox i
    WHERE seq > %(after_trade)s
      AND NOT EXISTS (SELECT FROM trades t WHERE t.source = i.source AND t.event_id = i.event_id)
      AND NOT EXISTS (SELECT FROM trade_inbox j
                      WHERE j.source = i.source AND j.event_id = i.event_id AND j.seq < i.seq)
) accepted
WHERE %(want_trades)s AND (%(symbols)s::text[] IS NULL OR symbol = ANY(%(symbols)s::text[]))
UNION ALL
SELECT 'candle', u.id, u.symbol, json_build_object(
           'symbol', c.symbol, 'interval', c."interval",
           'bucket_start', to_char(c.bucket_start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
           'open', c.open, 'high', c.high, 'low', c.low, 'close', c.close, 'volume', c.volume,
           'vwap', c.vwap, 'trade_count', c.trade_count)::text
FROM candle_updates u
JOIN candles c USING (symbol, "interval", bucket_start)
WHERE %(want_candles)s AND u.id > %(after_candle)s AND NOT u.whole_day
  AND (%(symbols)s::text[] IS NULL OR u.symbol = ANY(%(symbols)s::text[]))
ORDER BY 1 DESC, 2
LIMIT 2000
