-- A page of one symbol's trades with ts in [%(from)s, %(to)s) for GET /v3/trades, promoted or
-- still pending (the first accepted copy of each identity: resends left out, as promotion will),
-- cancelled ones left out; ordered by time then acceptance ({order}),
-- strictly beyond the (ts, seq) cursor ({beyond}: > reading forward, < backward), at most
-- %(limit)s rows. Times come as Unix nanoseconds (trades keep microseconds).
WITH promoted AS (
    SELECT ts, seq, event_id, price, volume, conditions
    FROM trades
    WHERE symbol = %(symbol)s AND ts >= %(from)s AND ts < %(to)s
      AND (ts, seq) {beyond} (%(ts)s, %(seq)s) AND cancelled_at IS NULL
    ORDER BY ts {order}, seq {order}
    LIMIT %(limit)s
),
pending AS (
    SELECT ts, seq, event_id, price, volume, conditions
    FROM trade_inbox i
    WHERE i.symbol = %(symbol)s AND i.ts >= %(from)s AND i.ts < %(to)s
      AND (i.ts, i.seq) {beyond} (%(ts)s, %(seq)s) AND i.cancelled_at IS NULL
      -- the first accepted copy of its identity (a resend may carry another time)
      AND NOT EXISTS (SELECT FROM trades t WHERE t.source = i.source AND t.event_id = i.event_id)
      AND NOT EXISTS (
          SELECT FROM trade_inbox e
          WHERE e.event_id = i.event_id AND e.source = i.source AND e.seq < i.seq
      )
)
SELECT (extract(epoch FROM ts) * 1000000)::int8 * 1000 AS nanos, ts, seq, event_id, price,
       volume, conditions
FROM (SELECT * FROM promoted UNION ALL SELECT * FROM pending) page
ORDER BY ts {order}, seq {order}
LIMIT %(limit)s
