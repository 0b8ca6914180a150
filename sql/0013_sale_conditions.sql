-- Sale conditions: which trades may move a candle's open/close, its high/low and its volume.
--
-- `trade_conditions` is Polygon/Massive's list of stock trade conditions
-- (`GET /v3/reference/conditions?asset_class=stocks&data_type=trade`), with the consolidated
-- update rules the SIPs publish for each (CTA and UTP output specifications' sale-condition
-- matrices). Rows 1, 2, 6, 7, 10, 12, 14, 16, 32, 37, 38, 41 and 60 were checked against captures
-- of that listing made on 2026-10-05 and 2026-10-09; the others follow a transcription of the same
-- listing. Conditions that only flag a state (short-sale restriction, financial status) carry no
-- rules: they restrict nothing. A code missing here is refused at ingest; register one by
-- inserting its row (`mdp sql` cannot write: use psql).
--
-- A trade's rules are fixed when it is accepted (a field updates only if none of its conditions
-- forbids it) and kept on the trade itself, so every reader of trades applies them without a
-- lookup. A rule that lets a trade set the open or close must let it set the high and low too:
-- that keeps low <= open, close <= high in every candle.
CREATE TABLE trade_conditions (
    id                 smallint PRIMARY KEY CHECK (id >= 0),
    type               text NOT NULL,
    name               text NOT NULL,
    updates_high_low   boolean,
    updates_open_close boolean,
    updates_volume     boolean,
    legacy             boolean NOT NULL DEFAULT false,
    CHECK ((updates_high_low IS NULL) = (updates_open_close IS NULL)
           AND (updates_high_low IS NULL) = (updates_volume IS NULL)),
    CHECK (updates_high_low OR NOT updates_open_close)
);

INSERT INTO trade_conditions
    (id, type, name, updates_high_low, updates_open_close, updates_volume, legacy)
