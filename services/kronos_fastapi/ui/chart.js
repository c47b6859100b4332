// The chart: Lightweight Charts (the vendored classic script's global, loaded before the modules), the
// history candles and volume, the forecast with its band and sample paths, and the backtest's windows.
// It draws what it is given; the series it draws is state.series.

import { bandCloses, closesOf } from "./api.js";
import { parseTime } from "./csv.js";
import { $ } from "./dom.js";
import { state } from "./state.js";

const LWC = window.LightweightCharts;
export const DAY = 86400;
const COLORS = {
  up: "#26a69a",
  down: "#ef5350",
  forecastUp: "rgba(41, 98, 255, 0.45)",
  forecastDown: "rgba(156, 39, 176, 0.45)",
  forecastBorder: "#2962ff",
  band: "rgba(41, 98, 255, 0.14)",
  bandEdge: "rgba(41, 98, 255, 0.6)",
  path: "rgba(90, 90, 90, 0.35)",
  volume: "rgba(120, 123, 134, 0.45)",
  forecastVolume: "rgba(41, 98, 255, 0.4)",
};

class BandPrimitive {
  // Fills the area between the lower and upper close quantiles (the library has lines, not bands).
  constructor() {
    this.points = [];
    this.coords = [];
    this.view = {
      zOrder: () => "bottom",
      renderer: () => ({ draw: (target) => this.draw(target) }),
    };
  }
  attached({ chart, series, requestUpdate }) {
    this.chart = chart;
    this.series = series;
    this.requestUpdate = requestUpdate;
  }
  detached() {
    this.chart = this.series = this.requestUpdate = null;
  }
  setPoints(points) {
    this.points = points;
    if (this.requestUpdate) this.requestUpdate();
  }
  updateAllViews() {
    if (!this.chart) return;
    const timeScale = this.chart.timeScale();
    this.coords = this.points
      .map((p) => ({
        x: timeScale.timeToCoordinate(p.time),
        lower: this.series.priceToCoordinate(p.lower),
        upper: this.series.priceToCoordinate(p.upper),
      }))
      .filter((c) => c.x !== null && c.lower !== null && c.upper !== null);
  }
  paneViews() {
    return [this.view];
  }
  draw(target) {
    const coords = this.coords;
    if (coords.length < 2) return;
    target.useBitmapCoordinateSpace(({ context, horizontalPixelRatio: h, verticalPixelRatio: v }) => {
      context.beginPath();
      coords.forEach((c, i) => (i ? context.lineTo(c.x * h, c.upper * v) : context.moveTo(c.x * h, c.upper * v)));
      for (let i = coords.length - 1; i >= 0; i--) context.lineTo(coords[i].x * h, coords[i].lower * v);
      context.closePath();
      context.fillStyle = COLORS.band;
      context.fill();
    });
  }
}

const chart = LWC.createChart($("chart"), {
  autoSize: true,
  layout: {
    attributionLogo: false, // its <style> element breaks the page's CSP; the footer credits TradingView
    background: { type: LWC.ColorType.Solid, color: "#ffffff" },
    textColor: "#333",
    fontFamily: "system-ui, sans-serif",
  },
  grid: { vertLines: { color: "#f0f0f0" }, horzLines: { color: "#f0f0f0" } },
  timeScale: { borderColor: "#ccc" },
  rightPriceScale: { borderColor: "#ccc" },
});
const lineOptions = { lastValueVisible: false, priceLineVisible: false, crosshairMarkerVisible: false };
const history = chart.addSeries(LWC.CandlestickSeries, {
  upColor: COLORS.up,
  downColor: COLORS.down,
  borderVisible: false,
  wickUpColor: COLORS.up,
  wickDownColor: COLORS.down,
});
const forecastCandles = chart.addSeries(LWC.CandlestickSeries, {
  priceLineVisible: false,
  upColor: COLORS.forecastUp,
  downColor: COLORS.forecastDown,
  borderUpColor: COLORS.forecastBorder,
  borderDownColor: COLORS.forecastBorder,
  wickUpColor: COLORS.forecastBorder,
  wickDownColor: COLORS.forecastBorder,
});
const bandLower = chart.addSeries(LWC.LineSeries, { ...lineOptions, color: COLORS.bandEdge, lineWidth: 1 });
const bandUpper = chart.addSeries(LWC.LineSeries, { ...lineOptions, color: COLORS.bandEdge, lineWidth: 1 });
const band = new BandPrimitive();
bandUpper.attachPrimitive(band);
const volume = chart.addSeries(LWC.HistogramSeries, { priceFormat: { type: "volume" }, ...lineOptions }, 1);
chart.panes()[1].setHeight(90);
const markers = LWC.createSeriesMarkers(history, []);
let pathSeries = [];
let windowSeries = [];

