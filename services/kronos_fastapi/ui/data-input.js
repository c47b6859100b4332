// The data panel: a series from a CSV file, pasted CSV or the shipped example, checked by csv.js,
// made the page's series and charted (a bad file is named in #message and the old series stays).

import { clearBacktestResult } from "./backtest-panel.js";
import { DAY, drawSeries } from "./chart.js";
import { CsvError, parse } from "./csv.js";
import { $, hideMessage, showMessage } from "./dom.js";
import { showRowsNote } from "./forecast-form.js";
import { state } from "./state.js";

function useSeries(name, text) {
  let parsed;
  try {
    parsed = parse(text);
  } catch (error) {
    if (!(error instanceof CsvError)) throw error;
    showMessage(`${name}: ${error.message}`);
    return false;
  }
  // Without timestamps the service counts days from 2024-01-01; the chart does the same.
  const start = Date.UTC(2024, 0, 1) / 1000;
  const times = parsed.times || parsed.rows.map((_, i) => start + i * DAY);
  state.series = { name, ...parsed, times };
  state.forecast = null;
  $("result").hidden = true;
  clearBacktestResult();
  hideMessage();
  $("series-name").textContent =
    `${name}: ${parsed.rows.length} candles, columns ${parsed.columns.join(", ")}` +
    (parsed.times ? "" : " (no timestamps: rows are read as consecutive days)");
  showRowsNote();
  try {
    drawSeries();
  } catch (error) {
    showMessage(`${name}: the candles could not be charted (${error.message}).`);
  }
  return true;
}

export async function loadExample() {
  const response = await fetch("/ui/example-goog-daily.csv");
  useSeries("Example: GOOG daily", await response.text());
}

export function wireDataInput() {
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
}
