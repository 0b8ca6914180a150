-- Pending trades of one symbol in a time range (live candles, the candle cache's check for
-- pending trades, Polygon bars, the latest trade) by a btree on (symbol, ts). Migration 0009 had
-- left them to the BRIN index on `ts` for cheaper writes, which holds while the inbox is a second
-- of a few symbols. On a market it is not: every pending row is recent, so the BRIN index names
-- every page, and each such read scanned the whole inbox for one symbol. Measured under
-- `mdp bench capacity` at 10,000 ticks/s over 2,000 symbols (2-core VM): the `/candles` read of
-- the open bucket took 95 ms, the cache's check 44 ms, live candles 93 ms, together most of
-- PostgreSQL's time, while one more btree costs each accepted tick an index insertion.
CREATE INDEX trade_inbox_symbol_ts ON trade_inbox (symbol, ts);