// --- the series -------------------------------------------------------------------------------
function clearForecast() {
  forecastCandles.setData([]);
  bandLower.setData([]);
  bandUpper.setData([]);
  band.setPoints([]);
  pathSeries.forEach((s) => chart.removeSeries(s));
  pathSeries = [];
  showPathCount();
}

// How many sample paths are drawn: on the chart element (for tests and scripts) and in the legend.
function showPathCount() {
  $("chart").dataset.paths = String(pathSeries.length);
  $("legend-paths").hidden = pathSeries.length === 0;
}

function clearBacktest() {
  markers.setMarkers([]);
  windowSeries.forEach((s) => chart.removeSeries(s));
  windowSeries = [];
}

function drawVolume(extra) {
  const s = state.series;
  const bars = [];
  if (s.columns.includes("volume")) {
    s.rows.forEach((r, i) =>
      bars.push({ time: s.times[i], value: r[4], color: r[3] >= r[0] ? COLORS.volume : "rgba(239, 83, 80, 0.4)" }),
    );
  }
  (extra || []).forEach((bar) => bars.push({ ...bar, color: COLORS.forecastVolume }));
  volume.setData(bars);
}

// Prices to a precision that fits their size: EURUSD 1.2345, GOOG 806.19, a coin at 0.0012345 (about five
// significant digits, never fewer than two decimals).
function pricePrecision(rows) {
  const closes = rows.map((r) => Math.abs(r[3])).filter((v) => v > 0).sort((a, b) => a - b);
  if (!closes.length) return 2;
  const typical = closes[Math.floor(closes.length / 2)];
  return Math.min(8, Math.max(2, 4 - Math.floor(Math.log10(typical))));
}

let priceFormat = { type: "price", precision: 2, minMove: 0.01 };

// The axes for this series: its price precision, and times of day on intraday data (the day only
// where it changes, instead of every label repeating it).
function fitAxes() {
  const s = state.series;
  const precision = pricePrecision(s.rows);
  priceFormat = { type: "price", precision, minMove: Number((10 ** -precision).toFixed(precision)) };
  [history, forecastCandles, bandLower, bandUpper].forEach((series) => series.applyOptions({ priceFormat }));
  const intraday = s.times.length > 1 && stepSeconds(s.times) < DAY;
  chart.applyOptions({ timeScale: { timeVisible: intraday, secondsVisible: false } });
  $("chart").dataset.pricePrecision = String(precision);
  $("chart").dataset.timeVisible = String(intraday);
}

export function drawSeries() {
  const s = state.series;
  clearForecast();
  clearBacktest();
  fitAxes();
  history.setData(s.rows.map((r, i) => ({ time: s.times[i], open: r[0], high: r[1], low: r[2], close: r[3] })));
  drawVolume();
  chart.timeScale().fitContent();
}

// --- the forecast -----------------------------------------------------------------------------
function stepSeconds(times) {
  const gaps = times.slice(1).map((t, i) => t - times[i]).sort((a, b) => a - b);
  return gaps.length ? gaps[Math.floor(gaps.length / 2)] : DAY;
}

function forecastTimes(rows) {
  const s = state.series;
  const last = s.times[s.times.length - 1];
  const step = stepSeconds(s.times);
  return rows.map((row, i) => {
    const t = row && row.timestamp ? parseTime(String(row.timestamp)) : null;
    return t === null ? last + (i + 1) * step : t;
  });
}

