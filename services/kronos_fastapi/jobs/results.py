"""A job's results, streamed page by page from the store (also while the job runs: what is done so far).

- **jsonl**: one line per settled item, in input order: ``{"custom_id", "response"}`` with the body the
  item's route answered (stored as it was sent), or ``{"custom_id", "error"}`` with the error object.
- **csv / parquet**, ``table=forecasts`` (forecast jobs): the universe long format of ``predict_df``:
  ``id, timestamps, step, open, high, low, close[, volume[, amount]], close_q<level>..., p_up``, from
  the responses (values as the route rounded them: 7 significant digits). ``table=windows`` (backtest
  jobs): ``id, window, origin, timestamp, seed, mae``. ``table=errors``: ``id, type, message``.

A table's columns are fixed before its first row is sent: a first pass over the settled items finds
them (volume, amount, the quantile levels, p_up, the timestamps' type) and notes which items it saw;
the second pass sends exactly those, so an item settled meanwhile is left for the next read.
"""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from model.decoding.table import quantile_column

from .tables import FAILED, ITEM_DONE, SUCCEEDED

PAGE = 200
FORMATS = {
    "jsonl": "application/x-ndjson",
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
}
TABLES = ("forecasts", "windows", "errors")
PRICES = ("open", "high", "low", "close")

Fetch = Callable[[int, int, tuple[str, ...]], Awaitable[list[Any]]]  # (after idx, limit, statuses) -> rows


async def _pages(fetch: Fetch, statuses: tuple[str, ...]) -> AsyncIterator[list[Any]]:
    after = -1
    while True:
        rows = await fetch(after, PAGE, statuses)
        if not rows:
            return
        yield rows
        after = rows[-1].idx


async def jsonl(fetch: Fetch) -> AsyncIterator[bytes]:
    async for rows in _pages(fetch, ITEM_DONE):
        lines = []
        for row in rows:
            key, value = ("response", row.response) if row.status == SUCCEEDED else ("error", row.error)
            lines.append(f'{{"custom_id":{json.dumps(row.custom_id)},"{key}":{value}}}')
        yield ("\n".join(lines) + "\n").encode()


# --- tables --------------------------------------------------------------------------------------


def _forecast_rows(custom_id: str, response: dict[str, Any]) -> list[dict[str, Any]]:
    steps = response.get("forecast") or response.get("prediction") or []
    bands = response.get("close_quantiles") or []
    p_up = response.get("p_up")
    rows = []
    for i, step in enumerate(steps):
        row = {"id": custom_id, "timestamps": step.get("timestamp"), "step": step.get("step", i + 1)}
        for column in (*PRICES, "volume", "amount"):
            row[column] = step.get(column)
        for band in bands:
            row[quantile_column(band["level"])] = band["close"][i]
        if p_up is not None:
            row["p_up"] = p_up[i]
        rows.append(row)
    return rows


def _window_rows(custom_id: str, response: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"id": custom_id, "window": i, **{k: w.get(k) for k in ("origin", "timestamp", "seed", "mae")}}
        for i, w in enumerate(response.get("windows") or [])
    ]


def _error_rows(custom_id: str, error: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"id": custom_id, "type": error.get("type"), "message": error.get("message")}]


