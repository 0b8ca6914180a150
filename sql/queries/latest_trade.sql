-- The latest trade of a symbol by trade time, accepted ones still in the inbox included (minus
-- resends of promoted trades); ties go to the later accepted.
SELECT ts, price, volume, source, event_id, seq
FROM (
    (SELECT ts, seq, price, volume, source, event_id
     FROM trades WHERE symbol = %(symbol)s ORDER BY ts DESC, seq DESC LIMIT 1)
    UNION ALL
    (SELECT ts, seq, price, volume, source, event_id
     FROM trade_inbox i
     WHERE symbol = %(symbol)s
       AND NOT EXISTS (SELECT FROM trades t WHERE t.source = i.source AND t.event_id = i.event_id)
     ORDER BY ts DESC, seq DESC LIMIT 1)
) latest
ORDER BY ts DESC, seq DESC
LIMIT 1
