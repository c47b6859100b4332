// The Jobs panel: a universe (a long CSV, one row per id and timestamp) uploaded as POST /v1/jobs, the job
// followed by GET /v1/jobs/{id} about once a second until it is finished, cancelled with POST .../cancel,
// and its results downloaded as CSV (GET .../results?format=csv). Every call goes through api.js, so the
// tab's API key is sent and the service's error shape is said in words in the panel's error box.
// Shown only when /ui/config.json says this server serves /v1/jobs.

import { call, parseJson } from "./api.js";
import { $, hideMessage, showMessage } from "./dom.js";
import { wholeNumber } from "./forecast-form.js";
import { state } from "./state.js";

const POLL_MS = 1000;
const MAX_POLL_ERRORS = 5; // a status that cannot be read this many times in a row stops the polling
const FINISHED = ["succeeded", "failed", "cancelled", "expired"];
const ACTIVE = ["queued", "running"];
const COUNTS = ["total", "completed", "failed"];

// The job the panel follows; `follow` counts the jobs followed, so an old job's poll stops by itself.
const job = { id: null, status: null, follow: 0, timer: null, errors: 0 };

const errorBox = () => $("jobs-error");

function megabytes(bytes) {
  return `${+(bytes / (1024 * 1024)).toFixed(2)} MiB`;
}

// The server's limits, said under the form (the server checks them; its 413 or 422 is shown as it says it).
function showLimits() {
  const cfg = state.config;
  const parts = [];
  if (cfg.jobs_max_upload_bytes) parts.push(`files up to ${megabytes(cfg.jobs_max_upload_bytes)}`);
  if (cfg.jobs_max_items) parts.push(`at most ${cfg.jobs_max_items} ids a job`);
  $("jobs-limits").textContent = parts.length ? `This server takes ${parts.join(", ")}.` : "";
  if (cfg.max_pred_len) $("jobs-pred-len").max = cfg.max_pred_len;
}

// --- what is shown ------------------------------------------------------------------------------
function showJob(body) {
  const panel = $("jobs-panel");
  const counts = body.counts || {};
  job.status = body.status || null;
  panel.dataset.jobId = job.id;
  panel.dataset.status = job.status || "";
  $("jobs-id").textContent = job.id;
  $("jobs-status").textContent = job.status || "—";
  for (const name of COUNTS) {
    const value = Number.isInteger(counts[name]) ? counts[name] : 0;
    panel.dataset[name] = String(value);
    $(`jobs-${name}`).textContent = String(value);
  }
  $("jobs-progress").hidden = false;
  const settled = (counts.completed || 0) + (counts.failed || 0) + (counts.cancelled || 0);
  $("jobs-cancel").hidden = !ACTIVE.includes(job.status);
  $("jobs-download").hidden = job.status === "expired" || !(FINISHED.includes(job.status) || settled > 0);
  $("jobs-note").textContent = note(body, counts);
}

function note(body, counts) {
  if (job.status === "succeeded") {
    const failed = counts.failed ? ` ${counts.failed} failed (their errors: the results' errors table).` : "";
    return `Done: ${counts.completed} of ${counts.total} ids forecast.${failed}`;
  }
  if (job.status === "failed") {
    return "Every id failed; the errors are in GET /v1/jobs/{id}/results?format=csv&table=errors.";
  }
  if (job.status === "cancelled") {
    const skipped = `${counts.cancelled || 0} of ${counts.total} ids not run`;
    return `Cancelled: ${skipped}; what was done is kept and can be downloaded.`;
  }
  if (job.status === "cancelling") return "Cancelling: the ids in flight stop at their next step…";
  if (job.status === "expired") return "Expired: the server has deleted its results (KRONOS_JOBS_RETENTION_HOURS).";
  return body.status === "queued" ? "Queued: the server runs it beside the page's own forecasts…" : "Running…";
}

function clearJob() {
  const panel = $("jobs-panel");
  for (const key of ["jobId", "status", ...COUNTS]) delete panel.dataset[key];
  $("jobs-progress").hidden = true;
  $("jobs-cancel").hidden = true;
  $("jobs-download").hidden = true;
  $("jobs-note").textContent = "";
  job.id = job.status = null;
}

