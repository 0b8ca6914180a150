-- One page of GET /candles, built by PostgreSQL as JSON: live candles (materialized merged with
-- pending trades) from %(start)s, plus the start of the page's last bucket and whether more follow.
-- A bucket is final once it has closed and no pending trade would still change it.
WITH page AS (
    SELECT *, row_number() OVER (ORDER BY bucket_start) AS n
    FROM live_candles(%(symbol)s, %(interval)s, %(width)s, %(start)s, %(end)s, %(limit)s + 1)
)
SELECT coalesce(
           json_agg(json_build_object(
               'bucket_start',
               to_char(bucket_start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
               'open', open, 'high', high, 'low', low, 'close', close,
               'volume', volume, 'vwap', vwap, 'trade_count', trade_count,
               'is_final', pending = 0 AND bucket_start + %(width)s <= now()
           ) ORDER BY bucket_start) FILTER (WHERE n <= %(limit)s),
           '[]'
       )::text AS candles,
       max(bucket_start) FILTER (WHERE n <= %(limit)s) AS last_bucket,
       count(*) > %(limit)s AS more
FROM page
