-- What the market's day looks like for each chosen symbol (all registered ones when %(symbols)s is
-- null), from the stored candles merged with the trades still pending in the inbox, as
-- `live_candles` merges them (docs/design.md §5, §11): one row per symbol with, as JSON in
-- Polygon's field names (null when there is none),
--   day:  the bar of the market day [%(day_start)s, %(day_end)s)                 (when %(day)s)
--   prev: the bar of the latest market day before it that has one              (when %(prev)s)
--   min:  the latest minute bar of that day                                     (when %(minute)s)
--   last: the latest trade, whatever its conditions, cancelled ones left out    (when %(last)s)
-- A part not asked for costs nothing (its filter is false once per statement). Everything is
-- read for all the chosen symbols at once: each stored candle by one probe of the primary key,
-- the inbox by one range scan of its BRIN index on `ts`, so 2,000 symbols cost one statement,
-- not 2,000.
WITH zone AS MATERIALIZED (SELECT timezone AS zone FROM market_settings),
chosen AS MATERIALIZED (
    SELECT symbol FROM symbols
    WHERE %(symbols)s::text[] IS NULL OR symbol = ANY(%(symbols)s::text[])
),
-- Each symbol's stored candles that may be asked for: the asked day, the latest day before it,
-- the latest minute of the asked day (whole rows, so none is read twice).
stored AS MATERIALIZED (
    SELECT s.symbol, 'day' AS part, c.candle
    FROM chosen s CROSS JOIN LATERAL (
        SELECT c AS candle FROM candles c
        WHERE c.symbol = s.symbol AND c."interval" = '1d' AND c.bucket_start = %(day_start)s
        LIMIT 1  -- a probe per symbol: without it the planner may read every candle instead
    ) c
    WHERE %(day)s
    UNION ALL
    SELECT s.symbol, 'prev', c.candle
    FROM chosen s CROSS JOIN LATERAL (
        SELECT c AS candle FROM candles c
        WHERE c.symbol = s.symbol AND c."interval" = '1d' AND c.bucket_start < %(day_start)s
        ORDER BY c.bucket_start DESC LIMIT 1
    ) c
    WHERE %(prev)s
    UNION ALL
    SELECT s.symbol, 'min', c.candle
    FROM chosen s CROSS JOIN LATERAL (
        SELECT c AS candle FROM candles c
        WHERE c.symbol = s.symbol AND c."interval" = '1m'
          AND c.bucket_start >= %(day_start)s AND c.bucket_start < %(day_end)s
        ORDER BY c.bucket_start DESC LIMIT 1
    ) c
    WHERE %(minute)s
),
-- The inbox range read: the asked day; from the earliest stored previous day when the previous
-- day is asked (a pending trade before a symbol's stored previous day cannot make a later day,
-- nor be its latest trade), from the start when a chosen symbol has no stored day before; on to
-- the end when the latest trade is asked.
bounds AS (
    SELECT CASE WHEN NOT %(prev)s THEN %(day_start)s::timestamptz
                WHEN (SELECT count(*) FROM stored WHERE part = 'prev')
                     < (SELECT count(*) FROM chosen) THEN '-infinity'::timestamptz
                ELSE least((SELECT min((candle).bucket_start) FROM stored WHERE part = 'prev'),
                           %(day_start)s) END AS since,
           CASE WHEN %(last)s THEN 'infinity'::timestamptz
                ELSE %(day_end)s::timestamptz END AS until
),
pending AS MATERIALIZED (  -- accepted, not promoted, not cancelled: each trade's first copy (§6)
    SELECT i.symbol, i.ts, i.seq, i.price, i.volume, i.event_id, i.conditions,
           i.updates_high_low, i.updates_open_close, i.updates_volume,
           i.updates_high_low OR i.updates_open_close OR i.updates_volume AS counts
    FROM trade_inbox i, bounds b
    WHERE i.ts >= b.since AND i.ts < b.until
      AND i.symbol IN (SELECT symbol FROM chosen)
      AND i.cancelled_at IS NULL
      AND NOT EXISTS (SELECT FROM trades t WHERE t.source = i.source AND t.event_id = i.event_id)
      AND NOT EXISTS (SELECT FROM trade_inbox j
                      WHERE j.event_id = i.event_id AND j.source = i.source AND j.seq < i.seq)
),
-- The buckets asked for, with their stored candle if any: a symbol's previous day and latest
-- minute are the later of the stored one and the one its pending trades make (greatest leaves
-- NULLs out); a bucket later than the stored one has no stored candle.
wanted AS (
    SELECT s.symbol, 'day' AS part, %(day_start)s::timestamptz AS bucket_start,
           %(day_end)s::timestamptz AS bucket_end, d.candle
    FROM chosen s LEFT JOIN stored d ON d.symbol = s.symbol AND d.part = 'day'
    WHERE %(day)s
    UNION ALL
    SELECT symbol, part, start,
           CASE part WHEN 'min' THEN start + interval '1 minute'
                     ELSE ((start AT TIME ZONE zone) + interval '1 day') AT TIME ZONE zone END,
           CASE WHEN (candle).bucket_start = start THEN candle END
    FROM zone, (
        SELECT s.symbol, k.part, st.candle,
               greatest((st.candle).bucket_start, pb.start) AS start
        FROM chosen s
        CROSS JOIN (VALUES ('prev'), ('min')) k (part)
        LEFT JOIN stored st ON st.symbol = s.symbol AND st.part = k.part
        LEFT JOIN (
            SELECT p.symbol, 'prev' AS part, max(date_trunc('day', p.ts, z.zone)) AS start
            FROM pending p, zone z
            WHERE %(prev)s AND p.counts AND p.ts < %(day_start)s
            GROUP BY p.symbol
            UNION ALL
            SELECT symbol, 'min', max(date_bin('1 minute', ts, 'epoch'))
            FROM pending
            WHERE %(minute)s AND counts AND ts >= %(day_start)s AND ts < %(day_end)s
            GROUP BY symbol
        ) pb ON pb.symbol = s.symbol AND pb.part = k.part
        WHERE (k.part = 'prev' AND %(prev)s) OR (k.part = 'min' AND %(minute)s)
    ) latest
    WHERE start IS NOT NULL
),
pending_bars AS (
    SELECT w.symbol, w.part,
           \ir parts/trade_bar.sql
    FROM wanted w
    JOIN pending p ON p.symbol = w.symbol AND p.ts >= w.bucket_start AND p.ts < w.bucket_end
    WHERE p.counts
    GROUP BY w.symbol, w.part
),
bars AS (  -- the stored candle and the pending trades of each bucket, merged
    SELECT w.symbol, w.part, json_build_object(
               'o', CASE WHEN (w.candle).open_at IS NULL OR p.open_at < (w.candle).open_at
                         THEN coalesce(p.open, (w.candle).open) ELSE (w.candle).open END,
               'h', greatest((w.candle).high, p.high),
               'l', least((w.candle).low, p.low),
               'c', CASE WHEN (w.candle).close_at IS NULL OR p.close_at >= (w.candle).close_at
                         THEN coalesce(p.close, (w.candle).close) ELSE (w.candle).close END,
               'v', coalesce((w.candle).volume, 0) + coalesce(p.volume, 0),
               'vw', (coalesce((w.candle).vwap * (w.candle).volume, 0) + coalesce(p.notional, 0))
                     / nullif(coalesce((w.candle).volume, 0) + coalesce(p.volume, 0), 0),
               'n', coalesce((w.candle).trade_count, 0) + coalesce(p.trade_count, 0),
               't', (extract(epoch FROM w.bucket_start) * 1000)::int8
           ) AS bar
    FROM wanted w
    LEFT JOIN pending_bars p ON p.symbol = w.symbol AND p.part = w.part
    WHERE (w.candle).symbol IS NOT NULL OR p.symbol IS NOT NULL
),
last_trades AS (
    SELECT DISTINCT ON (symbol) symbol, ts, seq, price, volume, event_id, conditions
    FROM (
        SELECT s.symbol, t.*
        FROM chosen s CROSS JOIN LATERAL (
            SELECT ts, seq, price, volume, event_id, conditions FROM trades
            WHERE symbol = s.symbol AND cancelled_at IS NULL
            ORDER BY ts DESC, seq DESC LIMIT 1
        ) t
        WHERE %(last)s
        UNION ALL
        SELECT symbol, ts, seq, price, volume, event_id, conditions FROM pending WHERE %(last)s
    ) latest
    ORDER BY symbol, ts DESC, seq DESC
)
SELECT s.symbol, d.bar, p.bar, m.bar,
       CASE WHEN l.symbol IS NOT NULL THEN json_build_object(
           'i', l.event_id, 'p', l.price, 's', l.volume, 'c', l.conditions, 'q', l.seq,
           't', (extract(epoch FROM l.ts) * 1000000)::int8 * 1000
       ) END
FROM chosen s
LEFT JOIN bars d ON d.symbol = s.symbol AND d.part = 'day'
LEFT JOIN bars p ON p.symbol = s.symbol AND p.part = 'prev'
LEFT JOIN bars m ON m.symbol = s.symbol AND m.part = 'min'
LEFT JOIN last_trades l ON l.symbol = s.symbol
WHERE d.symbol IS NOT NULL OR p.symbol IS NOT NULL OR m.symbol IS NOT NULL
   OR l.symbol IS NOT NULL
ORDER BY s.symbol
