-- Candles of one interval computed by PostgreSQL alone over the trades in [start, end), of one
-- symbol or of all when %(symbol)s is null: the independent reference the tests hold the Polars
-- path to, and the benchmarks' SQL baseline. Each field counts the trades its sale conditions let
-- update it; a bucket whose trades may update nothing has no candle. Cancelled trades count
-- nowhere. Buckets of %(width)s from the epoch; for %(interval)s '1d' the market's days (in the
-- zone `market_settings` holds).
SELECT symbol,
       CASE WHEN %(interval)s = '1d'
            THEN date_trunc('day', ts, (SELECT timezone FROM market_settings))
            ELSE date_bin(%(width)s, ts, 'epoch') END AS bucket_start,
       (array_agg(price ORDER BY ts, seq) FILTER (WHERE updates_open_close))[1] AS open,
       max(price) FILTER (WHERE updates_high_low) AS high,
       min(price) FILTER (WHERE updates_high_low) AS low,
       (array_agg(price ORDER BY ts DESC, seq DESC) FILTER (WHERE updates_open_close))[1] AS close,
       coalesce(sum(volume) FILTER (WHERE updates_volume), 0) AS volume,
       sum(price * volume) FILTER (WHERE updates_volume)
           / sum(volume) FILTER (WHERE updates_volume) AS vwap,
       count(*) FILTER (WHERE updates_volume) AS trade_count,
       min(ts) FILTER (WHERE updates_open_close) AS open_at,
       max(ts) FILTER (WHERE updates_open_close) AS close_at
FROM trades
WHERE ts >= %(start)s AND ts < %(end)s AND (%(symbol)s::text IS NULL OR symbol = %(symbol)s)
  AND (updates_high_low OR updates_open_close OR updates_volume) AND cancelled_at IS NULL
GROUP BY 1, 2
ORDER BY 1, 2