class _Layout:
    """The columns (and Parquet types) of a table, from every row it will hold."""

    def __init__(self, table: str) -> None:
        self.table = table
        self.columns: dict[str, None] = {}
        self.timestamps: set[str] = set()  # "naive", "aware", "none"

    def see(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            for column, value in row.items():
                if value is not None or column in ("id", "timestamps", "step", *PRICES):
                    self.columns.setdefault(column, None)
        if self.table == "forecasts" and rows:  # an item's timestamps are all of one kind
            stamp = rows[0].get("timestamps")
            self.timestamps.add("none" if stamp is None else "aware" if pd.Timestamp(stamp).tz else "naive")

    def names(self) -> list[str]:
        if self.table == "errors":
            return ["id", "type", "message"]
        if self.table == "windows":
            return ["id", "window", "origin", "timestamp", "seed", "mae"]
        base = ["id", "timestamps", "step", *PRICES]
        extra = [c for c in ("volume", "amount") if c in self.columns]
        levels = sorted((c for c in self.columns if c.startswith("close_q")), key=lambda c: float(c[len("close_q") :]))
        return base + extra + levels + (["p_up"] if "p_up" in self.columns else [])

    def schema(self) -> pa.Schema:
        strings = {"id", "type", "message", "timestamp"}
        integers = {"step", "window", "origin", "seed"}
        fields = []
        for name in self.names():
            if name == "timestamps":  # datetimes when all are of one kind (aware ones in UTC), else text
                by_kind = {frozenset({"naive"}): pa.timestamp("us"), frozenset({"aware"}): pa.timestamp("us", "UTC")}
                fields.append(pa.field(name, by_kind.get(frozenset(self.timestamps), pa.string())))
            elif name in strings:
                fields.append(pa.field(name, pa.string()))
            elif name in integers:
                fields.append(pa.field(name, pa.int64()))
            else:
                fields.append(pa.field(name, pa.float64()))
        return pa.schema(fields)

    def frame(self, rows: list[dict[str, Any]], schema: pa.Schema | None = None) -> pd.DataFrame:
        df = pd.DataFrame(rows, columns=self.names())
        if schema is not None and "timestamps" in df and pa.types.is_timestamp(schema.field("timestamps").type):
            utc = schema.field("timestamps").type.tz is not None
            stamps = pd.to_datetime(df["timestamps"], utc=utc, format="ISO8601")
            df["timestamps"] = stamps.dt.tz_convert("UTC") if utc else stamps
        return df


def _rows_of(table: str, row: Any) -> list[dict[str, Any]]:
    if table == "errors":
        return _error_rows(row.custom_id, json.loads(row.error))
    response = json.loads(row.response)
    return _forecast_rows(row.custom_id, response) if table == "forecasts" else _window_rows(row.custom_id, response)


async def _settled(fetch: Fetch, table: str) -> tuple[_Layout, set[int]]:
    layout, seen = _Layout(table), set()
    statuses = (FAILED,) if table == "errors" else (SUCCEEDED,)
    async for rows in _pages(fetch, statuses):
        for row in rows:
            layout.see(_rows_of(table, row))
            seen.add(row.idx)
    return layout, seen


async def _table_pages(fetch: Fetch, table: str, layout: _Layout, seen: set[int]) -> AsyncIterator[list[dict]]:
    statuses = (FAILED,) if table == "errors" else (SUCCEEDED,)
    async for rows in _pages(fetch, statuses):
        page = [r for row in rows if row.idx in seen for r in _rows_of(table, row)]
        if page:
            yield page


async def csv(fetch: Fetch, table: str) -> AsyncIterator[bytes]:
    layout, seen = await _settled(fetch, table)
    yield (",".join(layout.names()) + "\n").encode()
    async for page in _table_pages(fetch, table, layout, seen):
        yield layout.frame(page).to_csv(index=False, header=False).encode()


class _Sink(io.RawIOBase):
    """A file the Parquet writer writes to, drained after each row group (the response streams it)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.position = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.parts.append(bytes(data))
        self.position += len(data)
        return len(data)

    def tell(self) -> int:
        return self.position

    def take(self) -> bytes:
        out, self.parts = b"".join(self.parts), []
        return out


async def parquet(fetch: Fetch, table: str) -> AsyncIterator[bytes]:
    layout, seen = await _settled(fetch, table)
    schema = layout.schema()
    sink = _Sink()
    writer = pq.ParquetWriter(sink, schema)
    async for page in _table_pages(fetch, table, layout, seen):
        writer.write_table(pa.Table.from_pandas(layout.frame(page, schema), schema=schema, preserve_index=False))
        yield sink.take()
    writer.close()
    yield sink.take()
