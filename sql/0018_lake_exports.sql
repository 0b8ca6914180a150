-- What the lake holds of each market day, and whether PostgreSQL has changed the day since: a day
-- whose `changes` passed `exported` is stale in the lake and `candles_lake_follow_sensor` exports
-- it again. Triggers count the changes whoever makes them, so no writer has to know the lake:
-- micro-batches (late trades), cancels, day recomputations (backfills, imports, the nightly
-- finalization) and a TRUNCATE of the candles. A row per day: the table stays small for years.
CREATE TABLE lake_exports (
    day         date PRIMARY KEY,      -- the market's day (market_settings.timezone)
    changes     int8 NOT NULL DEFAULT 0,
    exported    int8,                  -- `changes` as the last export read it; NULL: never exported
    exported_at timestamptz,
    stale_since timestamptz            -- the first change the lake does not hold yet; NULL: none
);

-- Every candle writer logs what it changed in candle_updates under the candles lock: a micro-batch
-- and a cancel the minutes they touched (a cancelled trade's minute even when it was in no candle),
-- a recomputation its day (whole_day), a TRUNCATE everything (-infinity). The 1m rows and the
-- whole-day rows name every changed day; the coarser intervals add nothing.
CREATE FUNCTION lake_days_changed_by_candles() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT FROM logged WHERE bucket_start = '-infinity') THEN
        UPDATE lake_exports SET changes = changes + 1, stale_since = coalesce(stale_since, now());
    END IF;
    INSERT INTO lake_exports AS l (day, changes, stale_since)
    SELECT DISTINCT (bucket_start AT TIME ZONE (SELECT timezone FROM market_settings))::date, 1,
           now()
    FROM logged
    WHERE isfinite(bucket_start) AND ("interval" = '1m' OR whole_day)
    ORDER BY 1
    ON CONFLICT (day) DO UPDATE
    SET changes = l.changes + 1, stale_since = coalesce(l.stale_since, now());
    RETURN NULL;
END
$$;

CREATE TRIGGER candle_updates_reach_the_lake AFTER INSERT ON candle_updates
REFERENCING NEW TABLE AS logged
FOR EACH STATEMENT EXECUTE FUNCTION lake_days_changed_by_candles();

-- A trade that changes no candle (its sale conditions update nothing, or it was cancelled before
-- promotion) is still a row of the lake's `trades`, and only its micro-batch knows it: the batch
-- records the span of its trades' times. Its first and last days are marked, and the exported days
-- between them (rarely any: a batch spans two days when it carries a late trade).
CREATE FUNCTION lake_days_changed_by_batches() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    WITH spans AS (
        SELECT (min_ts AT TIME ZONE z.timezone)::date AS first_day,
               (max_ts AT TIME ZONE z.timezone)::date AS last_day
        FROM new_batches, market_settings z
        WHERE min_ts IS NOT NULL
    )
    UPDATE lake_exports l SET changes = l.changes + 1, stale_since = coalesce(l.stale_since, now())
    FROM (SELECT min(first_day) AS first_day, max(last_day) AS last_day FROM spans) s
    WHERE l.day > s.first_day AND l.day < s.last_day;
    INSERT INTO lake_exports AS l (day, changes, stale_since)
    SELECT DISTINCT d, 1, now()
    FROM new_batches, market_settings z,
         LATERAL (VALUES ((min_ts AT TIME ZONE z.timezone)::date),
                         ((max_ts AT TIME ZONE z.timezone)::date)) AS ends(d)
    WHERE min_ts IS NOT NULL
    ORDER BY 1
    ON CONFLICT (day) DO UPDATE
    SET changes = l.changes + 1, stale_since = coalesce(l.stale_since, now());
    RETURN NULL;
END
$$;

CREATE TRIGGER ingest_batches_reach_the_lake AFTER UPDATE ON ingest_batches
REFERENCING NEW TABLE AS new_batches
FOR EACH STATEMENT EXECUTE FUNCTION lake_days_changed_by_batches();
