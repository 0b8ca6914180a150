-- The change log also records that candles were replaced wholesale, in one row per interval rather
-- than one per candle: a day recomputed (a backfill, the nightly finalization: symbol '*' and the
-- day's start) or the table emptied (symbol and interval '*', by the trigger below). Readers that
-- keep candles (the API's cache of closed buckets) drop what these rows cover; /stream, which
-- sends changed candles, leaves them out.
ALTER TABLE candle_updates ADD COLUMN whole_day boolean NOT NULL DEFAULT false;

CREATE FUNCTION log_candles_emptied() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO candle_updates (symbol, "interval", bucket_start, whole_day)
    VALUES ('*', '*', '-infinity', true);
    RETURN NULL;
END
$$;

CREATE TRIGGER candles_emptied AFTER TRUNCATE ON candles
FOR EACH STATEMENT EXECUTE FUNCTION log_candles_emptied();

-- Whoever logs a change, /stream readers and candle caches hear of it at commit.
CREATE FUNCTION notify_candle_updates() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('mdp_stream', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER candle_updates_notify AFTER INSERT ON candle_updates
FOR EACH STATEMENT EXECUTE FUNCTION notify_candle_updates();
