-- What `GET /candles?fill=previous` carries into the empty buckets at the start of a page: for
-- each of %(symbols)s, the close of its latest %(interval)s candle before %(start)s that has one
-- (pending trades merged, as every read), NULL when none has. The stored candles say from where
-- to merge: pending trades before the latest stored close could not make a later one.
SELECT s.symbol,
       (SELECT l.close
        FROM live_candles(
            s.symbol, %(interval)s, %(width)s,
            coalesce((SELECT c.bucket_start FROM candles c
                      WHERE c.symbol = s.symbol AND c."interval" = %(interval)s
                        AND c.bucket_start < %(start)s AND c.close IS NOT NULL
                      ORDER BY c.bucket_start DESC
                      LIMIT 1),
                     '-infinity'),
            %(start)s, NULL) l
        WHERE l.close IS NOT NULL
        ORDER BY l.bucket_start DESC
        LIMIT 1) AS close
FROM unnest(%(symbols)s::text[]) s(symbol)
