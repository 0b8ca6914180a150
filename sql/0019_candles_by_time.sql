-- Candles by interval and time, for whoever reads or replaces a stretch of time across every
-- symbol: a day's recomputation deletes the day's candles of every interval before writing them,
-- the lake exports a day, the checks reconcile a day, grouped daily bars read every symbol's day.
-- Through the primary key (symbol first) each of them read the whole index, so a backfill's day
-- cost grew with the history held (a year of 2,000 symbols: ~15 million candles read per day
-- replaced). New candles pay one more index entry; a merge into an existing candle changes no
-- indexed column.
CREATE INDEX candles_by_time ON candles ("interval", bucket_start);