// --- following a job ----------------------------------------------------------------------------
function stopPolling() {
  clearTimeout(job.timer);
  job.timer = null;
}

function schedulePoll(follow) {
  stopPolling();
  job.timer = setTimeout(() => poll(follow), POLL_MS);
}

async function poll(follow) {
  if (follow !== job.follow) return; // another job is followed now
  const answer = await call("GET", `/v1/jobs/${encodeURIComponent(job.id)}`);
  if (follow !== job.follow) return;
  if (!answer.ok) {
    job.errors += 1;
    showMessage(answer.message, errorBox());
    if (answer.status === 404 || job.errors >= MAX_POLL_ERRORS) {
      stopPolling();
      $("jobs-note").textContent = "The page stopped following this job (its status could not be read).";
      return;
    }
    schedulePoll(follow);
    return;
  }
  if (job.errors) hideMessage(errorBox());
  job.errors = 0;
  showJob(parseJson(answer.text));
  if (FINISHED.includes(job.status)) stopPolling();
  else schedulePoll(follow);
}

function follow(body) {
  job.follow += 1;
  job.id = body.id;
  job.errors = 0;
  showJob(body);
  if (!FINISHED.includes(job.status)) schedulePoll(job.follow);
}

// --- the buttons --------------------------------------------------------------------------------
function uploadForm() {
  const file = $("jobs-file").files[0];
  if (!file) throw new RangeError("Choose a universe CSV file first.");
  const form = new FormData();
  form.append("file", file, file.name);
  form.append("id_column", $("jobs-id-column").value.trim() || "id");
  form.append("timestamp_column", $("jobs-timestamp-column").value.trim() || "timestamps");
  form.append("pred_len", String(wholeNumber("jobs-pred-len", "Candles to forecast", 1, state.config.max_pred_len)));
  // the model chosen in the forecast form, where the server offers a choice
  if (state.config.model_field && !$("model").hidden && $("model").value) form.append("model", $("model").value);
  return form;
}

async function submit() {
  let form;
  try {
    form = uploadForm();
  } catch (error) {
    if (!(error instanceof RangeError)) throw error;
    showMessage(error.message, errorBox());
    return;
  }
  const button = $("jobs-submit");
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  hideMessage(errorBox());
  try {
    const answer = await call("POST", "/v1/jobs", form);
    if (!answer.ok) {
      showMessage(answer.message, errorBox());
      return;
    }
    stopPolling();
    clearJob();
    follow(parseJson(answer.text));
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}

async function cancel() {
  if (!job.id) return;
  const following = job.follow;
  const answer = await call("POST", `/v1/jobs/${encodeURIComponent(job.id)}/cancel`);
  if (following !== job.follow) return;
  if (!answer.ok) {
    showMessage(answer.message, errorBox());
    return;
  }
  hideMessage(errorBox());
  showJob(parseJson(answer.text));
  if (FINISHED.includes(job.status)) stopPolling();
  else if (!job.timer) schedulePoll(following);
}

function save(name, type, text) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

async function download() {
  if (!job.id) return;
  const id = job.id;
  const button = $("jobs-download");
  button.disabled = true;
  try {
    const answer = await call("GET", `/v1/jobs/${encodeURIComponent(id)}/results?format=csv`);
    if (!answer.ok) {
      showMessage(answer.message, errorBox());
      return;
    }
    save(`${id}-forecasts.csv`, "text/csv", answer.text);
  } finally {
    button.disabled = false;
  }
}

// config.json decides: a server without /v1/jobs (KRONOS_JOBS_ENABLED=false) gets no panel at all.
export function showJobsPanel() {
  const on = Boolean(state.config.jobs);
  $("jobs-panel").hidden = !on;
  if (on) showLimits();
}

export function wireJobsPanel() {
  $("jobs-submit").addEventListener("click", submit);
  $("jobs-cancel").addEventListener("click", cancel);
  $("jobs-download").addEventListener("click", download);
}
