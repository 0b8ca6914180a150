-- Record that candles changed, for /stream (the caller holds the candles lock), forget changes
-- older than the replay window, and wake the stream readers at commit.
WITH announced AS (
    INSERT INTO candle_updates (symbol, "interval", bucket_start)
    SELECT * FROM unnest(%(symbol)s::text[], %(interval)s::text[], %(bucket_start)s::timestamptz[])
    RETURNING id
),
forgotten AS (  -- the oldest rows, by the primary key: no scan of the rows kept
    DELETE FROM candle_updates
    WHERE id < (SELECT id FROM candle_updates
                WHERE created_at >= now() - interval '15 minutes' ORDER BY id LIMIT 1)
)
SELECT pg_notify('mdp_stream', '')
