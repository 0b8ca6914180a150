-- Restate the candles of the minutes that cancelled trades were in (promoted or pending), inside
-- the caller's transaction (which holds the candles lock and has marked the trades): each 1m candle
-- again from its minute's trades, each coarser candle containing one again from its 1m candles
-- (exact: a coarser candle is the roll-up of its minutes, docs/design.md §5). The cost is a
-- minute of trades and a day of 1m candles per touched (symbol, day), whatever the day holds. Days
-- and 1d buckets are the market's (the zone `market_settings` holds), the others epoch-aligned.
-- Changed candles count a revision; a candle left with no trade that may update anything goes;
-- both are logged for /stream. Returns the candles restated and removed.
WITH touched AS (
    SELECT DISTINCT symbol, date_bin('1 minute', ts, 'epoch') AS minute
    FROM unnest(%(symbols)s::text[], %(times)s::timestamptz[]) AS c(symbol, ts)
),
fresh AS (  -- the touched minutes from their trades
    SELECT t.symbol, date_bin('1 minute', t.ts, 'epoch') AS bucket_start,
           \ir parts/trade_bar.sql
    FROM touched m
    JOIN trades t ON t.symbol = m.symbol AND t.ts >= m.minute AND t.ts < m.minute + interval '1 minute'
    WHERE t.cancelled_at IS NULL AND (t.updates_high_low OR t.updates_open_close OR t.updates_volume)
    GROUP BY 1, 2
),
days AS (  -- each touched market day, from its midnight to the next (23 to 25 hours)
    SELECT DISTINCT symbol, date_trunc('day', minute, z.zone) AS day,
           ((date_trunc('day', minute, z.zone) AT TIME ZONE z.zone) + interval '1 day')
               AT TIME ZONE z.zone AS next_day
    FROM touched, (SELECT timezone AS zone FROM market_settings) z
),
minutes AS (  -- every 1m candle of the touched days, the touched minutes as they are now
    SELECT * FROM fresh
    UNION ALL
    SELECT c.symbol, c.bucket_start, c.open, c.high, c.low, c.close, c.volume,
           coalesce(c.vwap * c.volume, 0), c.trade_count, c.open_at, c.close_at
    FROM days d
    JOIN candles c ON c.symbol = d.symbol AND c."interval" = '1m'
                  AND c.bucket_start >= d.day AND c.bucket_start < d.next_day
    WHERE NOT EXISTS (SELECT FROM touched m WHERE m.symbol = c.symbol AND m.minute = c.bucket_start)
),
buckets AS (  -- every candle a cancel may change
    SELECT symbol, '1m' AS "interval", minute AS bucket_start FROM touched
    UNION
    SELECT m.symbol, w."interval",
           CASE WHEN w."interval" = '1d'
                THEN date_trunc('day', m.minute, (SELECT timezone FROM market_settings))
                ELSE date_bin(w.width, m.minute, 'epoch') END
    FROM touched m
    CROSS JOIN unnest(%(intervals)s::text[], %(widths)s::interval[]) AS w("interval", width)
),
restated AS (
    SELECT symbol, '1m' AS "interval", bucket_start, open, high, low, close, volume, notional,
           trade_count, open_at, close_at
    FROM fresh
    UNION ALL
    SELECT m.symbol, m."interval", m.bucket,
           (array_agg(m.open ORDER BY m.open_at) FILTER (WHERE m.open_at IS NOT NULL))[1],
           max(m.high), min(m.low),
           (array_agg(m.close ORDER BY m.close_at DESC) FILTER (WHERE m.close_at IS NOT NULL))[1],
           sum(m.volume), sum(m.notional), sum(m.trade_count), min(m.open_at), max(m.close_at)
    FROM (SELECT *, CASE WHEN w."interval" = '1d'
                         THEN date_trunc('day', bucket_start, (SELECT timezone FROM market_settings))
                         ELSE date_bin(w.width, bucket_start, 'epoch') END AS bucket
          FROM minutes
          CROSS JOIN unnest(%(intervals)s::text[], %(widths)s::interval[]) AS w("interval", width)
         ) m
    WHERE EXISTS (SELECT FROM buckets b WHERE b.symbol = m.symbol AND b."interval" = m."interval"
                    AND b.bucket_start = m.bucket)
    GROUP BY 1, 2, 3
),
written AS (
    INSERT INTO candles AS c
        (symbol, "interval", bucket_start, open, high, low, close, volume, vwap, trade_count,
         open_at, close_at, updated_at, revision)
    SELECT symbol, "interval", bucket_start, open, high, low, close, volume,
           notional / nullif(volume, 0), trade_count, open_at, close_at, clock_timestamp(), 1
    FROM restated
    ON CONFLICT (symbol, "interval", bucket_start) DO UPDATE
    SET open = excluded.open, high = excluded.high, low = excluded.low, close = excluded.close,
        volume = excluded.volume, vwap = excluded.vwap, trade_count = excluded.trade_count,
        open_at = excluded.open_at, close_at = excluded.close_at, updated_at = excluded.updated_at,
        revision = c.revision + 1
    RETURNING c.symbol, c."interval", c.bucket_start
),
removed AS (
    DELETE FROM candles c
    USING buckets b
    WHERE c.symbol = b.symbol AND c."interval" = b."interval" AND c.bucket_start = b.bucket_start
      AND NOT EXISTS (SELECT FROM restated r WHERE r.symbol = b.symbol
                        AND r."interval" = b."interval" AND r.bucket_start = b.bucket_start)
    RETURNING c.symbol, c."interval", c.bucket_start
),
logged AS (  -- and every touched minute, so /stocks sends its bars again (a pending trade's too)
    INSERT INTO candle_updates (symbol, "interval", bucket_start)
    SELECT * FROM written
    UNION
    SELECT * FROM removed
    UNION
    SELECT symbol, '1m', minute FROM touched
)
SELECT (SELECT count(*) FROM written), (SELECT count(*) FROM removed)
