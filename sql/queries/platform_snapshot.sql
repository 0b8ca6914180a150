-- One look at the platform for /status/ingestion and /metrics: the heartbeat, the latest trade
-- time accepted (a resend dropped at promotion included), counts, what the last minute's
-- micro-batches promoted and dropped as duplicates, when the oldest pending tick was accepted (the
-- pipeline's lag), and the database's clock. Cheap whatever the history and the backlog: indexes,
-- small tables, and the totals triggers keep in `platform_totals` (trades promoted, duplicates
-- dropped, candles stored) and in `inbox_ledger` (ticks appended and drained, the latest trade
-- time appended).
--
-- `mdp import` records each file as a batch too (run_id 'import:<file>'): its trades count, but it
-- is no beat of the live pipeline, and a file imported twice is no feed that only resends.
WITH live_batches AS NOT MATERIALIZED (
    SELECT * FROM ingest_batches WHERE run_id IS NULL OR NOT starts_with(run_id, 'import:')
)
SELECT (SELECT max(finished_at) FROM live_batches) AS heartbeat_at,
       greatest((SELECT max(last_trade_at) FROM symbols), inbox.latest_ts) AS last_trade_at,
       totals.trades,
       totals.candles,
       (SELECT count(*) FROM symbols) AS symbols,
       inbox.pending AS inbox_pending,
       totals.duplicates,
       last_minute.promoted AS promoted_last_minute,
       last_minute.duplicates AS duplicates_last_minute,
       (SELECT received_at FROM trade_inbox ORDER BY seq LIMIT 1) AS oldest_pending_at,
       now() AS now
FROM (SELECT coalesce(sum(promoted), 0)::int8 AS promoted,
             coalesce(sum(duplicates), 0)::int8 AS duplicates
      FROM live_batches
      WHERE finished_at > now() - interval '1 minute') AS last_minute,
     (SELECT coalesce(sum(ticks), 0)::int8 AS pending, max(latest_ts) AS latest_ts
      FROM inbox_ledger) AS inbox,
     platform_totals AS totals