VALUES
    (0, 'sale_condition', 'Regular Sale', true, true, true, false),
    (1, 'sale_condition', 'Acquisition', true, true, true, false),
    (2, 'sale_condition', 'Average Price Trade', false, false, true, false),
    (3, 'sale_condition', 'Automatic Execution', true, true, true, false),
    (4, 'sale_condition', 'Bunched Trade', true, true, true, false),
    (5, 'sale_condition', 'Bunched Sold Trade', true, false, true, false),
    (6, 'sale_condition', 'CAP Election', true, true, true, true),
    (7, 'sale_condition', 'Cash Sale', false, false, true, false),
    (8, 'sale_condition', 'Closing Prints', true, true, true, false),
    (9, 'sale_condition', 'Cross Trade', true, true, true, false),
    (10, 'sale_condition', 'Derivatively Priced', true, false, true, false),
    (11, 'sale_condition', 'Distribution', true, true, true, false),
    (12, 'sale_condition', 'Form T/Extended Hours', false, false, true, false),
    (13, 'sale_condition', 'Extended Hours (Sold Out Of Sequence)', false, false, true, false),
    (14, 'sale_condition', 'Intermarket Sweep', true, true, true, false),
    (15, 'sale_condition', 'Market Center Official Close', false, false, false, false),
    (16, 'sale_condition', 'Market Center Official Open', false, false, false, false),
    (17, 'sale_condition', 'Market Center Opening Trade', true, false, true, false),
    (18, 'sale_condition', 'Market Center Reopening Trade', true, true, true, false),
    (19, 'sale_condition', 'Market Center Closing Trade', true, true, true, false),
    (20, 'sale_condition', 'Next Day', false, false, true, false),
    (21, 'sale_condition', 'Price Variation Trade', false, false, true, false),
    (22, 'sale_condition', 'Prior Reference Price', true, false, true, false),
    (23, 'sale_condition', 'Rule 155 Trade (AMEX)', true, true, true, false),
    (24, 'sale_condition', 'Rule 127 (NYSE Only)', true, true, true, false),
    (25, 'sale_condition', 'Opening Prints', true, true, true, false),
    (27, 'sale_condition', 'Stopped Stock (Regular Trade)', true, true, true, true),
    (28, 'sale_condition', 'Re-Opening Prints', true, true, true, false),
    (29, 'sale_condition', 'Seller', false, false, true, false),
    (30, 'sale_condition', 'Sold Last', true, true, true, false),
    (31, 'sale_condition', 'Sold Last and Stopped Stock', true, true, true, true),
    (32, 'sale_condition', 'Sold (Out Of Sequence)', true, false, true, false),
    (33, 'sale_condition', 'Sold (Out of Sequence) and Stopped Stock', true, false, true, true),
    (34, 'sale_condition', 'Split Trade', true, true, true, false),
    (35, 'sale_condition', 'Stock Option', true, true, true, true),
    (36, 'sale_condition', 'Yellow Flag Regular Trade', true, true, true, false),
    (37, 'sale_condition', 'Odd Lot Trade', false, false, true, false),
    (38, 'sale_condition', 'Corrected Consolidated Close (per listing market)', true, true, false,
     false),
    (41, 'trade_thru_exempt', 'Trade Thru Exempt', true, true, true, false),
    (52, 'sale_condition', 'Contingent Trade', false, false, true, false),
    (53, 'sale_condition', 'Qualified Contingent Trade', false, false, true, false),
    (55, 'sale_condition', 'Opening Reopening Trade Detail', true, true, true, true),
    (57, 'short_sale_restriction_indicator', 'Short Sale Restriction Activated', NULL, NULL, NULL,
     false),
    (58, 'short_sale_restriction_indicator', 'Short Sale Restriction Continued', NULL, NULL, NULL,
     false),
    (59, 'short_sale_restriction_indicator', 'Short Sale Restriction Deactivated', NULL, NULL,
     NULL, false),
    (60, 'short_sale_restriction_indicator', 'Short Sale Restriction In Effect', NULL, NULL, NULL,
     false),
    (62, 'financial_status_indicator', 'Financial Status - Bankrupt', NULL, NULL, NULL, false),
    (63, 'financial_status_indicator', 'Financial Status - Deficient', NULL, NULL, NULL, false),
    (64, 'financial_status_indicator', 'Financial Status - Delinquent', NULL, NULL, NULL, false),
    (65, 'financial_status_indicator', 'Financial Status - Bankrupt and Deficient', NULL, NULL,
     NULL, false),
    (66, 'financial_status_indicator', 'Financial Status - Bankrupt and Delinquent', NULL, NULL,
     NULL, false),
    (67, 'financial_status_indicator', 'Financial Status - Deficient and Delinquent', NULL, NULL,
     NULL, false),
    (68, 'financial_status_indicator', 'Financial Status - Deficient, Delinquent, and Bankrupt',
     NULL, NULL, NULL, false),
    (69, 'financial_status_indicator', 'Financial Status - Liquidation', NULL, NULL, NULL, false),
    (70, 'financial_status_indicator', 'Financial Status - Creations Suspended', NULL, NULL, NULL,
     false),
    (71, 'financial_status_indicator', 'Financial Status - Redemptions Suspended', NULL, NULL,
     NULL, false);

-- A trade keeps its conditions as sent (NULL: none, a regular trade) and the three rules they
-- give, which every candle computation filters on. Existing trades had no conditions.
ALTER TABLE trade_inbox
    ADD COLUMN conditions smallint[],
    ADD COLUMN updates_high_low boolean NOT NULL DEFAULT true,
    ADD COLUMN updates_open_close boolean NOT NULL DEFAULT true,
    ADD COLUMN updates_volume boolean NOT NULL DEFAULT true;
ALTER TABLE trades
    ADD COLUMN conditions smallint[],
    ADD COLUMN updates_high_low boolean NOT NULL DEFAULT true,
    ADD COLUMN updates_open_close boolean NOT NULL DEFAULT true,
    ADD COLUMN updates_volume boolean NOT NULL DEFAULT true;

