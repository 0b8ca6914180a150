-- One page of GET /candles: live candles (materialized merged with pending trades) from
-- %(start)s, at most %(limit)s + 1 (the extra one tells that another page follows). A bucket is
-- final once it has closed (a 1d bucket at the next market midnight, in the zone
-- `market_settings` holds) and no pending trade would still change it.
SELECT to_char(bucket_start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS bucket_start,
       open, high, low, close, volume, vwap, trade_count, revision,
       pending = 0
           AND CASE WHEN %(interval)s = '1d'
                    THEN ((bucket_start AT TIME ZONE z.zone) + interval '1 day') AT TIME ZONE z.zone
                    ELSE bucket_start + %(width)s END <= now() AS is_final
FROM live_candles(%(symbol)s, %(interval)s, %(width)s, %(start)s, %(end)s, %(limit)s + 1),
     (SELECT timezone AS zone FROM market_settings) z
