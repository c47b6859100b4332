// Talking to the service: requests with this tab's key, the error shape said in words, and answers read
// defensively (exact seeds; bands and paths in any of the shapes a response may use).
// It talks to this origin's API like any client: the same routes, keys, limits and error shape.

import { state } from "./state.js";

// --- JSON with exact seeds ----------------------------------------------------------------------
// Seeds may be above 2^53, which a JavaScript number rounds; keep their digits as strings.
export function parseJson(text) {
  return JSON.parse(text, function (key, value, context) {
    if (key === "seed" && typeof value === "number") {
      return context && typeof context.source === "string" ? context.source : String(value);
    }
    return value;
  });
}

// --- errors -----------------------------------------------------------------------------------
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
// A FormData body (the Jobs panel's upload) gets the browser's multipart Content-Type with its boundary.
function headers(body) {
  const h = body instanceof FormData ? {} : { "Content-Type": "application/json" };
  if (state.apiKey) h["X-API-Key"] = state.apiKey;
  return h;
}

export async function call(method, path, body) {
  let response;
  try {
    response = await fetch(path, { method, headers: headers(body), body, cache: "no-store", credentials: "omit" });
  } catch (error) {
    return { ok: false, status: 0, text: "", message: `Could not reach the server: ${error.message}.` };
  }
  const text = await response.text();
  if (response.ok) return { ok: true, status: response.status, text };
  return { ok: false, status: response.status, text, message: describeError(response.status, text, response.headers) };
}

// --- answers ----------------------------------------------------------------------------------
// Bands and paths as the chart, the CSV download and the backtest read them.
export function closesOf(entry) {
  // A close band or path in any of the shapes a response may use: rows, [o, h, l, c, …] or numbers.
  const list = Array.isArray(entry) ? entry : entry && (entry.forecast || entry.values || entry.close);
  if (!Array.isArray(list)) return null;
  return list.map((x) => (typeof x === "number" ? x : Array.isArray(x) ? x[3] : x && x.close));
}

export function bandCloses(json, level) {
  const near = (q) => q && Math.abs(Number(q.level) - level) < 1e-9;
  const headline = Array.isArray(json.close_quantiles) ? json.close_quantiles.find(near) : null;
  const perColumn = Array.isArray(json.quantiles) ? json.quantiles.find(near) : null;
  return closesOf(headline) || closesOf(perColumn);
}