-- A candle is a bucket with at least one trade that may update something. Its open and close
-- (and their times) are NULL when none of its trades may set them, its high and low when none may
-- set those, its VWAP when none counts in volume (volume and trade_count are then 0).
ALTER TABLE candles
    ALTER COLUMN open DROP NOT NULL,
    ALTER COLUMN high DROP NOT NULL,
    ALTER COLUMN low DROP NOT NULL,
    ALTER COLUMN close DROP NOT NULL,
    ALTER COLUMN vwap DROP NOT NULL,
    ALTER COLUMN open_at DROP NOT NULL,
    ALTER COLUMN close_at DROP NOT NULL;

-- live_candles under the rules: pending trades count in each field only where they may.
CREATE OR REPLACE FUNCTION live_candles(
    p_symbol text, p_interval text, p_width interval,
    p_from timestamptz, p_to timestamptz, p_max_rows bigint
)
RETURNS TABLE (
    bucket_start timestamptz, open float8, high float8, low float8, close float8,
    volume float8, vwap float8, trade_count bigint, pending bigint
)
LANGUAGE sql STABLE
AS $$
WITH materialized AS (
    SELECT c.bucket_start, c.open, c.high, c.low, c.close, c.volume,
           coalesce(c.vwap * c.volume, 0) AS notional, c.trade_count, c.open_at, c.close_at
    FROM candles c
    WHERE c.symbol = p_symbol AND c."interval" = p_interval
      AND c.bucket_start >= p_from AND c.bucket_start < p_to
    ORDER BY c.bucket_start
    LIMIT p_max_rows
),
pending_trades AS (
    SELECT DISTINCT ON (i.source, i.event_id)
           date_bin(p_width, i.ts, 'epoch') AS bucket_start, i.ts, i.seq, i.price, i.volume,
           i.updates_high_low, i.updates_open_close, i.updates_volume
    FROM trade_inbox i
    WHERE i.symbol = p_symbol
      AND i.ts >= p_from AND i.ts < p_to + p_width  -- implied by the bucket bounds below
      AND date_bin(p_width, i.ts, 'epoch') >= p_from AND date_bin(p_width, i.ts, 'epoch') < p_to
      AND NOT EXISTS (SELECT FROM trades t WHERE t.source = i.source AND t.event_id = i.event_id)
    ORDER BY i.source, i.event_id, i.seq
),
pending AS (
    SELECT bucket_start,
           (array_agg(price ORDER BY ts, seq) FILTER (WHERE updates_open_close))[1] AS open,
           max(price) FILTER (WHERE updates_high_low) AS high,
           min(price) FILTER (WHERE updates_high_low) AS low,
           (array_agg(price ORDER BY ts DESC, seq DESC) FILTER (WHERE updates_open_close))[1]
               AS close,
           coalesce(sum(volume) FILTER (WHERE updates_volume), 0) AS volume,
           coalesce(sum(price * volume) FILTER (WHERE updates_volume), 0) AS notional,
           count(*) FILTER (WHERE updates_volume) AS trade_count,
           min(ts) FILTER (WHERE updates_open_close) AS open_at,
           max(ts) FILTER (WHERE updates_open_close) AS close_at,
           count(*) AS trades
    FROM pending_trades
    WHERE updates_high_low OR updates_open_close OR updates_volume
    GROUP BY bucket_start
)
SELECT coalesce(m.bucket_start, p.bucket_start),
       CASE WHEN m.open_at IS NULL OR p.open_at < m.open_at THEN coalesce(p.open, m.open)
            ELSE m.open END,
       greatest(m.high, p.high),  -- greatest and least leave NULLs out
       least(m.low, p.low),
       CASE WHEN m.close_at IS NULL OR p.close_at >= m.close_at THEN coalesce(p.close, m.close)
            ELSE m.close END,
       coalesce(m.volume, 0) + coalesce(p.volume, 0),
       (coalesce(m.notional, 0) + coalesce(p.notional, 0))
           / nullif(coalesce(m.volume, 0) + coalesce(p.volume, 0), 0),
       coalesce(m.trade_count, 0) + coalesce(p.trade_count, 0),
       coalesce(p.trades, 0)
FROM materialized m
FULL JOIN pending p ON p.bucket_start = m.bucket_start
ORDER BY 1
LIMIT p_max_rows
$$;
