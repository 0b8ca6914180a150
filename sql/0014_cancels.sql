-- Cancels and corrections: venues cancel prints after the fact (a correction is a cancel plus a
-- new trade). A cancelled trade stays in `trades`, marked with when it was cancelled (the record
-- is canonical), and leaves every candle it was in; a cancel of a trade still pending marks its
-- inbox rows, and promotion carries the mark. A candle counts its restatements by cancels.
ALTER TABLE trades ADD COLUMN cancelled_at timestamptz;
ALTER TABLE trade_inbox ADD COLUMN cancelled_at timestamptz;
ALTER TABLE candles ADD COLUMN revision integer NOT NULL DEFAULT 0;

-- live_candles leaves cancelled pending trades out (after choosing the first accepted copy of an
-- identity: a resend after a cancel is not the trade coming back), and tells each candle's
-- revision.
DROP FUNCTION live_candles(text, text, interval, timestamptz, timestamptz, bigint);
CREATE FUNCTION live_candles(
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
pending_trades AS (
    SELECT DISTINCT ON (i.source, i.event_id)
           date_bin(p_width, i.ts, 'epoch') AS bucket_start, i.ts, i.seq, i.price, i.volume,
           i.updates_high_low, i.updates_open_close, i.updates_volume, i.cancelled_at
    FROM trade_inbox i
    WHERE i.symbol = p_symbol
      AND i.ts >= p_from AND i.ts < p_to + p_width  -- implied by the bucket bounds below
      AND date_bin(p_width, i.ts, 'epoch') >= p_from AND date_bin(p_width, i.ts, 'epoch') < p_to
      AND NOT EXISTS (SELECT FROM trades t WHERE t.source = i.source AND t.event_id = i.event_id)
    ORDER BY i.source, i.event_id, i.seq
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
