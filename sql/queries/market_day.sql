-- The trading calendar of one market day (GET /v1/marketstatus/now): the ordinary weekday's
-- hours, and the day's exception (a holiday or an early close) when it has one.
SELECT h.early_open, h.regular_open, h.regular_close, h.late_close,
       d.name, d.close_at, d.late_close_at
FROM market_hours h
LEFT JOIN market_holidays d ON d.day = %(day)s
