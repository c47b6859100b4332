// The forecast form: its settings read and checked into a request body (the backtest sends the same),
// the model choice and API key, POST /v1/predict/single, and the result box with its downloads.

import { bandCloses, call, parseJson } from "./api.js";
import { drawForecast } from "./chart.js";
import { $, hideMessage, showMessage } from "./dom.js";
import { state } from "./state.js";

// --- the request ------------------------------------------------------------------------------
export function wholeNumber(id, label, min, max) {
  const raw = $(id).value.trim();
  const value = Number(raw);
  if (!/^\d+$/.test(raw) || value < min || (max && value > max)) {
    throw new RangeError(`${label} must be a whole number from ${min}${max ? " to " + max : " up"}.`);
  }
  return value;
}

// An optional setting: undefined when empty (the server's default applies), else a number above 0.
function positive(id, label, max) {
  if ($(id).value.trim() === "") return undefined;
  const value = Number($(id).value);
  if (!Number.isFinite(value) || value <= 0 || (max && value > max)) {
    throw new RangeError(`${label} must be a number above 0${max ? " and at most " + max : ""}, or empty.`);
  }
  return value;
}

// The server's sampling defaults (/ui/config.json: one rule for every way in) as the fields' placeholders:
// T and top_p left empty get them, and the answer's `sampling` says what was used.
export function showSamplingDefaults() {
  const defaults = state.config.sampling;
  if (!defaults) return;
  const paths = Number($("sample-count").value);
  const used = paths >= 2 ? defaults.several_paths : defaults.one_path;
  $("temperature").placeholder = String(used.temperature);
  $("top-p").placeholder = String(used.top_p);
}

// --- the rows sent -----------------------------------------------------------------------------
// The chosen model's context (GET /v1/models), else the default model's (/ui/config.json).
function context() {
  const chosen = $("model").hidden ? null : $("model").value;
  return (chosen && state.contexts[chosen]) || state.config.max_context || null;
}

// How many of the series' last rows a forecast sends: the typed number (at most KRONOS_MAX_ROWS), else
// all the model can use without its window sliding (rows + pred_len within max_context), else all.
export function historyRows() {
  const total = state.series.rows.length;
  const limit = state.config.max_rows || total;
  if ($("history-rows").value.trim()) {
    return Math.min(total, wholeNumber("history-rows", "History rows sent", 2, limit));
  }
  const predLen = Number($("pred-len").value);
  const fit = context() && Number.isInteger(predLen) && predLen > 0 ? Math.max(2, context() - predLen) : total;
  return Math.min(total, fit, limit);
}

// Says how many rows are sent and why (the visible side of the control above).
export function showRowsNote() {
  if (!state.series) return;
  const total = state.series.rows.length;
  let rows;
  try {
    rows = historyRows();
  } catch (error) {
    if (!(error instanceof RangeError)) throw error;
    $("rows-note").textContent = error.message;
    return;
  }
  let why = "";
  if (!$("history-rows").value.trim() && rows < total) {
    why =
      rows === state.config.max_rows && rows < context() - Number($("pred-len").value)
        ? ` (the server takes at most ${rows} rows, KRONOS_MAX_ROWS)`
        : `: with ${$("pred-len").value} candles to forecast, the model's context of ${context()} holds no more; ` +
          "more rows would make every step recompute the whole window (much slower)";
  }
  $("rows-note").textContent = `The last ${rows} of ${total} rows are sent${why}.`;
}

