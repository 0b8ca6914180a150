-- The latest trade of a symbol by trade time, accepted ones still in the inbox included (minus
-- resends); ties go to the later accepted. A pending trade earlier than the
-- latest promoted one cannot win, so only the inbox's newer time range is read (a BRIN range
-- scan), newest first, until one is not a resend.
WITH promoted AS (
    SELECT ts, seq, price, volume, source, event_id
    FROM trades WHERE symbol = %(symbol)s AND cancelled_at IS NULL
    ORDER BY ts DESC, seq DESC LIMIT 1
),
pending AS MATERIALIZED (
    SELECT ts, seq, price, volume, source, event_id
    FROM trade_inbox
    WHERE symbol = %(symbol)s AND ts >= coalesce((SELECT ts FROM promoted), '-infinity')
      AND cancelled_at IS NULL
    ORDER BY ts DESC, seq DESC
)
SELECT ts, price, volume, source, event_id, seq
FROM (
    SELECT * FROM promoted
    UNION ALL
    (SELECT * FROM pending i
     WHERE NOT EXISTS (SELECT FROM trades t WHERE t.source = i.source AND t.event_id = i.event_id)
       AND NOT EXISTS (  -- the first accepted copy: an earlier one may carry another time
           SELECT FROM trade_inbox e
           WHERE e.event_id = i.event_id AND e.source = i.source AND e.seq < i.seq
       )
     LIMIT 1)
) latest
ORDER BY ts DESC, seq DESC
LIMIT 1
