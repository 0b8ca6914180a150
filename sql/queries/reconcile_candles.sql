-- Per market day (in the zone `market_settings` holds) and symbol in [start, end): the trade count and volume of one interval's candles
-- against the canonical trades that may count in volume (their sale conditions allow it). Returns
-- only the days that disagree (counts exactly, volumes beyond floating-point summation noise).
WITH traded AS (
    SELECT symbol, date_trunc('day', ts, (SELECT timezone FROM market_settings)) AS day,
           count(*) AS trades, sum(volume) AS volume
    FROM trades
    WHERE ts >= %(start)s AND ts < %(end)s AND updates_volume AND cancelled_at IS NULL
    GROUP BY 1, 2
),
candled AS (
    SELECT symbol, date_trunc('day', bucket_start, (SELECT timezone FROM market_settings)) AS day,
           sum(trade_count) AS trades, sum(volume) AS volume
    FROM candles
    WHERE "interval" = %(interval)s AND bucket_start >= %(start)s AND bucket_start < %(end)s
    GROUP BY 1, 2
)
SELECT symbol, day, coalesce(t.trades, 0) AS trades, coalesce(c.trades, 0) AS candle_trades,
       coalesce(t.volume, 0) AS volume, coalesce(c.volume, 0) AS candle_volume
FROM traded t
FULL JOIN candled c USING (symbol, day)
WHERE coalesce(t.trades, 0) <> coalesce(c.trades, 0)
   OR abs(coalesce(t.volume, 0) - coalesce(c.volume, 0)) > 1e-9 * coalesce(t.volume, 0)
ORDER BY symbol, day
