-- Record that candles changed, for /stream and the API's candle caches (the caller holds the
-- candles lock; the insert wakes them at commit), and forget changes older than the replay window.
WITH announced AS (
    INSERT INTO candle_updates (symbol, "interval", bucket_start)
    SELECT * FROM unnest(%(symbol)s::text[], %(interval)s::text[], %(bucket_start)s::timestamptz[])
)
DELETE FROM candle_updates  -- the oldest rows, by the primary key: no scan of the rows kept
WHERE id < (SELECT id FROM candle_updates
            WHERE created_at >= now() - interval '15 minutes' ORDER BY id LIMIT 1)
