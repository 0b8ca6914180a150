-- The bar of a group of trades under their sale conditions' rules (docs/design.md §5), from the
-- columns price, volume, ts, seq and updates_open_close, updates_high_low, updates_volume: open
-- and close from the first and last trade (by time, then acceptance) that may set them, high and
-- low over those that may set them, volume, notional (price times volume, summed) and trade_count
-- over those that count in volume, and when the open and close trades happened.
           (array_agg(price ORDER BY ts, seq) FILTER (WHERE updates_open_close))[1] AS open,
           max(price) FILTER (WHERE updates_high_low) AS high,
           min(price) FILTER (WHERE updates_high_low) AS low,
           (array_agg(price ORDER BY ts DESC, seq DESC) FILTER (WHERE updates_open_close))[1]
               AS close,
           coalesce(sum(volume) FILTER (WHERE updates_volume), 0) AS volume,
           coalesce(sum(price * volume) FILTER (WHERE updates_volume), 0) AS notional,
           count(*) FILTER (WHERE updates_volume) AS trade_count,
           min(ts) FILTER (WHERE updates_open_close) AS open_at,
           max(ts) FILTER (WHERE updates_open_close) AS close_at
