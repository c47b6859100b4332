// The backtest panel: POST /v1/backtest with the forecast form's settings and the panel's own, its
// metrics, coverage and windows as tables (windows also marked on the chart), or why it is unavailable.

import { call, parseJson } from "./api.js";
import { drawBacktest } from "./chart.js";
import { $, hideMessage, showMessage } from "./dom.js";
import { forecastBody, wholeNumber } from "./forecast-form.js";
import { state } from "./state.js";

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

// Old results go when the series changes (they were about another one).
export function clearBacktestResult() {
  $("backtest-result").hidden = true;
  if (state.config.backtest) hideMessage($("backtest-message")); // "unavailable" stays said
}

// offset: rows of the series before the first one sent (origins are counted in the rows sent).
function showBacktest(json, offset) {
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
    windows.map((w) => [String(w.origin + offset), w.timestamp || "—", w.seed ?? "—", number(w.mae)]),
  );
  drawBacktest(
    windows.map((w) => ({ ...w, origin: Number.isInteger(w.origin) ? w.origin + offset : w.origin })),
    (w) => `MAE ${number(w.mae)}`,
  );
  const summary = skill.length ? `Skill (1 − model/baseline): ${skill.map(([k, v]) => `${k} ${number(v)}`).join(", ")}.` : "";
  showMessage(`${windows.length} windows backtested. ${summary}`, $("backtest-message"));
  $("backtest-result").hidden = false;
}

export function backtestUnavailable() {
  showMessage("Backtest is unavailable on this server (it has no /v1/backtest route).", $("backtest-message"));
  $("backtest-result").hidden = true;
}

async function runBacktest() {
  if (state.busy || !state.series) return;
  if (!state.config.backtest) return backtestUnavailable();
  let request;
  let sent;
  try {
    const extra = { windows: wholeNumber("bt-windows", "Windows", 1), calibrate: $("bt-calibrate").checked };
    if ($("bt-step").value.trim()) extra.step = wholeNumber("bt-step", "Rows between origins", 1);
    if ($("bt-lookback").value.trim()) extra.lookback = wholeNumber("bt-lookback", "Rows of context", 1);
    // every row the server takes (the windows need more history than one forecast); its lookback keeps
    // each window inside the model's context
    sent = Math.min(state.series.rows.length, state.config.max_rows || state.series.rows.length);
    request = forecastBody(extra, { paths: false, rows: sent });
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
    showBacktest(parseJson(answer.text), state.series.rows.length - sent);
  } finally {
    state.busy = false;
  }
}

export function wireBacktestPanel() {
  $("backtest").addEventListener("click", runBacktest);
}
