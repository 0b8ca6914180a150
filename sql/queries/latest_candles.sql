-- GET /candles/latest: every registered symbol's latest %(interval)s candle (the latest bucket
-- that holds one), materialized merged with pending trades, with when its bucket ends and whether
-- pending trades are in it (the API works out `is_final` at each answer from these, so an answer
-- kept in memory stays right as the clock passes the bucket's end). The latest stored candle says
-- from where to merge: a pending trade can add a later bucket or change that one, and a cancel
-- (applied to stored candles at once) never leaves it without trades but by deleting it.
SELECT s.symbol,
       to_char(l.bucket_start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS bucket_start,
       l.open, l.high, l.low, l.close, l.volume, l.vwap, l.trade_count, l.revision,
       l.pending = 0 AND e.bucket_end <= now() AS is_final,  -- as of this read
       l.pending > 0 AS pending,
       e.bucket_end
FROM symbols s
CROSS JOIN (SELECT timezone AS zone FROM market_settings) z
CROSS JOIN LATERAL (
    SELECT max(c.bucket_start) AS bucket_start
    FROM candles c
    WHERE c.symbol = s.symbol AND c."interval" = %(interval)s
) stored
CROSS JOIN LATERAL (
    SELECT *
    FROM live_candles(
        s.symbol, %(interval)s, %(width)s, coalesce(stored.bucket_start, '-infinity'),
        'infinity', NULL
    )
    ORDER BY bucket_start DESC
    LIMIT 1
) l
CROSS JOIN LATERAL (
    SELECT CASE WHEN %(interval)s = '1d'
                THEN ((l.bucket_start AT TIME ZONE z.zone) + interval '1 day') AT TIME ZONE z.zone
                ELSE l.bucket_start + %(width)s END AS bucket_end
) e
ORDER BY s.symbol
