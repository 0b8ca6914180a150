-- Per UTC day and symbol in [start, end): the trade count and volume of one interval's candles
-- against the canonical trades. Returns only the days that disagree (counts exactly, volumes
-- beyond floating-point summation noise).
WITH traded AS (
    SELECT symbol, date_bin('1 day', ts, 'epoch') AS day, count(*) AS trades, sum(volume) AS volume
    FROM trades
    WHERE ts >= %(start)s AND ts < %(end)s
    GROUP BY 1, 2
),
candled AS (
    SELECT symbol, date_bin('1 day', bucket_start, 'epoch') AS day, sum(trade_count) AS trades,
           sum(volume) AS volume
    FROM candles
    WHERE "interval" = %(interval)s AND bucket_start >= %(start)s AND bucket_start < %(end)s
    GROUP BY 1, 2
)
SELECT symbol, day, t.trades AS trades, c.trades AS candle_trades, t.volume AS volume,
       c.volume AS candle_volume
FROM traded t
FULL JOIN candled c USING (symbol, day)
WHERE t.trades IS DISTINCT FROM c.trades
   OR abs(t.volume - c.volume) > 1e-9 * t.volume
ORDER BY symbol, day
