-- The price of a symbol's last trade before the regular session opens [%(pre_start)s,
-- %(pre_end)s) and in the after-hours session [%(after_start)s, %(after_end)s): promoted and
-- still pending trades alike (a pending trade's first accepted version; resends of promoted ones
-- left out), not cancelled, counting in the day's candle (their conditions let them update
-- something); the last by time, then acceptance. Each session reads its trades newest first from
-- the index and stops at the first that counts, however busy the day.
WITH sessions (session, since, until) AS (
    VALUES ('pre', %(pre_start)s::timestamptz, %(pre_end)s::timestamptz),
           ('after', %(after_start)s::timestamptz, %(after_end)s::timestamptz)
)
SELECT s.session, latest.price
FROM sessions s CROSS JOIN LATERAL (
    SELECT price FROM (
        (SELECT ts, seq, price FROM trades
         WHERE symbol = %(symbol)s AND ts >= s.since AND ts < s.until AND cancelled_at IS NULL
           AND (updates_high_low OR updates_open_close OR updates_volume)
         ORDER BY ts DESC, seq DESC LIMIT 1)
        UNION ALL
        (SELECT i.ts, i.seq, i.price FROM trade_inbox i
         WHERE i.symbol = %(symbol)s AND i.ts >= s.since AND i.ts < s.until
           AND i.cancelled_at IS NULL
           AND (i.updates_high_low OR i.updates_open_close OR i.updates_volume)
           AND NOT EXISTS (SELECT FROM trades t
                           WHERE t.source = i.source AND t.event_id = i.event_id)
           AND NOT EXISTS (SELECT FROM trade_inbox j
                           WHERE j.event_id = i.event_id AND j.source = i.source
                             AND j.seq < i.seq)
         ORDER BY i.ts DESC, i.seq DESC LIMIT 1)
    ) candidates
    ORDER BY ts DESC, seq DESC LIMIT 1
) latest
