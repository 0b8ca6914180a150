-- One page of GET /candles for one or several symbols, in one statement: each symbol's live
-- candles (materialized merged with pending trades) from %(start)s, at most %(limit)s + 1 per
-- symbol (an extra one tells that another page follows), by symbol then bucket. A bucket is final
-- once it has closed (a 1d bucket at the next market midnight, in the zone `market_settings`
-- holds) and no pending trade would still change it.
SELECT s.symbol,
       to_char(c.bucket_start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS bucket_start,
       c.open, c.high, c.low, c.close, c.volume, c.vwap, c.trade_count, c.revision,
       c.pending = 0
           AND CASE WHEN %(interval)s = '1d'
                    THEN ((c.bucket_start AT TIME ZONE z.zone) + interval '1 day') AT TIME ZONE z.zone
                    ELSE c.bucket_start + %(width)s END <= now() AS is_final
FROM unnest(%(symbols)s::text[]) s(symbol)
CROSS JOIN (SELECT timezone AS zone FROM market_settings) z
CROSS JOIN LATERAL live_candles(
    s.symbol, %(interval)s, %(width)s, %(start)s, %(end)s, %(limit)s + 1
) c
ORDER BY s.symbol, c.bucket_start
