// Candles from CSV text, checked the way the service checks them, so a bad file is named by line and
// column in the page instead of coming back as a 422 about data[i][j].
// Header names as the Python API takes them, in any case: timestamps (or timestamp, date, datetime,
// time; an unnamed first column counts too), open, high, low, close, and optional volume, amount.

const PRICES = ["open", "high", "low", "close"];
const TIME_NAMES = ["timestamps", "timestamp", "date", "datetime", "time"];

export class CsvError extends Error {}

function splitLine(line, delimiter) {
  const cells = [];
  let cell = "";
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const ch = line[i];
    if (quoted) {
      if (ch === '"' && line[i + 1] === '"') {
        cell += '"';
        i++;
      } else if (ch === '"') {
        quoted = false;
      } else {
        cell += ch;
      }
    } else if (ch === '"') {
      quoted = true;
    } else if (ch === delimiter) {
      cells.push(cell.trim());
      cell = "";
    } else {
      cell += ch;
    }
  }
  cells.push(cell.trim());
  return cells;
}

// A timestamp as the service reads it (ISO 8601): a date gets midnight, a space becomes a T.
function isoStamp(text) {
  const iso = text.trim().replace(" ", "T");
  return /^\d{4}-\d{2}-\d{2}$/.test(iso) ? iso + "T00:00:00" : iso;
}

// A timestamp as UTC seconds, for the chart: naive date-times are read as UTC, like pandas does.
export function parseTime(text) {
  let iso = isoStamp(text);
  if (/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?$/.test(iso)) iso += "Z";
  const ms = Date.parse(iso);
  return Number.isFinite(ms) && /^\d{4}-\d{2}-\d{2}/.test(iso) ? ms / 1000 : null;
}

export function parse(text) {
  const lines = text.replace(/^\uFEFF/, "").split(/\r\n|\n|\r/);
  let headerAt = lines.findIndex((line) => line.trim() !== "");
  if (headerAt < 0) throw new CsvError("The CSV is empty.");
  const headerLine = lines[headerAt];
  const delimiter = [",", ";", "\t"].find((d) => headerLine.includes(d)) || ",";
  const header = splitLine(headerLine, delimiter).map((name) => name.toLowerCase());
  const index = {};
  header.forEach((name, i) => {
    if (name && !(name in index)) index[name] = i;
  });
  const missing = PRICES.filter((name) => !(name in index));
  if (missing.length) {
    throw new CsvError(
      `Line ${headerAt + 1} (the header) has no ${missing.join(", ")} column: it needs open, high, low and close ` +
        `(found: ${header.filter(Boolean).join(", ") || "nothing"}).`,
    );
  }
  let timeColumn = TIME_NAMES.map((name) => index[name]).find((i) => i !== undefined);
  if (timeColumn === undefined && header[0] === "") timeColumn = 0;
  const columns = [...PRICES];
  if ("volume" in index) {
    columns.push("volume");
    if ("amount" in index) columns.push("amount");
  }

  const rows = [];
  const times = timeColumn === undefined ? null : [];
  const stamps = times ? [] : null;
  for (let at = headerAt + 1; at < lines.length; at++) {
    if (lines[at].trim() === "") continue;
    const line = at + 1;
    const cells = splitLine(lines[at], delimiter);
    const row = columns.map((name) => {
      const raw = cells[index[name]];
      if (raw === undefined || raw === "") throw new CsvError(`Line ${line}, column ${name}: the value is missing.`);
      const value = Number(raw);
      if (!Number.isFinite(value)) throw new CsvError(`Line ${line}, column ${name}: "${raw}" is not a number.`);
      return value;
    });
    const [open, high, low, close] = row;
    if (high < low) throw new CsvError(`Line ${line}, column high: high ${high} is below low ${low}.`);
    if (Math.max(open, close) > high || Math.min(open, close) < low) {
      const name = Math.max(open, close) > high ? "high" : "low";
      throw new CsvError(`Line ${line}, column ${name}: open and close must lie between low and high.`);
    }
    if (times) {
      const name = header[timeColumn] || "timestamps";
      const raw = cells[timeColumn] || "";
      const t = parseTime(raw);
      if (t === null) throw new CsvError(`Line ${line}, column ${name}: "${raw}" is not a date or time.`);
      if (times.length && t <= times[times.length - 1]) {
        throw new CsvError(`Line ${line}, column ${name}: ${raw} is not after the row before (rows go oldest first).`);
      }
      times.push(t);
      stamps.push(isoStamp(raw));
    }
    rows.push(row);
  }
  if (rows.length === 0) throw new CsvError("The CSV has a header but no rows.");
  return { columns, rows, times, stamps };
}
