-- A page of registered symbols for GET /v3/reference/tickers, in byte order of the symbol
-- ({order}), strictly beyond the %(after)s cursor when there is one ({beyond}: > reading
-- forward, < backward), within the optional bounds, matching the optional case-insensitive
-- %(search)s, at most %(limit)s rows.
SELECT symbol, first_trade_at, last_trade_at
FROM symbols
WHERE (%(after)s::text IS NULL OR symbol COLLATE "C" {beyond} %(after)s)
  AND (%(exact)s::text IS NULL OR symbol = %(exact)s)
  AND (%(gte)s::text IS NULL OR symbol COLLATE "C" >= %(gte)s)
  AND (%(gt)s::text IS NULL OR symbol COLLATE "C" > %(gt)s)
  AND (%(lte)s::text IS NULL OR symbol COLLATE "C" <= %(lte)s)
  AND (%(lt)s::text IS NULL OR symbol COLLATE "C" < %(lt)s)
  AND (%(search)s::text IS NULL OR strpos(lower(symbol), lower(%(search)s)) > 0)
ORDER BY symbol COLLATE "C" {order}
LIMIT %(limit)s
