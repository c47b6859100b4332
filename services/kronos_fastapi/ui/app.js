// The forecast page's entry module: chart a series, ask the service for a forecast (and a backtest), draw
// the answer, run a universe as a job. It reads /ui/config.json (what this server offers), wires the
// panels and loads the example. Responses are read defensively: fields other versions add or leave null
// are optional. Loaded as <script type="module"> after the vendored chart library's classic script; no
// build step.

import { backtestUnavailable, wireBacktestPanel } from "./backtest-panel.js";
import { loadExample, wireDataInput } from "./data-input.js";
import { $ } from "./dom.js";
import { loadModels, showSamplingDefaults, wireForecastForm } from "./forecast-form.js";
import { showJobsPanel, wireJobsPanel } from "./jobs-panel.js";
import { state } from "./state.js";

// What this server offers (/ui/config.json): only that is shown.
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
  $("paths-option").hidden = !cfg.sample_flag; // the legend's entry shows once paths are drawn
  if (!cfg.backtest) backtestUnavailable();
  showJobsPanel(); // only where the server serves /v1/jobs
  showSamplingDefaults();
}

wireForecastForm();
wireDataInput();
wireBacktestPanel();
wireJobsPanel();

(async function start() {
  await loadConfig();
  await Promise.all([loadExample(), loadModels()]);
  document.body.dataset.ready = "true"; // for tests and scripts: the example is charted
})();
