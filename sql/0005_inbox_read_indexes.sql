-- Reads of pending (not yet promoted) trades without scanning the whole inbox, which holds a few
-- seconds to a few minutes of ticks: /stream finds the new rows by `seq` and checks each one for
-- an earlier resend of the same identity; live candles and the latest trade take one symbol's
-- rows by time. Measured with `mdp bench soak` at 1,000 ticks/s, these scans were most of
-- PostgreSQL's CPU; the indexes halve the micro-batch lag there and cost peak bulk ingest over
-- HTTP about half (still above 100,000 rows/s).
CREATE INDEX trade_inbox_identity ON trade_inbox (source, event_id, seq);
CREATE INDEX trade_inbox_symbol_ts ON trade_inbox (symbol, ts);
