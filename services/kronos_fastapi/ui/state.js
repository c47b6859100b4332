// The page's shared state: the server's config, the series on the chart, the last forecast, the key.
// One object, imported by the modules that read or change it.

export const state = {
  config: {},
  series: null, // {name, columns, rows, times (chart seconds), stamps (sent to the API) or null}
  forecast: null, // {json, text, levels}: the last forecast answer, for the downloads
  apiKey: "", // this tab's memory only: never stored, never in a URL
  busy: false,
  contexts: {}, // model name → max_context (GET /v1/models): how many rows a forecast can use
};
