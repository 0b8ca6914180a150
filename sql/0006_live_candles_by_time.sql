-- Reads of live candles take only the pending trades inside the buckets asked for, by a range scan
-- of the inbox's (symbol, ts) index: a bucket starting at or after p_from holds no trade before
-- p_from, and one starting before p_to none at or after p_to + p_width. Before, every pending trade
-- of the symbol was read and filtered, so a read of yesterday cost as much as the whole backlog.

CREATE OR REPLACE FUNCTION live_candles(
    p_symbol text, p_interval text, p_width interval,
    p_from timestamptz, p_to timestamptz, p_max_rows bigint
)
RETURNS TABLE (
    bucket_start timestamptz, open float8, high float8, low float8, close float8,
    volume float8, vwap float8, trade_count bigint, pending bigint
)
LANGUAGE sql STABLE
AS $$
WITH materialized AS (
    SELECT c.bucket_start, c.open, c.high, c.low, c.close, c.volume, c.vwap * c.volume AS notional,
           c.trade_count, c.open_at, c.close_at
    FROM candles c
    WHERE c.symbol = p_symbol AND c."interval" = p_interval
      AND c.bucket_start >= p_from AND c.bucket_start < p_to
    ORDER BY c.bucket_start
    LIMIT p_max_rows
),
pending_trades AS (
    SELECT DISTINCT ON (i.source, i.event_id)
           date_bin(p_width, i.ts, 'epoch') AS bucket_start, i.ts, i.seq, i.price, i.volume
    FROM trade_inbox i
    WHERE i.symbol = p_symbol
      AND i.ts >= p_from AND i.ts < p_to + p_width  -- implied by the bucket bounds below
      AND date_bin(p_width, i.ts, 'epoch') >= p_from AND date_bin(p_width, i.ts, 'epoch') < p_to
      AND NOT EXISTS (SELECT FROM trades t WHERE t.source = i.source AND t.event_id = i.event_id)
    ORDER BY i.source, i.event_id, i.seq
),
pending AS (
    SELECT bucket_start,
           (array_agg(price ORDER BY ts, seq))[1] AS open,
           max(price) AS high,
           min(price) AS low,
           (array_agg(price ORDER BY ts DESC, seq DESC))[1] AS close,
           sum(volume) AS volume,
           sum(price * volume) AS notional,
           count(*) AS trade_count,
           min(ts) AS open_at,
           max(ts) AS close_at
    FROM pending_trades
    GROUP BY bucket_start
)
SELECT coalesce(m.bucket_start, p.bucket_start),
       CASE WHEN m.bucket_start IS NULL OR p.open_at < m.open_at THEN p.open ELSE m.open END,
       greatest(m.high, p.high),
       least(m.low, p.low),
       CASE WHEN m.bucket_start IS NULL OR p.close_at >= m.close_at THEN p.close ELSE m.close END,
       coalesce(m.volume, 0) + coalesce(p.volume, 0),
       (coalesce(m.notional, 0) + coalesce(p.notional, 0))
           / (coalesce(m.volume, 0) + coalesce(p.volume, 0)),
       coalesce(m.trade_count, 0) + coalesce(p.trade_count, 0),
       coalesce(p.trade_count, 0)
FROM materialized m
FULL JOIN pending p ON p.bucket_start = m.bucket_start
ORDER BY 1
LIMIT p_max_rows
$$;
