-- What the market's day looks like for each chosen symbol (all registered ones when %(symbols)s is
-- null), from the stored candles merged with the trades still pending in the inbox, as
-- `live_candles` merges them (docs/design.md §5): one row per symbol with, as JSON in Polygon's
-- field names (null when there is none),
--   day:  the bar of the market day [%(day_start)s, %(day_end)s)                 (when %(day)s)
--   prev: the bar of the latest market day before it that has one              (when %(prev)s)
--   min:  the latest minute bar of that day                                     (when %(minute)s)
--   last: the latest trade, whatever its conditions, cancelled ones left out    (when %(last)s)
-- A part not asked for costs nothing (its filter is false once per statement). Everything is
-- read for all the chosen symbols at once: candles by their primary key, one probe per symbol
-- and part, the inbox by one range scan of its BRIN index on `ts`, so 2,000 symbols cost one
-- statement, not 2,000.
WITH zone AS MATERIALIZED (SELECT timezone AS zone FROM market_settings),
chosen AS MATERIALIZED (
    SELECT symbol FROM symbols
    WHERE %(symbols)s::text[] IS NULL OR symbol = ANY(%(symbols)s::text[])
),
stored_prev AS MATERIALIZED (  -- each symbol's latest stored day before the asked one
    SELECT s.symbol, c.bucket_start
    FROM chosen s CROSS JOIN LATERAL (
        SELECT bucket_start FROM candles
        WHERE symbol = s.symbol AND "interval" = '1d' AND bucket_start < %(day_start)s
        ORDER BY bucket_start DESC LIMIT 1
    ) c
    WHERE %(prev)s
),
-- The inbox range read: the asked day; from the earliest stored previous day when the previous
-- day is asked (a pending trade before a symbol's stored previous day cannot make a later day,
-- nor be its latest trade), from the start when a chosen symbol has no stored day before; on to
-- the end when the latest trade is asked.
bounds AS (
    SELECT CASE WHEN NOT %(prev)s THEN %(day_start)s::timestamptz
                WHEN (SELECT count(*) FROM stored_prev) < (SELECT count(*) FROM chosen)
                    THEN '-infinity'::timestamptz
                ELSE least((SELECT min(bucket_start) FROM stored_prev), %(day_start)s) END AS since,
           CASE WHEN %(last)s THEN 'infinity'::timestamptz
                ELSE %(day_end)s::timestamptz END AS until
),
pending AS MATERIALIZED (  -- accepted, not promoted, not cancelled: each trade's first version
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
stored_minute AS (  -- each symbol's latest stored minute of the asked day
    SELECT s.symbol, c.bucket_start
    FROM chosen s CROSS JOIN LATERAL (
        SELECT bucket_start FROM candles
        WHERE symbol = s.symbol AND "interval" = '1m'
          AND bucket_start >= %(day_start)s AND bucket_start < %(day_end)s
        ORDER BY bucket_start DESC LIMIT 1
    ) c
    WHERE %(minute)s
),
-- The buckets asked for: a symbol's previous day and latest minute are the later of the stored
-- one and the one its pending trades make (greatest leaves NULLs out).
wanted AS (
    SELECT symbol, 'day' AS part, '1d' AS "interval",
           %(day_start)s::timestamptz AS bucket_start, %(day_end)s::timestamptz AS bucket_end
    FROM chosen
    WHERE %(day)s
    UNION ALL
    SELECT d.symbol, 'prev', '1d', d.start,
           ((d.start AT TIME ZONE z.zone) + interval '1 day') AT TIME ZONE z.zone
    FROM zone z, (
        SELECT s.symbol, greatest(sp.bucket_start, pp.start) AS start
        FROM chosen s
        LEFT JOIN stored_prev sp USING (symbol)
        LEFT JOIN (SELECT p.symbol, max(date_trunc('day', p.ts, z.zone)) AS start
                   FROM pending p, zone z
                   WHERE p.counts AND p.ts < %(day_start)s
                   GROUP BY p.symbol) pp USING (symbol)
        WHERE %(prev)s
    ) d
    WHERE d.start IS NOT NULL
    UNION ALL
    SELECT m.symbol, 'min', '1m', m.start, m.start + interval '1 minute'
    FROM (
        SELECT s.symbol, greatest(sm.bucket_start, pm.start) AS start
        FROM chosen s
        LEFT JOIN stored_minute sm USING (symbol)
        LEFT JOIN (SELECT symbol, max(date_bin('1 minute', ts, 'epoch')) AS start
                   FROM pending
                   WHERE counts AND ts >= %(day_start)s AND ts < %(day_end)s
                   GROUP BY symbol) pm USING (symbol)
        WHERE %(minute)s
    ) m
    WHERE m.start IS NOT NULL
),
pending_bars AS (
    SELECT w.symbol, w.part,
           (array_agg(p.price ORDER BY p.ts, p.seq) FILTER (WHERE p.updates_open_close))[1]
               AS open,
           max(p.price) FILTER (WHERE p.updates_high_low) AS high,
           min(p.price) FILTER (WHERE p.updates_high_low) AS low,
           (array_agg(p.price ORDER BY p.ts DESC, p.seq DESC)
               FILTER (WHERE p.updates_open_close))[1] AS close,
           coalesce(sum(p.volume) FILTER (WHERE p.updates_volume), 0) AS volume,
           coalesce(sum(p.price * p.volume) FILTER (WHERE p.updates_volume), 0) AS notional,
           count(*) FILTER (WHERE p.updates_volume) AS trade_count,
           min(p.ts) FILTER (WHERE p.updates_open_close) AS open_at,
           max(p.ts) FILTER (WHERE p.updates_open_close) AS close_at
    FROM wanted w
    JOIN pending p ON p.symbol = w.symbol AND p.ts >= w.bucket_start AND p.ts < w.bucket_end
    WHERE p.counts
    GROUP BY w.symbol, w.part
),
bars AS (  -- the stored candle and the pending trades of each bucket, merged
    SELECT w.symbol, w.part, json_build_object(
               'o', CASE WHEN c.open_at IS NULL OR p.open_at < c.open_at
                         THEN coalesce(p.open, c.open) ELSE c.open END,
               'h', greatest(c.high, p.high),
               'l', least(c.low, p.low),
               'c', CASE WHEN c.close_at IS NULL OR p.close_at >= c.close_at
                         THEN coalesce(p.close, c.close) ELSE c.close END,
               'v', coalesce(c.volume, 0) + coalesce(p.volume, 0),
               'vw', (coalesce(c.vwap * c.volume, 0) + coalesce(p.notional, 0))
                     / nullif(coalesce(c.volume, 0) + coalesce(p.volume, 0), 0),
               'n', coalesce(c.trade_count, 0) + coalesce(p.trade_count, 0),
               't', (extract(epoch FROM w.bucket_start) * 1000)::int8
           ) AS bar
    FROM wanted w
    LEFT JOIN LATERAL (  -- a probe of the primary key, whatever the planner guesses of `wanted`
        SELECT * FROM candles
        WHERE symbol = w.symbol AND "interval" = w."interval" AND bucket_start = w.bucket_start
        LIMIT 1
    ) c ON true
    LEFT JOIN pending_bars p ON p.symbol = w.symbol AND p.part = w.part
    WHERE c.symbol IS NOT NULL OR p.symbol IS NOT NULL
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
