-- Polygon-style aggregate bars, built as JSON by PostgreSQL: live candles of a stored base
-- interval rolled up into bars of %(width)s (minutes and hours aligned from each market day's
-- start, days from the epoch, weeks from a Monday) or of %(months)s calendar months. Days, weeks
-- and months are the market's, in the zone `market_settings` holds: a bar of them starts at a
-- market midnight and holds whole 1d candles, however long its days (docs/design.md §5). Bars
-- starting in [start, end), in %(sign)s order (1 ascending, -1 descending), at most %(limit)s + 1.
--
-- A page reads the base candles of a span, not of the whole range left: from the range's edge in
-- the sort's direction to the %(reach)s-th stored base candle, (limit + 1) times the most base
-- buckets one bar holds. Bars do not overlap and none holds more, so past the bar the range's
-- start cuts (ascending; never shown) the span holds whole the bars a page shows and a bucket
-- beyond them: the next bar, partial perhaps, only tells whether another page follows. Pending
-- trades only add buckets to a span. Before, each page rolled up the whole range left, so paging
-- was quadratic: through a year of minute bars in pages of 5,000, each first page took 2.5-3.3 s
-- and all 106 took 178 s; now 47-71 ms and 5.7 s (measured on the 2-core VM).
WITH span AS (
    SELECT CASE WHEN %(sign)s = 1 THEN %(start)s ELSE coalesce(
               (SELECT bucket_start FROM candles
                WHERE symbol = %(symbol)s AND "interval" = %(base)s
                  AND bucket_start >= %(start)s AND bucket_start < %(end)s
                ORDER BY bucket_start DESC OFFSET %(reach)s - 1 LIMIT 1),
               %(start)s) END AS low,
           CASE WHEN %(sign)s = -1 THEN %(end)s ELSE coalesce(
               (SELECT least(bucket_start + %(base_width)s, %(end)s) FROM candles
                WHERE symbol = %(symbol)s AND "interval" = %(base)s
                  AND bucket_start >= %(start)s AND bucket_start < %(end)s
                ORDER BY bucket_start OFFSET %(reach)s - 1 LIMIT 1),
               %(end)s) END AS high
),
base AS (
    SELECT b.*
    FROM span, live_candles(%(symbol)s, %(base)s, %(base_width)s, span.low, span.high, 100000000) b
),
local AS (  -- each base candle's market date, and the number of days in a bar of days or weeks
    SELECT b.*, z.zone, (b.bucket_start AT TIME ZONE z.zone)::date AS day,
           extract(day FROM %(width)s::interval)::int AS days,
           CASE %(align)s WHEN 'monday' THEN date '1970-01-05' ELSE date '1970-01-01' END AS origin
    FROM base b, (SELECT timezone AS zone FROM market_settings) z
),
months AS (
    SELECT *, (extract(year FROM day)::int * 12 + extract(month FROM day)::int - 1)
              / greatest(%(months)s, 1) * greatest(%(months)s, 1) AS month_index
    FROM local
),
bars AS (
    SELECT CASE %(align)s
               WHEN 'day' THEN date_bin(%(width)s, bucket_start,
                                        date_trunc('day', bucket_start, zone))
               WHEN 'months' THEN make_date(month_index / 12, month_index %% 12 + 1, 1)::timestamp
                                  AT TIME ZONE zone
               ELSE (day - ((day - origin) %% days + days) %% days)::timestamp AT TIME ZONE zone
           END AS t,
           (array_agg(open ORDER BY bucket_start) FILTER (WHERE open IS NOT NULL))[1] AS o,
           max(high) AS h,
           min(low) AS l,
           (array_agg(close ORDER BY bucket_start DESC) FILTER (WHERE close IS NOT NULL))[1] AS c,
           sum(volume) AS v,
           sum(vwap * volume) / nullif(sum(volume), 0) AS vw,
           sum(trade_count) AS n
    FROM months
    GROUP BY 1
),
page AS (
    SELECT *, row_number() OVER (ORDER BY extract(epoch FROM t) * %(sign)s) AS k
    FROM bars
    WHERE t >= %(start)s AND t < %(end)s
)
SELECT coalesce(
           json_agg(json_build_object(
               'v', v, 'vw', vw, 'o', o, 'c', c, 'h', h, 'l', l,
               't', (extract(epoch FROM t) * 1000)::int8, 'n', n
           ) ORDER BY k) FILTER (WHERE k <= %(limit)s),
           '[]'
       )::text AS results,
       count(*) FILTER (WHERE k <= %(limit)s) AS results_count,
       (array_agg((extract(epoch FROM t) * 1000)::int8 ORDER BY k)
           FILTER (WHERE k <= %(limit)s))[%(limit)s] AS last_t,
       count(*) > %(limit)s AS more
FROM page
