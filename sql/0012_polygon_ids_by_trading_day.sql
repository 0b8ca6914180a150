-- Polygon/SIP trade ids are unique per ticker, exchange and TRF within a trading day only, so a
-- Polygon trade's identity now ends with its New York trading date
-- (`<ticker>:<exchange>:<trf_id>:<id>:<YYYY-MM-DD>`): with the day left out, the second day of an
-- import was taken for resends of the first and dropped. Trades imported before get the date of
-- their own time (the SIP timestamp), so a file imported again is still recognized.
UPDATE trades
SET event_id = event_id || ':' || to_char(ts AT TIME ZONE 'America/New_York', 'YYYY-MM-DD')
WHERE source = 'polygon' AND event_id ~ '^[^:]*:[^:]*:[^:]*:[^:]*$';
