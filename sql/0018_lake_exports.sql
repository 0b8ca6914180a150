-- What the lake holds of each market day, and whether PostgreSQL has changed the day since: a day
-- whose `changes` passed `exported` is stale in the lake and `candles_lake_sensor` exports
-- it again. Triggers count the changes whoever makes them, so no writer has to know the lake:
-- micro-batches (late trades), cancels, day recomputations (backfills, imports, the nightly
-- finalization), a TRUNCATE of the candles, and trades that change no candle. A row per day: the
-- table stays small for years.
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

-- A trade that changes no candle (its sale conditions update nothing, as an official open or close
-- print, or it was cancelled before promotion) announces nothing, yet it is a row of the lake's
-- `trades`: it marks its own day. The WHEN clause lets every other trade in at no cost (no call).
CREATE FUNCTION lake_day_changed_by_a_trade() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO lake_exports AS l (day, changes, stale_since)
    VALUES ((NEW.ts AT TIME ZONE (SELECT timezone FROM market_settings))::date, 1, now())
    ON CONFLICT (day) DO UPDATE
    SET changes = l.changes + 1, stale_since = coalesce(l.stale_since, now());
    RETURN NULL;
END
$$;

CREATE TRIGGER trades_without_candles_reach_the_lake AFTER INSERT ON trades
FOR EACH ROW
WHEN (NOT (NEW.updates_high_low OR NEW.updates_open_close OR NEW.updates_volume)
      OR NEW.cancelled_at IS NOT NULL)
EXECUTE FUNCTION lake_day_changed_by_a_trade();
