-- Candles of one interval computed by PostgreSQL alone over the trades in [start, end), of one
-- symbol or of all when %(symbol)s is null: the independent reference the tests hold the Polars
-- path to, and the benchmarks' SQL baseline.
SELECT symbol,
       date_bin(%(width)s, ts, 'epoch') AS bucket_start,
       (array_agg(price ORDER BY ts, seq))[1] AS open,
       max(price) AS high,
       min(price) AS low,
       (array_agg(price ORDER BY ts DESC, seq DESC))[1] AS close,
       sum(volume) AS volume,
       sum(price * volume) / sum(volume) AS vwap,
       count(*) AS trade_count,
       min(ts) AS open_at,
       max(ts) AS close_at
FROM trades
WHERE ts >= %(start)s AND ts < %(end)s AND (%(symbol)s::text IS NULL OR symbol = %(symbol)s)
GROUP BY 1, 2
ORDER BY 1, 2
