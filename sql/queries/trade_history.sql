-- A page of a symbol's canonical trades, newest first, strictly before the (ts, seq) cursor.
SELECT ts, price, volume, source, event_id, seq
FROM trades
WHERE symbol = %(symbol)s AND (ts, seq) < (%(ts)s, %(seq)s)
ORDER BY ts DESC, seq DESC
LIMIT %(limit)s
