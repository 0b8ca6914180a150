-- The trades of one bucket (%(symbol)s, ts in [%(start)s, %(end)s)), promoted or still pending
-- (resends left out, as promotion will), in the order that fixes open and close: by time, then
-- acceptance. A page: strictly after the (ts, seq) cursor, at most %(limit)s + 1 rows.
WITH bucket AS (
    SELECT source, event_id, ts, seq, price, volume, conditions, updates_high_low,
           updates_open_close, updates_volume, cancelled_at
    FROM trades
    WHERE symbol = %(symbol)s AND ts >= %(start)s AND ts < %(end)s
      AND (ts, seq) > (%(ts)s, %(seq)s)
    UNION ALL
    SELECT source, event_id, ts, seq, price, volume, conditions, updates_high_low,
           updates_open_close, updates_volume, cancelled_at
    FROM (
        SELECT i.*
        FROM trade_inbox i
        WHERE i.symbol = %(symbol)s AND i.ts >= %(start)s AND i.ts < %(end)s
          AND NOT EXISTS (SELECT FROM trades t WHERE t.source = i.source AND t.event_id = i.event_id)
          AND NOT EXISTS (  -- the first accepted copy: an earlier one may carry another time
              SELECT FROM trade_inbox e
              WHERE e.event_id = i.event_id AND e.source = i.source AND e.seq < i.seq
          )
    ) pending
    WHERE (ts, seq) > (%(ts)s, %(seq)s)
)
SELECT source, event_id, ts, seq, price, volume, conditions, updates_high_low,
       updates_open_close, updates_volume, cancelled_at
FROM bucket
ORDER BY ts, seq
LIMIT %(limit)s + 1
