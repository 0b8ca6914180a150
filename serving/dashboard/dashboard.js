// The operator dashboard: an ordinary client of the public API. It reads /symbols, /candles,
// /metrics and /status/ingestion over HTTP and follows /stream; it has no other access. When the
// API requires a read key (READ_API_KEYS), open the dashboard as /dashboard?apiKey=KEY.

const WIDTH_MS = { "1m": 60e3, "5m": 300e3, "15m": 900e3, "1h": 3600e3, "1d": 86400e3 };
const BARS = 90;
const POLL_MS = 2000;

const $ = (id) => document.getElementById(id);
const API_KEY = new URLSearchParams(location.search).get("apiKey");
const state = { symbol: null, interval: "1m", stream: null, refresh: null, lastCount: null };

function seconds(value) {
  if (value === null || value === undefined) return "–";
  if (value < 60) return `${value.toFixed(1)} s`;
  if (value < 3600) return `${(value / 60).toFixed(1)} min`;
  if (value < 86400) return `${(value / 3600).toFixed(1)} h`;
  return `${(value / 86400).toFixed(1)} d`;
}

const perSecond = (value) => (value === null || value === undefined ? "–" : `${value.toFixed(1)} /s`);
const number = (value) => (value === null || value === undefined ? "–" : value.toLocaleString());

async function getJSON(path) {
  const headers = { Accept: "application/json" };
  if (API_KEY) headers.Authorization = `Bearer ${API_KEY}`;
  const response = await fetch(path, { headers });
  return { ok: response.ok, body: await response.json() };
}

// The chart: TradingView's Lightweight Charts (vendored). Its time scale spaces bars by index, so
// buckets without trades are filled with whitespace points: a gap of an hour looks like one.
const COLORS = { up: "#26a269", down: "#e5484d", text: "#8b95a3", line: "#2a323c", panel: "#171d24" };
const chart = LightweightCharts.createChart($("chart"), {
  autoSize: true,
  layout: { background: { color: COLORS.panel }, textColor: COLORS.text, panes: { separatorColor: COLORS.line } },
  grid: { vertLines: { color: COLORS.line }, horzLines: { color: COLORS.line } },
  timeScale: { timeVisible: true, secondsVisible: false, borderColor: COLORS.line, rightOffset: 3 },
  rightPriceScale: { borderColor: COLORS.line },
  crosshair: { mode: LightweightCharts.CrosshairMode.Normal },
});
const priceSeries = chart.addSeries(LightweightCharts.CandlestickSeries, {
  upColor: COLORS.up, downColor: COLORS.down, wickUpColor: COLORS.up, wickDownColor: COLORS.down,
  borderVisible: false,
});
const volumeSeries = chart.addSeries(LightweightCharts.HistogramSeries, {
  priceFormat: { type: "volume" }, color: "#3b4654", priceLineVisible: false, lastValueVisible: false,
}, 1);
chart.panes()[1].setHeight(80);

const price = (value) => value.toFixed(2);
function showBar(bar, volume) {
  $("ohlc").textContent = bar && bar.close !== undefined
    ? `${new Date(bar.time * 1000).toISOString().slice(0, 16).replace("T", " ")}  O ${price(bar.open)}`
      + `  H ${price(bar.high)}  L ${price(bar.low)}  C ${price(bar.close)}`
      + `  V ${number(volume ? volume.value : 0)}`
    : "";
}
chart.subscribeCrosshairMove((param) => {
  const bar = param.time !== undefined ? param.seriesData.get(priceSeries) : null;
  if (bar) showBar(bar, param.seriesData.get(volumeSeries));
  else showLast();
});
function showLast() {
  const bars = priceSeries.data().filter((b) => b.close !== undefined);
  const volumes = volumeSeries.data().filter((v) => v.value !== undefined);
  showBar(bars.at(-1), volumes.at(-1));
}

function drawChart(candles) {
  const width = WIDTH_MS[state.interval] / 1000;
  const bars = [];
  const volumes = [];
  for (const c of candles) {
    const time = Date.parse(c.bucket_start) / 1000;
    for (let gap = bars.length ? bars.at(-1).time + width : time; gap < time; gap += width) {
      bars.push({ time: gap });  // whitespace: no trade in this bucket
      volumes.push({ time: gap });
    }
    if (c.open === null) {  // volume only: no trade of the bucket may set its prices
      bars.push({ time });
      volumes.push({ time, value: c.volume, color: "#4a5568" });
      continue;
    }
    bars.push({ time, open: c.open, high: c.high, low: c.low, close: c.close });
    volumes.push({ time, value: c.volume, color: c.close >= c.open ? "#1d5c3e" : "#7a2d31" });
  }
  priceSeries.setData(bars);
  volumeSeries.setData(volumes);
  $("chart-empty").hidden = candles.length > 0;
  showLast();
}

// A bar's trades, in the order that fixes its open and close, and what each counted in: its sale
// conditions decide (GET /candles/trades).
const TRADES_SHOWN = 100;
const COUNTS = { open_close: "open/close", high_low: "high/low", volume: "volume" };
async function showTrades(time) {
  const start = new Date(time * 1000).toISOString();
  const query = new URLSearchParams({ symbol: state.symbol, interval: state.interval,
                                      bucket_start: start, limit: String(TRADES_SHOWN) });
  const { ok, body } = await getJSON(`/candles/trades?${query}`);
  if (!ok) return;
  $("bar-trades-title").textContent =
    `Trades of the ${state.symbol} ${state.interval} bar at ${start.slice(0, 16).replace("T", " ")}`;
  $("bar-trades-rows").replaceChildren(...body.trades.map(tradeRow));
  $("bar-trades-more").textContent = body.next_page_token
    ? `the first ${TRADES_SHOWN}; the rest through the API`
    : `${body.trades.length} trade(s)`;
  $("bar-trades").hidden = false;
}

