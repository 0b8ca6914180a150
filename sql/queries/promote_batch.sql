-- One micro-batch, in one statement inside the caller's transaction (which holds the candles lock):
-- promote the oldest pending inbox rows to canonical trades, merge them into the candles of every
-- interval and record the batch. Returns one row: the trades promoted per (symbol, market day:
-- the date in the zone `market_settings` holds), and the candles written (to be announced to
-- /stream), as arrays. 1d buckets start at the market's midnight, the others at the epoch.
--
-- The batch is every inbox row up to %(up_to_seq)s (the caller chose it); acceptance order is seq
-- order, and the first accepted (source, event_id) wins, whether its twin is in this batch or was
-- promoted long ago.
--
-- Merging is exact and costs what the batch costs, however full the bucket already is: promotion
-- takes the inbox in seq order, so every trade of a batch comes after every trade already in a
-- candle in acceptance order. A new trade opens the bucket only if strictly earlier than its open
-- (on a tie the earlier accepted wins) and closes it if not earlier than its close. The same merge
-- serves reads of pending trades (live_candles).
WITH moved AS (
    DELETE FROM trade_inbox
    WHERE seq <= %(up_to_seq)s
    RETURNING seq, received_at, symbol, ts, price, volume, source, event_id, conditions,
              updates_high_low, updates_open_close, updates_volume, cancelled_at
),
inserted AS (
    -- Rows go in in acceptance order, so of two with one identity in this batch the first
    -- accepted goes in and the later one is a conflict, like a twin promoted long ago.
    INSERT INTO trades (source, event_id, seq, symbol, ts, price, volume, received_at, batch_id,
                        conditions, updates_high_low, updates_open_close, updates_volume,
                        cancelled_at)
    SELECT source, event_id, seq, symbol, ts, price, volume, received_at, %(batch_id)s,
           conditions, updates_high_low, updates_open_close, updates_volume, cancelled_at
    FROM moved
    ORDER BY seq
    ON CONFLICT (source, event_id) DO NOTHING
    RETURNING symbol, ts, seq, price, volume, updates_high_low, updates_open_close, updates_volume,
              cancelled_at
),
minutes AS (  -- each field over the trades its rules let update it (docs/design.md §5)
    SELECT symbol, date_bin('1 minute', ts, 'epoch') AS bucket_start,
           \ir parts/trade_bar.sql
    FROM inserted
    WHERE (updates_high_low OR updates_open_close OR updates_volume) AND cancelled_at IS NULL
    GROUP BY 1, 2
),
partials AS (  -- the batch's own candles: 1m from its trades, the coarser ones from those
    SELECT symbol, '1m' AS "interval", bucket_start, open, high, low, close, volume, notional,
           trade_count, open_at, close_at
    FROM minutes
    UNION ALL
    SELECT m.symbol, w."interval",
           CASE WHEN w."interval" = '1d'
                THEN date_trunc('day', m.bucket_start, (SELECT timezone FROM market_settings))
                ELSE date_bin(w.width, m.bucket_start, 'epoch') END,
           (array_agg(m.open ORDER BY m.open_at) FILTER (WHERE m.open_at IS NOT NULL))[1],
           max(m.high), min(m.low),
           (array_agg(m.close ORDER BY m.close_at DESC) FILTER (WHERE m.close_at IS NOT NULL))[1],
           sum(m.volume), sum(m.notional), sum(m.trade_count), min(m.open_at), max(m.close_at)
    FROM minutes m
    CROSS JOIN unnest(%(intervals)s::text[], %(widths)s::interval[]) AS w("interval", width)
    GROUP BY 1, 2, 3
),
merged AS (
    INSERT INTO candles AS c
        (symbol, "interval", bucket_start, open, high, low, close, volume, vwap, trade_count,
         open_at, close_at, updated_at)
    SELECT p.symbol, p."interval", p.bucket_start,
           CASE WHEN e.open_at IS NULL OR p.open_at < e.open_at THEN coalesce(p.open, e.open)
                ELSE e.open END,
           greatest(e.high, p.high),  -- greatest and least leave NULLs out
           least(e.low, p.low),
           CASE WHEN e.close_at IS NULL OR p.close_at >= e.close_at THEN coalesce(p.close, e.close)
                ELSE e.close END,
           coalesce(e.volume, 0) + p.volume,
           (coalesce(e.vwap * e.volume, 0) + p.notional) / nullif(coalesce(e.volume, 0) + p.volume, 0),
           coalesce(e.trade_count, 0) + p.trade_count,
           least(e.open_at, p.open_at),
           greatest(e.close_at, p.close_at),
           clock_timestamp()
    FROM partials p
    LEFT JOIN candles e
        ON e.symbol = p.symbol AND e."interval" = p."interval" AND e.bucket_start = p.bucket_start
    ON CONFLICT (symbol, "interval", bucket_start) DO UPDATE
    SET open = excluded.open, high = excluded.high, low = excluded.low, close = excluded.close,
        volume = excluded.volume, vwap = excluded.vwap, trade_count = excluded.trade_count,
        open_at = excluded.open_at, close_at = excluded.close_at, updated_at = excluded.updated_at
    RETURNING c.symbol, c."interval", c.bucket_start
),
touched AS (
    SELECT symbol, (ts AT TIME ZONE (SELECT timezone FROM market_settings))::date AS day,
           min(ts) AS min_ts, max(ts) AS max_ts, count(*) AS trades
    FROM inserted
    GROUP BY 1, 2
),
symbol_span AS (
    UPDATE symbols s
    SET first_trade_at = LEAST(s.first_trade_at, t.min_ts),
        last_trade_at = GREATEST(s.last_trade_at, t.max_ts)
    FROM (SELECT symbol, min(min_ts) AS min_ts, max(max_ts) AS max_ts FROM touched GROUP BY 1) t
    WHERE s.symbol = t.symbol
),
batch AS (
    UPDATE ingest_batches b
    SET inbox_rows = m.n,
        first_seq = m.first_seq,
        last_seq = m.last_seq,
        promoted = (SELECT count(*) FROM inserted),
        duplicates = m.n - (SELECT count(*) FROM inserted),
        min_ts = (SELECT min(min_ts) FROM touched),
        max_ts = (SELECT max(max_ts) FROM touched),
        finished_at = clock_timestamp()
    FROM (SELECT count(*) AS n, min(seq) AS first_seq, max(seq) AS last_seq FROM moved) m
    WHERE b.batch_id = %(batch_id)s
)
SELECT t.symbols, t.days, t.trades, m.symbols, m.intervals, m.bucket_starts
FROM (SELECT coalesce(array_agg(symbol), '{}') AS symbols,
             coalesce(array_agg(day), '{}') AS days,
             coalesce(array_agg(trades), '{}') AS trades
      FROM touched) t,
     (SELECT coalesce(array_agg(symbol), '{}') AS symbols,
             coalesce(array_agg("interval"), '{}') AS intervals,
             coalesce(array_agg(bucket_start), '{}') AS bucket_starts
      FROM merged) m
