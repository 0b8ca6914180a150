-- An ingestion cycle that found the inbox empty still proves the pipeline alive: it moves the
-- heartbeat, and names the run that beat. A run of idle cycles shares one ingest_batches row
-- instead of adding one per cycle.
WITH latest AS (
    SELECT batch_id, inbox_rows FROM ingest_batches ORDER BY batch_id DESC LIMIT 1
),
touched AS (
    UPDATE ingest_batches b SET finished_at = clock_timestamp(), run_id = %(run_id)s
    FROM latest
    WHERE b.batch_id = latest.batch_id AND latest.inbox_rows = 0
    RETURNING b.batch_id
)
INSERT INTO ingest_batches (started_at, inbox_rows, promoted, duplicates, run_id)
SELECT clock_timestamp(), 0, 0, 0, %(run_id)s
WHERE NOT EXISTS (SELECT FROM touched)
