// The operator dashboard: an ordinary client of the public API. It reads /symbols, /candles,
// /metrics and /status/ingestion over HTTP and follows /stream; it has no other access.

const WIDTH_MS = { "1m": 60e3, "5m": 300e3, "15m": 900e3, "1h": 3600e3, "1d": 86400e3 };
const BARS = 90;
const POLL_MS = 2000;
const SVG = "http://www.w3.org/2000/svg";

const $ = (id) => document.getElementById(id);
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
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  return { ok: response.ok, body: await response.json() };
}

function element(name, attributes, parent) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  parent.appendChild(node);
  return node;
}

function drawChart(candles) {
  const svg = $("chart");
  const width = svg.clientWidth || 800;
  const height = svg.clientHeight || 400;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.replaceChildren();
  svg.dataset.bars = String(candles.length);
  if (!candles.length) {
    element("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "axis" }, svg)
      .textContent = "no trades in this window yet";
    return;
  }
  const axis = 64;
  const plotWidth = width - axis;
  const priceHeight = height * 0.74;
  const volumeTop = height * 0.8;
  const volumeHeight = height * 0.2 - 16;
  const high = Math.max(...candles.map((c) => c.high));
  const low = Math.min(...candles.map((c) => c.low));
  const span = high - low || Math.abs(high) * 0.01 || 1;
  const maxVolume = Math.max(...candles.map((c) => c.volume)) || 1;
  const y = (price) => 8 + (priceHeight - 16) * (1 - (price - low) / span);
  const slot = plotWidth / Math.max(candles.length, 20);
  const body = Math.max(1, slot * 0.7);

  for (let i = 0; i <= 4; i++) {
    const price = low + (span * i) / 4;
    element("line", { x1: 0, x2: plotWidth, y1: y(price), y2: y(price), class: "grid" }, svg);
    element("text", { x: width - 4, y: y(price) + 4, "text-anchor": "end", class: "axis" }, svg)
      .textContent = price.toFixed(2);
  }
  candles.forEach((c, i) => {
    const x = slot * i + slot / 2;
    const direction = c.close >= c.open ? "up" : "down";
    element("line", { x1: x, x2: x, y1: y(c.high), y2: y(c.low), class: `wick ${direction}` }, svg);
    const top = y(Math.max(c.open, c.close));
    element("rect", {
      x: x - body / 2, y: top, width: body, height: Math.max(1, y(Math.min(c.open, c.close)) - top),
      class: `candle ${direction}`, "data-bucket": c.bucket_start, "data-open": c.open,
      "data-close": c.close, "data-final": c.is_final,
    }, svg);
    const bar = (volumeHeight * c.volume) / maxVolume;
    element("rect", { x: x - body / 2, y: volumeTop + volumeHeight - bar, width: body,
                      height: Math.max(1, bar), class: "volume" }, svg);
  });
  const labels = Math.min(5, candles.length);
  for (let i = 0; i < labels; i++) {
    const index = Math.round((i * (candles.length - 1)) / Math.max(1, labels - 1));
    const when = new Date(candles[index].bucket_start);
    const text = state.interval === "1d" ? when.toISOString().slice(0, 10)
                                          : when.toISOString().slice(11, 16);
    element("text", { x: slot * index + slot / 2, y: height - 2, "text-anchor": "middle",
                      class: "axis" }, svg).textContent = text;
  }
}

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
  window.addEventListener("resize", scheduleCandles);
  follow();
  await Promise.all([loadCandles(), pollStatus()]);
  setInterval(pollStatus, POLL_MS);
  setInterval(loadCandles, 15000);  // buckets close even when nothing trades
}

start();
