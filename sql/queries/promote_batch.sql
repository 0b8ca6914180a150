-- Promote the oldest pending inbox rows to canonical trades, in one transaction with the batch
-- record. Acceptance order is seq order; the first accepted (source, event_id) wins, whether its
-- twin is in this batch or was promoted long ago. Returns one row per (symbol, 1-minute bucket)
-- that received trades: the buckets whose candles the same transaction then brings up to date.
WITH moved AS (
    DELETE FROM trade_inbox
    WHERE seq IN (
        SELECT seq FROM trade_inbox WHERE seq <= %(up_to_seq)s ORDER BY seq LIMIT %(max_rows)s
    )
    RETURNING seq, received_at, symbol, ts, price, volume, source, event_id
),
firsts AS (
    SELECT DISTINCT ON (source, event_id) *
    FROM moved
    ORDER BY source, event_id, seq
),
inserted AS (
    INSERT INTO trades (source, event_id, seq, symbol, ts, price, volume, received_at, batch_id)
    SELECT source, event_id, seq, symbol, ts, price, volume, received_at, %(batch_id)s
    FROM firsts
    ON CONFLICT (source, event_id) DO NOTHING
    RETURNING symbol, ts
),
touched AS (
    SELECT symbol, date_bin('1 minute', ts, 'epoch') AS minute, min(ts) AS min_ts,
           max(ts) AS max_ts, count(*) AS trades
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
SELECT symbol, minute, trades FROM touched ORDER BY symbol, minute
