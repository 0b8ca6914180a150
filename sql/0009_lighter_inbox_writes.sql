-- Cheaper acceptance, measured by COPY of 500,000 ticks into inbox-shaped tables (2-core VM): the
-- two btrees of 0005 made every accepted tick cost three index insertions with text comparisons
-- (202,000 rows/s, against 1.86 million into a plain table). What the reads need from them is
-- less:
-- * the identity lookups (/stream leaving out resends of a pending trade) are equality only, which
--   a hash index answers with one probe and a fraction of the write cost;
-- * the symbol-and-time reads (live candles, the cache's check for pending trades, the latest
--   trade) take a time range: ticks arrive close to time order, so a BRIN index summarizes it in a
--   few pages; the steady inbox holds a second or two of ticks, a backlog is pruned by time.
-- Together: 355,000 rows/s. `seq` keeps its primary key: drains take the oldest rows in order.
DROP INDEX trade_inbox_identity;
DROP INDEX trade_inbox_symbol_ts;
CREATE INDEX trade_inbox_event_id ON trade_inbox USING hash (event_id);
CREATE INDEX trade_inbox_ts_brin ON trade_inbox USING brin (ts) WITH (pages_per_range = 16, autosummarize = on);
