-- The /stocks WebSocket's bars (A: %(width)s = 1 second, AM: 1 minute): for each symbol (all when
-- %(symbols)s is NULL) and bucket of %(width)s in [%(start)s, %(end)s), the bar of its accepted
-- trades, promoted or still pending (resends left out; open and close by time, then acceptance;
-- each field over the trades their sale conditions let update it),
-- with the symbol's market day so far (in the zone `market_settings` holds): its volume, open and
-- VWAP (materialized merged with pending).
WITH accepted AS (
    SELECT symbol, ts, seq, price, volume, updates_high_low, updates_open_close, updates_volume
    FROM trades
    WHERE ts >= %(start)s AND ts < %(end)s AND cancelled_at IS NULL
      AND (%(symbols)s::text[] IS NULL OR symbol = ANY(%(symbols)s::text[]))
    UNION ALL
    SELECT symbol, ts, seq, price, volume, updates_high_low, updates_open_close, updates_volume
    FROM (
        SELECT i.symbol, i.ts, i.seq, i.price, i.volume,
               i.updates_high_low, i.updates_open_close, i.updates_volume, i.cancelled_at
        FROM trade_inbox i
        WHERE i.ts >= %(start)s AND i.ts < %(end)s
          AND (%(symbols)s::text[] IS NULL OR i.symbol = ANY(%(symbols)s::text[]))
          AND NOT EXISTS (SELECT FROM trades t WHERE t.source = i.source AND t.event_id = i.event_id)
          AND NOT EXISTS (  -- the first accepted copy: an earlier one may carry another time
              SELECT FROM trade_inbox e
              WHERE e.event_id = i.event_id AND e.source = i.source AND e.seq < i.seq
          )
    ) pending
    WHERE cancelled_at IS NULL
),
bars AS (
    SELECT symbol, date_bin(%(width)s, ts, 'epoch') AS bucket_start,
           \ir parts/trade_bar.sql
    FROM accepted
    WHERE updates_high_low OR updates_open_close OR updates_volume
    GROUP BY 1, 2
)
SELECT b.symbol,
       (extract(epoch FROM b.bucket_start) * 1000)::int8 AS start_ms,
       b.open, b.high, b.low, b.close, b.volume, b.notional / nullif(b.volume, 0) AS vwap,
       b.trade_count,
       d.volume AS day_volume, d.open AS day_open, d.vwap AS day_vwap
FROM bars b
CROSS JOIN (SELECT timezone AS zone FROM market_settings) z
CROSS JOIN LATERAL live_candles(
    b.symbol, '1d', interval '1 day', date_trunc('day', b.bucket_start, z.zone),
    ((date_trunc('day', b.bucket_start, z.zone) AT TIME ZONE z.zone) + interval '1 day')
        AT TIME ZONE z.zone,
    1
) d
ORDER BY b.bucket_start, b.symbol
