-- The trading calendar behind GET /v1/marketstatus/now: when the stock market is in its
-- regular session, in extended hours, or closed. Times are clock times in the market's zone
-- (MARKET_TIMEZONE, `market_settings`): with America/New_York they are New York's. Weekends are
-- always closed. An operator edits both tables with SQL (psql); the API reads them on every
-- status request (two one-row lookups), so an edit counts at once, with no restart.

-- The sessions of an ordinary weekday: extended hours from `early_open` to `regular_open` and
-- from `regular_close` to `late_close`, the regular session in between.
CREATE TABLE market_hours (
    only_row      boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    early_open    time NOT NULL,
    regular_open  time NOT NULL,
    regular_close time NOT NULL,
    late_close    time NOT NULL,
    CHECK (early_open <= regular_open AND regular_open < regular_close
           AND regular_close <= late_close)
);
INSERT INTO market_hours (early_open, regular_open, regular_close, late_close)
VALUES ('04:00', '09:30', '16:00', '20:00');

-- Days that differ from an ordinary weekday: a holiday (`close_at` null: closed all day) or an
-- early close (the regular session ends at `close_at`, extended hours at `late_close_at`, or at
-- the ordinary `late_close` when that is null).
CREATE TABLE market_holidays (
    day           date PRIMARY KEY,
    name          text NOT NULL,
    close_at      time,
    late_close_at time,
    CHECK (late_close_at IS NULL OR (close_at IS NOT NULL AND close_at <= late_close_at))
);

-- NYSE's published 2026 and 2027 calendar (the U.S. equity exchanges, Nasdaq included, keep the
-- same holidays): early closes end the regular session at 13:00 and late trading at 17:00 ET.
INSERT INTO market_holidays (day, name, close_at, late_close_at) VALUES
    ('2026-01-01', 'New Year''s Day', NULL, NULL),
    ('2026-01-19', 'Martin Luther King, Jr. Day', NULL, NULL),
    ('2026-02-16', 'Washington''s Birthday', NULL, NULL),
    ('2026-04-03', 'Good Friday', NULL, NULL),
    ('2026-05-25', 'Memorial Day', NULL, NULL),
    ('2026-06-19', 'Juneteenth National Independence Day', NULL, NULL),
    ('2026-07-03', 'Independence Day (observed)', NULL, NULL),
    ('2026-09-07', 'Labor Day', NULL, NULL),
    ('2026-11-26', 'Thanksgiving Day', NULL, NULL),
    ('2026-11-27', 'Day after Thanksgiving (early close)', '13:00', '17:00'),
    ('2026-12-24', 'Christmas Eve (early close)', '13:00', '17:00'),
    ('2026-12-25', 'Christmas Day', NULL, NULL),
    ('2027-01-01', 'New Year''s Day', NULL, NULL),
    ('2027-01-18', 'Martin Luther King, Jr. Day', NULL, NULL),
    ('2027-02-15', 'Washington''s Birthday', NULL, NULL),
    ('2027-03-26', 'Good Friday', NULL, NULL),
    ('2027-05-31', 'Memorial Day', NULL, NULL),
    ('2027-06-18', 'Juneteenth National Independence Day (observed)', NULL, NULL),
    ('2027-07-05', 'Independence Day (observed)', NULL, NULL),
    ('2027-09-06', 'Labor Day', NULL, NULL),
    ('2027-11-25', 'Thanksgiving Day', NULL, NULL),
    ('2027-11-26', 'Day after Thanksgiving (early close)', '13:00', '17:00'),
    ('2027-12-24', 'Christmas Day (observed)', NULL, NULL);
