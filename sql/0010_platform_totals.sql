-- The platform's totals, kept as they change. /status/ingestion and /metrics (every dashboard poll,
-- every Prometheus scrape) read the trades promoted, the duplicates dropped and the candles
-- stored; summing `ingest_batches` (a row per busy second) and counting `candles` grew with
-- history: 215 ms a call after a month of micro-batches (2.6 million batches, measured), seconds
-- after a year. Statement-level triggers keep the totals whoever writes (micro-batches, imports,
-- day recomputations, backfills, a TRUNCATE), at the cost of one row update per statement.
CREATE TABLE platform_totals (
    only_row   boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    trades     int8 NOT NULL,
    duplicates int8 NOT NULL,
    candles    int8 NOT NULL
);
INSERT INTO platform_totals (trades, duplicates, candles)
SELECT (SELECT coalesce(sum(promoted), 0) FROM ingest_batches),
       (SELECT coalesce(sum(duplicates), 0) FROM ingest_batches),
       (SELECT count(*) FROM candles);

-- Batches: inserted with their counts (imports) or counted when done (micro-batches); an idle
-- cycle moving the heartbeat changes nothing here.
CREATE FUNCTION count_batches() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    more_trades int8 := 0;
    more_duplicates int8 := 0;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        UPDATE platform_totals SET trades = 0, duplicates = 0;
        RETURN NULL;
    END IF;
    SELECT coalesce(sum(promoted), 0), coalesce(sum(duplicates), 0)
    INTO more_trades, more_duplicates
    FROM new_batches;
    IF TG_OP = 'UPDATE' THEN
        SELECT more_trades - coalesce(sum(promoted), 0),
               more_duplicates - coalesce(sum(duplicates), 0)
        INTO more_trades, more_duplicates
        FROM old_batches;
    END IF;
    IF more_trades <> 0 OR more_duplicates <> 0 THEN
        UPDATE platform_totals
        SET trades = trades + more_trades, duplicates = duplicates + more_duplicates;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER ingest_batches_counted_insert AFTER INSERT ON ingest_batches
REFERENCING NEW TABLE AS new_batches
FOR EACH STATEMENT EXECUTE FUNCTION count_batches();
CREATE TRIGGER ingest_batches_counted_update AFTER UPDATE ON ingest_batches
REFERENCING OLD TABLE AS old_batches NEW TABLE AS new_batches
FOR EACH STATEMENT EXECUTE FUNCTION count_batches();
CREATE TRIGGER ingest_batches_counted_truncate AFTER TRUNCATE ON ingest_batches
FOR EACH STATEMENT EXECUTE FUNCTION count_batches();

-- Candles: merged by micro-batches (INSERT … ON CONFLICT DO UPDATE: the INSERT trigger sees only
-- the rows inserted), replaced a day at a time (DELETE, then INSERT), emptied by a TRUNCATE.
CREATE FUNCTION count_candles() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        UPDATE platform_totals SET candles = 0;
    ELSIF TG_OP = 'INSERT' THEN
        UPDATE platform_totals SET candles = candles + (SELECT count(*) FROM new_candles);
    ELSE
        UPDATE platform_totals SET candles = candles - (SELECT count(*) FROM old_candles);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER candles_counted_insert AFTER INSERT ON candles
REFERENCING NEW TABLE AS new_candles
FOR EACH STATEMENT EXECUTE FUNCTION count_candles();
CREATE TRIGGER candles_counted_delete AFTER DELETE ON candles
REFERENCING OLD TABLE AS old_candles
FOR EACH STATEMENT EXECUTE FUNCTION count_candles();
CREATE TRIGGER candles_counted_truncate AFTER TRUNCATE ON candles
FOR EACH STATEMENT EXECUTE FUNCTION count_candles();