function tradeRow(trade) {
  const row = document.createElement("tr");
  if (trade.cancelled_at) row.className = "cancelled";
  const counts = trade.cancelled_at
    ? `cancelled ${trade.cancelled_at.slice(11, 19)}`
    : trade.counts_in.map((field) => COUNTS[field]).join(", ") || "nothing";
  const cells = [trade.ts.slice(11, 26).replace("Z", ""), price(trade.price), number(trade.volume),
                 (trade.conditions || []).join(", ") || "regular", counts];
  for (const text of cells) {
    const cell = document.createElement("td");
    cell.textContent = text;
    row.append(cell);
  }
  return row;
}
chart.subscribeClick((param) => { if (param.time !== undefined) showTrades(param.time); });

// For the browser tests: the bars as the chart holds them.
window.dashboard = {
  bars: () => priceSeries.data().filter((b) => b.close !== undefined),
  x: (time) => chart.timeScale().timeToCoordinate(time),  // where a bucket is drawn
};

async function loadCandles() {
  if (!state.symbol) return;
  const width = WIDTH_MS[state.interval];
  const start = new Date(Math.floor(Date.now() / width) * width - (BARS - 1) * width);
  const query = new URLSearchParams({ symbol: state.symbol, interval: state.interval,
                                      start: start.toISOString(), limit: String(BARS) });
  const { ok, body } = await getJSON(`/candles?${query}`);
  if (ok) drawChart(body.candles);
}

function scheduleCandles() {
  clearTimeout(state.refresh);
  state.refresh = setTimeout(loadCandles, 150);
}

function follow() {
  if (state.stream) state.stream.close();
  const query = new URLSearchParams({ symbols: state.symbol, events: "trade,candle" });
  if (API_KEY) query.set("apiKey", API_KEY);
  state.stream = new EventSource(`/stream?${query}`);
  state.stream.addEventListener("trade", (event) => {
    const trade = JSON.parse(event.data);
    $("last-trade").textContent =
      `last ${trade.price} × ${trade.volume} · ${trade.source} · ${trade.ts.slice(11, 23)}`;
    scheduleCandles();
  });
  state.stream.addEventListener("candle", scheduleCandles);
}

async function pollStatus() {
  try {
    const { body: status } = await getJSON("/status/ingestion");
    const badge = $("status");
    badge.textContent = status.status;
    badge.className = `status ${status.status}`;
    badge.dataset.status = status.status;
    // Idle (a quiet market: the pipeline looks and finds nothing) is not stale (it stopped looking).
    const quiet = status.seconds_since_last_trade;
    $("activity").textContent = !status.idle ? ""
      : quiet == null ? "idle: no trades yet"
      : `idle: no trades for ${Math.floor(quiet / 60)} min`;
    $("heartbeat-age").textContent = seconds(status.heartbeat_age_seconds);
    $("since-trade").textContent = seconds(status.seconds_since_last_trade);
    $("threshold").textContent = seconds(status.stale_threshold_seconds);
    $("promoted-rate").textContent = perSecond(status.promoted_per_second);
    const duplicates = $("duplicate-rate");
    duplicates.textContent = perSecond(status.duplicates_per_second);
    // Ticks arriving but dropped as resends of known trades: nothing new reaches the candles.
    duplicates.classList.toggle("warning",
      status.duplicates_per_second > 0 && status.duplicates_per_second >= status.promoted_per_second);

    const { body: metrics } = await getJSON("/metrics");
    const counts = metrics.counts;
    $("count-trades").textContent = number(counts.trades);
    $("count-candles").textContent = number(counts.candles);
    $("count-pending").textContent = number(counts.inbox_pending);
    const accepted = (counts.trades ?? 0) + (counts.inbox_pending ?? 0);
    const now = performance.now();
    if (state.lastCount) {
      const rate = (accepted - state.lastCount.accepted) / ((now - state.lastCount.at) / 1000);
      $("trade-rate").textContent = `${Math.max(0, rate).toFixed(1)} /s`;
    }
    state.lastCount = { accepted, at: now };
    $("db").textContent = metrics.db.healthy ? `healthy · ${metrics.db.latency_ms.toFixed(1)} ms` : "DOWN";
    $("uptime").textContent = seconds(metrics.uptime_seconds);
    $("latency").replaceChildren(...Object.entries(metrics.api_latency_ms).map(([route, l]) => {
      const row = document.createElement("tr");
      const ms = [l.p50, l.p95, l.p99, l.max].map((v) => v.toFixed(1));
      for (const value of [route, number(l.count), ...ms]) {
        const cell = document.createElement("td");
        cell.textContent = value;
        row.appendChild(cell);
      }
      return row;
    }));
  } catch (error) {
    const badge = $("status");
    badge.textContent = "API unreachable";
    badge.className = "status stale";
    badge.dataset.status = "unreachable";
  }
}

async function start() {
  const { body } = await getJSON("/symbols");
  const select = $("symbol");
  for (const { symbol } of body.symbols) select.add(new Option(symbol, symbol));
  const params = new URLSearchParams(location.search);
  state.symbol = params.get("symbol") || select.value;
  state.interval = params.get("interval") || "1m";
  select.value = state.symbol;
  $("interval").value = state.interval;
  select.addEventListener("change", () => { state.symbol = select.value; follow(); loadCandles(); });
  $("interval").addEventListener("change", (event) => {
    state.interval = event.target.value;
    loadCandles();
  });
  follow();
  await Promise.all([loadCandles(), pollStatus()]);
  setInterval(pollStatus, POLL_MS);
  setInterval(loadCandles, 15000);  // buckets close even when nothing trades
}

start();