// The request body as JSON text (the seed goes in as typed: it may be above 2^53). With paths false the
// sample paths are not asked for (the backtest takes no return_paths). rows: how many of the last rows.
export function forecastBody(extra = {}, { paths = true, rows = null } = {}) {
  const s = state.series;
  const cfg = state.config;
  const sent = rows ?? historyRows();
  const body = {
    data: s.rows.slice(s.rows.length - sent),
    pred_len: wholeNumber("pred-len", "Candles to forecast", 1, cfg.max_pred_len),
    sample_count: wholeNumber("sample-count", "Sample paths", 1, cfg.max_sample_count),
  };
  const temperature = positive("temperature", "Temperature T");
  const topP = positive("top-p", "top_p", 1);
  if (temperature !== undefined) body.T = temperature;
  if (topP !== undefined) body.top_p = topP;
  if (s.stamps) body.timestamps = s.stamps.slice(s.stamps.length - sent);
  const levels = $("band").value ? $("band").value.split(",").map(Number) : null;
  if (levels && body.sample_count >= 2) body.quantiles = [levels[0], 0.5, levels[1]];
  if (cfg.model_field && !$("model").hidden && $("model").value) body.model = $("model").value;
  if (paths && cfg.sample_flag && $("show-paths").checked) body[cfg.sample_flag] = true;
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
function showResult(json, roundTripMs, note) {
  const model = typeof json.model === "string" ? json.model : json.model ? JSON.stringify(json.model) : "—";
  $("result-seed").textContent = json.seed ?? "—";
  $("result-model").textContent = model;
  $("result-device").textContent = json.device || "—";
  const server = typeof json.elapsed_ms === "number" ? `${(json.elapsed_ms / 1000).toFixed(2)} s on the server, ` : "";
  $("result-elapsed").textContent = `${server}${(roundTripMs / 1000).toFixed(2)} s round trip`;
  const used = json.sampling
    ? ` Sampled at T ${json.sampling.temperature}, top_p ${json.sampling.top_p}, top_k ${json.sampling.top_k}.`
    : "";
  $("result-note").textContent =
    `${json.pred_len ?? ""} candles from ${json.sample_count ?? "?"} sample path(s).${used} ` +
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

// Band columns named as predict_df, kronos-forecast and the API's levels name them: close_q0.1, close_q0.9.
function forecastCsv() {
  const { json, levels } = state.forecast;
  const rows = json.forecast || [];
  const columns = ["open", "high", "low", "close", "volume", "amount"].filter((c) =>
    rows.some((r) => r[c] !== null && r[c] !== undefined),
  );
  const bands = (levels || []).map((level) => ({ level, closes: bandCloses(json, level) })).filter((b) => b.closes);
  const header = ["step", "timestamp", ...columns, ...bands.map((b) => `close_q${b.level}`)];
  const lines = [header.join(",")];
  rows.forEach((r, i) => {
    const cells = [r.step ?? i + 1, r.timestamp ?? "", ...columns.map((c) => r[c] ?? "")];
    bands.forEach((b) => cells.push(b.closes[i] ?? ""));
    lines.push(cells.join(","));
  });
  return lines.join("\n") + "\n";
}

// --- models -----------------------------------------------------------------------------------
export async function loadModels() {
  if (!state.config.models) return;
  const answer = await call("GET", "/v1/models");
  if (!answer.ok) return; // 401 until a key is typed; 404 on servers without the route
  const body = parseJson(answer.text);
  const list = Array.isArray(body) ? body : body.models || body.data || [];
  const names = list.map((m) => (typeof m === "string" ? m : m && (m.name || m.id))).filter(Boolean);
  state.contexts = Object.fromEntries(list.filter((m) => m && m.name && m.max_context).map((m) => [m.name, m.max_context]));
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
  showRowsNote();
}

export function wireForecastForm() {
  $("settings").addEventListener("submit", (event) => {
    event.preventDefault();
    runForecast();
  });
  $("api-key").addEventListener("input", () => {
    state.apiKey = $("api-key").value.trim();
  });
  $("api-key").addEventListener("change", loadModels);
  $("sample-count").addEventListener("input", showSamplingDefaults);
  for (const id of ["pred-len", "history-rows"]) $(id).addEventListener("input", showRowsNote);
  $("model").addEventListener("change", showRowsNote);
  $("download-csv").addEventListener("click", () => {
    if (state.forecast) download(`kronos-forecast-${state.forecast.json.seed}.csv`, "text/csv", forecastCsv());
  });
  $("download-json").addEventListener("click", () => {
    if (state.forecast) download(`kronos-forecast-${state.forecast.json.seed}.json`, "application/json", state.forecast.text);
  });
  $("reuse-seed").addEventListener("click", () => {
    if (state.forecast) $("seed").value = state.forecast.json.seed;
  });
}