// Draws a forecast answer; returns what the result box says about it (no band, no volume, server notes).
export function drawForecast(json, levels) {
  clearForecast();
  const rows = Array.isArray(json.forecast) ? json.forecast : [];
  const times = forecastTimes(rows);
  const candles = [];
  const bars = [];
  rows.forEach((r, i) => {
    if ([r.open, r.high, r.low, r.close].every((v) => typeof v === "number")) {
      candles.push({ time: times[i], open: r.open, high: r.high, low: r.low, close: r.close });
    }
    if (typeof r.volume === "number") bars.push({ time: times[i], value: Math.max(0, r.volume) });
  });
  forecastCandles.setData(candles);
  drawVolume(bars);
  // Zoom to the forecast and the history just before it (scroll or pinch to see more).
  const n = state.series.rows.length;
  const shown = Math.max(60, 3 * rows.length);
  chart.timeScale().setVisibleLogicalRange({ from: Math.max(0, n - shown), to: n + rows.length + 2 });
  let note = "";
  if (levels) {
    const lower = bandCloses(json, levels[0]);
    const upper = bandCloses(json, levels[1]);
    if (lower && upper) {
      const points = times
        .map((time, i) => ({ time, lower: lower[i], upper: upper[i] }))
        .filter((p) => typeof p.lower === "number" && typeof p.upper === "number");
      bandLower.setData(points.map((p) => ({ time: p.time, value: p.lower })));
      bandUpper.setData(points.map((p) => ({ time: p.time, value: p.upper })));
      band.setPoints(points);
      $("band-legend").textContent = `${levels[0] * 100}%–${levels[1] * 100}% band of close`;
    }
  } else if ($("band").value) {
    note = "A band needs at least 2 sample paths: none drawn. ";
  }
  const paths = json.samples || json.sample_paths || json.paths;
  if (Array.isArray(paths)) {
    paths.slice(0, 64).forEach((path) => {
      const closes = closesOf(path);
      if (!closes) return;
      const line = chart.addSeries(LWC.LineSeries, { ...lineOptions, color: COLORS.path, lineWidth: 1, priceFormat });
      line.setData(
        closes.map((value, i) => ({ time: times[i], value })).filter((p) => typeof p.value === "number"),
      );
      pathSeries.push(line);
    });
    showPathCount();
  }
  if (rows.some((r) => r.volume === null || r.volume === undefined)) note += "No volume forecast (none in the input). ";
  // Whatever the server says about the answer (e.g. candles it repaired), as it says it.
  const remarks = [].concat(json.notes || [], json.warnings || [], json.note || []);
  remarks.filter((r) => typeof r === "string").forEach((r) => (note += `${r} `));
  return note;
}

// --- the backtest -----------------------------------------------------------------------------
// Each window's origin marked (labelled by label(window)) and its own forecast, when the server sends it.
export function drawBacktest(windows, label) {
  const s = state.series;
  clearBacktest();
  const marks = windows
    .filter((w) => Number.isInteger(w.origin) && w.origin >= 0 && w.origin < s.times.length)
    .map((w) => ({
      time: s.times[w.origin],
      position: "aboveBar",
      shape: "arrowDown",
      color: COLORS.forecastBorder,
      text: label(w),
    }))
    .sort((a, b) => a.time - b.time);
  markers.setMarkers(marks);
  windows.forEach((w) => {
    // Forecast vs actual: a window's own forecast, when the server sends it.
    const closes = closesOf(w.forecast);
    if (!closes || !Number.isInteger(w.origin)) return;
    const points = closes
      .map((value, i) => ({ time: s.times[w.origin + i], value }))
      .filter((p) => p.time !== undefined && typeof p.value === "number");
    const line = chart.addSeries(LWC.LineSeries, {
      ...lineOptions,
      color: COLORS.forecastBorder,
      lineWidth: 2,
      priceFormat,
    });
    line.setData(points);
    windowSeries.push(line);
  });
}
