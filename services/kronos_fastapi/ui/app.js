// The forecast page: chart a series, ask the service for a forecast (and a backtest), draw the answer.
// It talks to this origin's API like any client: the same routes, keys, limits and error shape.
// Responses are read defensively: fields other versions add or leave null are optional here.
"use strict";

(function () {
  const LWC = window.LightweightCharts;
  const $ = (id) => document.getElementById(id);
  const DAY = 86400;
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

  const state = {
    config: {},
    series: null, // {name, columns, rows, times (chart seconds), stamps (sent to the API) or null}
    forecast: null, // {json, text, seed}
    apiKey: "", // this tab's memory only: never stored, never in a URL
    busy: false,
  };

  // --- JSON with exact seeds ----------------------------------------------------------------------
  // Seeds may be above 2^53, which a JavaScript number rounds; keep their digits as strings.
  function parseJson(text) {
    return JSON.parse(text, function (key, value, context) {
      if (key === "seed" && typeof value === "number") {
        return context && typeof context.source === "string" ? context.source : String(value);
      }
      return value;
    });
  }

  // --- the chart ----------------------------------------------------------------------------------
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

  function clearForecast() {
    forecastCandles.setData([]);
    bandLower.setData([]);
    bandUpper.setData([]);
    band.setPoints([]);
    pathSeries.forEach((s) => chart.removeSeries(s));
    pathSeries = [];
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

  function drawSeries() {
    const s = state.series;
    clearForecast();
    clearBacktest();
    history.setData(s.rows.map((r, i) => ({ time: s.times[i], open: r[0], high: r[1], low: r[2], close: r[3] })));
    drawVolume();
    chart.timeScale().fitContent();
  }

  // --- the series -------------------------------------------------------------------------------
  function stepSeconds(times) {
    const gaps = times.slice(1).map((t, i) => t - times[i]).sort((a, b) => a - b);
    return gaps.length ? gaps[Math.floor(gaps.length / 2)] : DAY;
  }

  function useSeries(name, text) {
    let parsed;
    try {
      parsed = window.KronosCsv.parse(text);
    } catch (error) {
      if (!(error instanceof window.KronosCsv.CsvError)) throw error;
      showMessage(`${name}: ${error.message}`);
      return false;
    }
    // Without timestamps the service counts days from 2024-01-01; the chart does the same.
    const start = Date.UTC(2024, 0, 1) / 1000;
    const times = parsed.times || parsed.rows.map((_, i) => start + i * DAY);
    state.series = { name, ...parsed, times };
    state.forecast = null;
    $("result").hidden = true;
    hideMessage();
    $("series-name").textContent =
      `${name}: ${parsed.rows.length} candles, columns ${parsed.columns.join(", ")}` +
      (parsed.times ? "" : " (no timestamps: rows are read as consecutive days)");
    try {
      drawSeries();
    } catch (error) {
      showMessage(`${name}: the candles could not be charted (${error.message}).`);
    }
    return true;
  }

  async function loadExample() {
    const response = await fetch("/ui/example-goog-daily.csv");
    useSeries("Example: GOOG daily", await response.text());
  }

  // --- messages ---------------------------------------------------------------------------------
  function showMessage(text, box = $("message")) {
    box.textContent = text;
    box.hidden = false;
    // On a phone the message sits above the form: bring it into view (focus stays where it is).
    const { top, bottom } = box.getBoundingClientRect();
    if (top < 0 || bottom > window.innerHeight) box.scrollIntoView({ block: "nearest" });
  }

  function hideMessage(box = $("message")) {
    box.hidden = true;
    box.textContent = "";
  }

  const STATUS_WORDS = {
    400: "The server could not read the request",
    401: "The server needs a valid API key",
    403: "This client is not allowed to use the server",
    404: "The server has no such route",
    413: "The request is too large for the server",
    422: "The server refused the request's contents",
    429: "Too many requests",
    500: "The server failed",
    503: "The server cannot forecast right now",
    504: "The forecast took longer than the server allows",
  };

  // The service's error shape {"error": {"type", "message", "details"}}, said in words.
  function describeError(status, text, headers) {
    let error = null;
    try {
      error = JSON.parse(text).error;
    } catch (_) {
      error = null;
    }
    const words = STATUS_WORDS[status] || "The server answered with an error";
    let sentence = `${words} (HTTP ${status}${error && error.type ? ", " + error.type : ""})`;
    sentence += error && error.message ? `: ${error.message}` : "";
    if (!/[.!?]$/.test(sentence)) sentence += ".";
    if (error && Array.isArray(error.details) && error.details.length > 1) {
      const more = error.details
        .slice(0, 5)
        .filter((d) => d && d.field)
        .map((d) => `${d.field}: ${d.message}`);
      if (more.length) sentence += ` Problems: ${more.join("; ")}.`;
    }
    const retry = headers && headers.get("Retry-After");
    if (retry) sentence += ` Try again in ${retry} s.`;
    if (status === 401) sentence += " Type the key in the API key field.";
    return sentence;
  }

  // --- requests ---------------------------------------------------------------------------------
  function headers() {
    const h = { "Content-Type": "application/json" };
    if (state.apiKey) h["X-API-Key"] = state.apiKey;
    return h;
  }

  async function call(method, path, body) {
    let response;
    try {
      response = await fetch(path, { method, headers: headers(), body, cache: "no-store", credentials: "omit" });
    } catch (error) {
      return { ok: false, status: 0, text: "", message: `Could not reach the server: ${error.message}.` };
    }
    const text = await response.text();
    if (response.ok) return { ok: true, status: response.status, text };
    return { ok: false, status: response.status, text, message: describeError(response.status, text, response.headers) };
  }

  function wholeNumber(id, label, min, max) {
    const raw = $(id).value.trim();
    const value = Number(raw);
    if (!/^\d+$/.test(raw) || value < min || (max && value > max)) {
      throw new RangeError(`${label} must be a whole number from ${min}${max ? " to " + max : " up"}.`);
    }
    return value;
  }

  function positive(id, label, max) {
    const value = Number($(id).value);
    if (!Number.isFinite(value) || value <= 0 || (max && value > max)) {
      throw new RangeError(`${label} must be a number above 0${max ? " and at most " + max : ""}.`);
    }
    return value;
  }

  // The request body as JSON text (the seed goes in as typed: it may be above 2^53).
  function forecastBody(extra = {}) {
    const s = state.series;
    const cfg = state.config;
    const body = {
      data: s.rows,
      pred_len: wholeNumber("pred-len", "Candles to forecast", 1, cfg.max_pred_len),
      sample_count: wholeNumber("sample-count", "Sample paths", 1, cfg.max_sample_count),
      T: positive("temperature", "Temperature T"),
      top_p: positive("top-p", "top_p", 1),
    };
    if (s.stamps) body.timestamps = s.stamps;
    const levels = $("band").value ? $("band").value.split(",").map(Number) : null;
    if (levels && body.sample_count >= 2) body.quantiles = [levels[0], 0.5, levels[1]];
    if (cfg.model_field && !$("model").hidden && $("model").value) body.model = $("model").value;
    if (cfg.sample_flag && $("show-paths").checked) body[cfg.sample_flag] = true;
    Object.assign(body, extra);
    const seed = $("seed").value.trim();
    let text = JSON.stringify(body);
    if (seed) {
      if (!/^\d{1,19}$/.test(seed) || BigInt(seed) >= 2n ** 63n) {
        throw new RangeError("Seed must be a whole number from 0 to 9223372036854775807, or empty.");
      }
      text = `${text.slice(0, -1)},"seed":${seed}}`;
    }
    return { body, text, levels };
  }

  // --- forecast ---------------------------------------------------------------------------------
  function closesOf(entry) {
    // A close band or path in any of the shapes a response may use: rows, [o, h, l, c, …] or numbers.
    const list = Array.isArray(entry) ? entry : entry && (entry.forecast || entry.values || entry.close);
    if (!Array.isArray(list)) return null;
    return list.map((x) => (typeof x === "number" ? x : Array.isArray(x) ? x[3] : x && x.close));
  }

  function bandCloses(json, level) {
    const near = (q) => q && Math.abs(Number(q.level) - level) < 1e-9;
    const headline = Array.isArray(json.close_quantiles) ? json.close_quantiles.find(near) : null;
    const perColumn = Array.isArray(json.quantiles) ? json.quantiles.find(near) : null;
    return closesOf(headline) || closesOf(perColumn);
  }

  function forecastTimes(rows) {
    const s = state.series;
    const last = s.times[s.times.length - 1];
    const step = stepSeconds(s.times);
    return rows.map((row, i) => {
      const t = row && row.timestamp ? window.KronosCsv.parseTime(String(row.timestamp)) : null;
      return t === null ? last + (i + 1) * step : t;
    });
  }

  function drawForecast(json, levels) {
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
        const line = chart.addSeries(LWC.LineSeries, { ...lineOptions, color: COLORS.path, lineWidth: 1 });
        line.setData(
          closes.map((value, i) => ({ time: times[i], value })).filter((p) => typeof p.value === "number"),
        );
        pathSeries.push(line);
      });
    }
    if (rows.some((r) => r.volume === null || r.volume === undefined)) note += "No volume forecast (none in the input). ";
    // Whatever the server says about the answer (e.g. candles it repaired), as it says it.
    const remarks = [].concat(json.notes || [], json.warnings || [], json.note || []);
    remarks.filter((r) => typeof r === "string").forEach((r) => (note += `${r} `));
    return note;
  }

  function showResult(json, roundTripMs, note) {
    const model = typeof json.model === "string" ? json.model : json.model ? JSON.stringify(json.model) : "—";
    $("result-seed").textContent = json.seed ?? "—";
    $("result-model").textContent = model;
    $("result-device").textContent = json.device || "—";
    const server = typeof json.elapsed_ms === "number" ? `${(json.elapsed_ms / 1000).toFixed(2)} s on the server, ` : "";
    $("result-elapsed").textContent = `${server}${(roundTripMs / 1000).toFixed(2)} s round trip`;
    $("result-note").textContent =
      `${json.pred_len ?? ""} candles from ${json.sample_count ?? "?"} sample path(s). ` +
      `Send the same seed and settings to get the same forecast. ${note}`;
    $("result").hidden = false;
  }

  async function runForecast() {
    if (state.busy || !state.series) return;
    hideMessage();
    let request;
    try {
      request = forecastBody();
    } catch (error) {
      if (!(error instanceof RangeError)) throw error;
      showMessage(error.message);
      return;
    }
    state.busy = true;
    $("forecast").setAttribute("aria-busy", "true");
    $("busy").textContent = "Forecasting…";
    const started = performance.now();
    try {
      const answer = await call("POST", "/v1/predict/single", request.text);
      if (!answer.ok) {
        showMessage(answer.message);
        return;
      }
      const json = parseJson(answer.text);
      state.forecast = { json, text: answer.text, levels: request.levels };
      let note;
      try {
        note = drawForecast(json, request.levels);
      } catch (error) {
        showMessage(`The forecast arrived but could not be drawn: ${error.message}`);
        return;
      }
      showResult(json, performance.now() - started, note);
    } finally {
      state.busy = false;
      $("forecast").removeAttribute("aria-busy");
      $("busy").textContent = "";
    }
  }

  // --- downloads --------------------------------------------------------------------------------
  function download(name, type, text) {
    const url = URL.createObjectURL(new Blob([text], { type }));
    const link = document.createElement("a");
    link.href = url;
    link.download = name;
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }

  function forecastCsv() {
    const { json, levels } = state.forecast;
    const rows = json.forecast || [];
    const columns = ["open", "high", "low", "close", "volume", "amount"].filter((c) =>
      rows.some((r) => r[c] !== null && r[c] !== undefined),
    );
    const bands = (levels || []).map((level) => ({ level, closes: bandCloses(json, level) })).filter((b) => b.closes);
    const header = ["step", "timestamp", ...columns, ...bands.map((b) => `close_q${Math.round(b.level * 100)}`)];
    const lines = [header.join(",")];
    rows.forEach((r, i) => {
      const cells = [r.step ?? i + 1, r.timestamp ?? "", ...columns.map((c) => r[c] ?? "")];
      bands.forEach((b) => cells.push(b.closes[i] ?? ""));
      lines.push(cells.join(","));
    });
    return lines.join("\n") + "\n";
  }

  // --- models -----------------------------------------------------------------------------------
  async function loadModels() {
    if (!state.config.models) return;
    const answer = await call("GET", "/v1/models");
    if (!answer.ok) return; // 401 until a key is typed; 404 on servers without the route
    const body = parseJson(answer.text);
    const list = Array.isArray(body) ? body : body.models || body.data || [];
    const names = list.map((m) => (typeof m === "string" ? m : m && (m.name || m.id))).filter(Boolean);
    const select = $("model");
    const chosen = select.value;
    select.replaceChildren(
      ...names.map((name) => {
        const option = document.createElement("option");
        option.value = option.textContent = name;
        return option;
      }),
    );
    if (names.includes(chosen)) select.value = chosen;
    else if (body.default && names.includes(body.default)) select.value = body.default;
    select.hidden = $("model-label").hidden = names.length === 0;
  }

  // --- backtest ---------------------------------------------------------------------------------
  const METRICS = [
    ["mae", "MAE"],
    ["rmse", "RMSE"],
    ["mape", "MAPE"],
    ["direction_accuracy", "Direction accuracy"],
    ["crps", "CRPS"],
  ];

  function number(value) {
    if (typeof value === "string" && /^\d+$/.test(value)) return value;
    if (typeof value !== "number" || !Number.isFinite(value)) return "—";
    return Math.abs(value) >= 1000 ? value.toFixed(0) : value.toPrecision(4);
  }

  function percent(value) {
    return typeof value === "number" && Number.isFinite(value) ? `${+(value * 100).toFixed(1)}%` : "—";
  }

  function fillTable(table, header, rows) {
    const head = document.createElement("tr");
    header.forEach((text) => {
      const th = document.createElement("th");
      th.scope = "col";
      th.textContent = text;
      head.appendChild(th);
    });
    const body = rows.map((cells) => {
      const tr = document.createElement("tr");
      cells.forEach((text, i) => {
        const cell = document.createElement(i === 0 ? "th" : "td");
        if (i === 0) cell.scope = "row";
        cell.textContent = text;
        tr.appendChild(cell);
      });
      return tr;
    });
    table.replaceChildren(head, ...body);
  }

  function flatten(value, prefix = "") {
    // {"mae": {"last_value": 0.1}} → [["mae last_value", 0.1]]: skill comes in more than one shape.
    if (value === null || typeof value !== "object") return [[prefix || "skill", value]];
    return Object.entries(value).flatMap(([k, v]) => flatten(v, prefix ? `${prefix} ${k}` : k));
  }

  function showBacktest(json) {
    const metrics = json.metrics || {};
    const baselines = json.baselines || {};
    const names = Object.keys(baselines);
    fillTable(
      $("bt-metrics"),
      ["Metric", "Kronos", ...names.map((n) => n.replace(/_/g, " "))],
      METRICS.map(([key, label]) => [label, number(metrics[key]), ...names.map((n) => number((baselines[n] || {})[key]))]),
    );
    // Skill is reported per baseline ({"baselines": {"drift": {"skill": {"mae": …}}}}).
    const perBaseline = Object.fromEntries(
      names.filter((n) => baselines[n] && baselines[n].skill).map((n) => [n.replace(/_/g, " "), baselines[n].skill]),
    );
    const skill = flatten(json.skill ?? perBaseline).filter(([, v]) => typeof v === "number");
    const coverage = Array.isArray(metrics.coverage) ? metrics.coverage : [];
    const calibrated = coverage.some((c) => c && c.observed_calibrated !== undefined);
    fillTable(
      $("bt-coverage"),
      ["Band", "Nominal", "Observed", ...(calibrated ? ["Observed, calibrated"] : [])],
      coverage.map((c) => [
        `${percent(c.lower)}–${percent(c.upper)}`,
        percent(c.nominal),
        percent(c.observed),
        ...(calibrated ? [percent(c.observed_calibrated)] : []),
      ]),
    );
    const windows = Array.isArray(json.windows) ? json.windows : [];
    fillTable(
      $("bt-windows-table"),
      ["Origin row", "Timestamp", "Seed", "MAE"],
      windows.map((w) => [String(w.origin), w.timestamp || "—", w.seed ?? "—", number(w.mae)]),
    );
    const s = state.series;
    clearBacktest();
    const marks = windows
      .filter((w) => Number.isInteger(w.origin) && w.origin >= 0 && w.origin < s.times.length)
      .map((w) => ({
        time: s.times[w.origin],
        position: "aboveBar",
        shape: "arrowDown",
        color: COLORS.forecastBorder,
        text: `MAE ${number(w.mae)}`,
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
      const line = chart.addSeries(LWC.LineSeries, { ...lineOptions, color: COLORS.forecastBorder, lineWidth: 2 });
      line.setData(points);
      windowSeries.push(line);
    });
    const summary = skill.length ? `Skill (1 − model/baseline): ${skill.map(([k, v]) => `${k} ${number(v)}`).join(", ")}.` : "";
    showMessage(`${windows.length} windows backtested. ${summary}`, $("backtest-message"));
    $("backtest-result").hidden = false;
  }

  function backtestUnavailable() {
    showMessage("Backtest is unavailable on this server (it has no /v1/backtest route).", $("backtest-message"));
    $("backtest-result").hidden = true;
  }

  async function runBacktest() {
    if (state.busy || !state.series) return;
    if (!state.config.backtest) return backtestUnavailable();
    let request;
    try {
      const extra = { windows: wholeNumber("bt-windows", "Windows", 1), calibrate: $("bt-calibrate").checked };
      if ($("bt-step").value.trim()) extra.step = wholeNumber("bt-step", "Rows between origins", 1);
      if ($("bt-lookback").value.trim()) extra.lookback = wholeNumber("bt-lookback", "Rows of context", 1);
      request = forecastBody(extra);
    } catch (error) {
      if (!(error instanceof RangeError)) throw error;
      showMessage(error.message, $("backtest-message"));
      return;
    }
    state.busy = true;
    showMessage("Backtesting…", $("backtest-message"));
    try {
      const answer = await call("POST", "/v1/backtest", request.text);
      if (answer.status === 404) return backtestUnavailable();
      if (!answer.ok) {
        showMessage(answer.message, $("backtest-message"));
        $("backtest-result").hidden = true;
        return;
      }
      showBacktest(parseJson(answer.text));
    } finally {
      state.busy = false;
    }
  }

  // --- wiring -----------------------------------------------------------------------------------
  async function loadConfig() {
    try {
      const response = await fetch("/ui/config.json", { cache: "no-store" });
      state.config = response.ok ? await response.json() : {};
    } catch (_) {
      state.config = {};
    }
    const cfg = state.config;
    if (cfg.max_pred_len) $("pred-len").max = cfg.max_pred_len;
    if (cfg.max_sample_count) $("sample-count").max = cfg.max_sample_count;
    $("api-key-row").hidden = !cfg.api_key_required;
    $("paths-option").hidden = $("legend-paths").hidden = !cfg.sample_flag;
    if (!cfg.backtest) backtestUnavailable();
  }

  $("settings").addEventListener("submit", (event) => {
    event.preventDefault();
    runForecast();
  });
  $("csv-file").addEventListener("change", async () => {
    const file = $("csv-file").files[0];
    if (file) useSeries(file.name, await file.text());
  });
  $("use-pasted").addEventListener("click", () => {
    const text = $("csv-text").value;
    if (text.trim()) useSeries("Pasted CSV", text);
    else showMessage("The paste box is empty: paste CSV text with a header row first.");
  });
  $("use-example").addEventListener("click", loadExample);
  $("api-key").addEventListener("input", () => {
    state.apiKey = $("api-key").value.trim();
  });
  $("api-key").addEventListener("change", loadModels);
  $("download-csv").addEventListener("click", () => {
    if (state.forecast) download(`kronos-forecast-${state.forecast.json.seed}.csv`, "text/csv", forecastCsv());
  });
  $("download-json").addEventListener("click", () => {
    if (state.forecast) download(`kronos-forecast-${state.forecast.json.seed}.json`, "application/json", state.forecast.text);
  });
  $("reuse-seed").addEventListener("click", () => {
    if (state.forecast) $("seed").value = state.forecast.json.seed;
  });
  $("backtest").addEventListener("click", runBacktest);

  (async function start() {
    await loadConfig();
    await Promise.all([loadExample(), loadModels()]);
    document.body.dataset.ready = "true"; // for tests and scripts: the example is charted
  })();
})();
