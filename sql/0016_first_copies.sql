-- Reads of pending trades take the first accepted copy of each identity, as promotion will, even
-- when a resend carries another time or symbol than the copy before it: a copy counts when no
-- earlier copy of its identity is in the inbox (a probe of the hash index on event_id) and none is
-- in `trades`. Before, the copies were narrowed to the read's symbol and time first and the first
-- of those taken, so a resend moved in time counted in the bucket it claimed.

CREATE OR REPLACE FUNCTION live_candles(
    p_symbol text, p_interval text, p_width interval,
    p_from timestamptz, p_to timestamptz, p_max_rows bigint
)
RETURNS TABLE (
    bucket_start timestamptz, open float8, high float8, low float8, close float8,
    volume float8, vwap float8, trade_count bigint, revision integer, pending bigint
)
LANGUAGE sql STABLE
AS $$
WITH materialized AS (
    SELECT c.bucket_start, c.open, c.high, c.low, c.close, c.volume,
           coalesce(c.vwap * c.volume, 0) AS notional, c.trade_count, c.open_at, c.close_at,
           c.revision
    FROM candles c
    WHERE c.symbol = p_symbol AND c."interval" = p_interval
      AND c.bucket_start >= p_from AND c.bucket_start < p_to
    ORDER BY c.bucket_start
    LIMIT p_max_rows
),
inbox AS (
    SELECT i.*,
           CASE WHEN p_interval = '1d'
                THEN date_trunc('day', i.ts, (SELECT timezone FROM market_settings))
                ELSE date_bin(p_width, i.ts, 'epoch') END AS bucket_start
    FROM trade_inbox i
    WHERE i.symbol = p_symbol
      -- implied by the bucket bounds below (a market day may last a day and an hour or more)
      AND i.ts >= p_from
      AND i.ts < p_to + p_width + CASE WHEN p_interval = '1d' THEN interval '1 day'
                                       ELSE interval '0' END
),
pending_trades AS (
    SELECT i.bucket_start, i.ts, i.seq, i.price, i.volume,
           i.updates_high_low, i.updates_open_close, i.updates_volume, i.cancelled_at
    FROM inbox i
    WHERE i.bucket_start >= p_from AND i.bucket_start < p_to
      AND NOT EXISTS (SELECT FROM trades t WHERE t.source = i.source AND t.event_id = i.event_id)
      AND NOT EXISTS (  -- the first accepted copy: an earlier one may carry another time
          SELECT FROM trade_inbox e
          WHERE e.event_id = i.event_id AND e.source = i.source AND e.seq < i.seq
      )
),
pending AS (
    SELECT bucket_start,
           (array_agg(price ORDER BY ts, seq) FILTER (WHERE updates_open_close))[1] AS open,
           max(price) FILTER (WHERE updates_high_low) AS high,
           min(price) FILTER (WHERE updates_high_low) AS low,
           (array_agg(price ORDER BY ts DESC, seq DESC) FILTER (WHERE updates_open_close))[1]
               AS close,
           coalesce(sum(volume) FILTER (WHERE updates_volume), 0) AS volume,
           coalesce(sum(price * volume) FILTER (WHERE updates_volume), 0) AS notional,
           count(*) FILTER (WHERE updates_volume) AS trade_count,
           min(ts) FILTER (WHERE updates_open_close) AS open_at,
           max(ts) FILTER (WHERE updates_open_close) AS close_at,
           count(*) AS trades
    FROM pending_trades
    WHERE (updates_high_low OR updates_open_close OR updates_volume) AND cancelled_at IS NULL
    GROUP BY bucket_start
)
SELECT coalesce(m.bucket_start, p.bucket_start),
       CASE WHEN m.open_at IS NULL OR p.open_at < m.open_at THEN coalesce(p.open, m.open)
            ELSE m.open END,
       greatest(m.high, p.high),  -- greatest and least leave NULLs out
       least(m.low, p.low),
       CASE WHEN m.close_at IS NULL OR p.close_at >= m.close_at THEN coalesce(p.close, m.close)
            ELSE m.close END,
       coalesce(m.volume, 0) + coalesce(p.volume, 0),
       (coalesce(m.notional, 0) + coalesce(p.notional, 0))
           / nullif(coalesce(m.volume, 0) + coalesce(p.volume, 0), 0),
       coalesce(m.trade_count, 0) + coalesce(p.trade_count, 0),
       coalesce(m.revision, 0),
       coalesce(p.trades, 0)
FROM materialized m
FULL JOIN pending p ON p.bucket_start = m.bucket_start
ORDER BY 1
LIMIT p_max_rows
$$;
