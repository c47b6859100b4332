"""What a job is made of: its items, from a JSON body, a JSONL file or a long CSV/Parquet table.

- **JSON body** ``{"kind", "items": [{"custom_id", ...request fields}], "model"}``; an item may also be
  ``{"custom_id", "body": {...}}``, as a JSONL line is.
- **JSONL** one ``{"custom_id", "body"}`` a line; a line that is not JSON becomes a failed item
  ``line-<n>`` (its line number) and the others run.
- **A long table** (CSV or Parquet: one row per id and timestamp, columns open, high, low, close and
  optionally volume and amount): each id becomes one item, custom_id the id, with the shared settings
  of the form (pred_len, sample_count, quantiles, ...) and the seed ``series_seed(seed, id)``, the seed
  predict_df and kronos-forecast give that id (a job without a seed draws one and records it).

A file that cannot be read, a setting that is not valid, a missing custom_id or too many items make
the whole request a 4xx. An item whose own data is bad becomes a failed item with the message the
predict route would answer (each item body goes through the route's own parser, ``parse_single`` or
``parse_backtest``); the others run.
"""

from __future__ import annotations

import io
import json
import secrets
from collections.abc import Iterable
from typing import Any

import pandas as pd
from pydantic import ValidationError

from model.decoding.forecast import SEED_BITS
from model.decoding.table import TableSettings, candle_values, check_table, ordered_ids, series_seed, sorted_rows
from model.errors import InputError

from ..backtesting import parse_backtest
from ..catalog import ModelCatalog
from ..errors import InvalidRequest, ServiceError, error_body, invalid_request_from
from ..forecasting import parse_single
from ..schemas import BacktestRequest, SingleRequest
from ..series_input import _check_bands, _check_limits
from ..settings import Settings
from .store import NewItem, NewJob

KINDS = ("forecast", "backtest")
MAX_CUSTOM_ID = 256
# Form fields that are text as they are (the others are read as JSON when they parse: 20, true, [0.1, 0.9]).
_TEXT_FIELDS = {"freq", "calendar", "window", "kind", "model", "id_column", "timestamp_column"}
_TABLE_FIELDS = {"id_column", "timestamp_column"}
# Fields of an item's request that come from the table, never from the shared settings.
_FROM_TABLE = {"data", "timestamps", "model"}


def _limit_items(count: int, settings: Settings, where: str) -> None:
    if count > settings.jobs_max_items:
        raise InvalidRequest(
            f"{where}: {count} items, more than the limit of {settings.jobs_max_items} per job (KRONOS_JOBS_MAX_ITEMS)",
            {"items": count, "limit": settings.jobs_max_items},
        )


def check_kind(kind: Any) -> str:
    if kind not in KINDS:
        raise InvalidRequest(f"kind: must be one of {', '.join(KINDS)}, got {kind!r}")
    return kind


def check_model(catalog: ModelCatalog, model: Any) -> str | None:
    if model is not None and not isinstance(model, str):
        raise InvalidRequest(f"model: must be a model name, got {model!r}")
    return catalog.get(model).name if model is not None else None


def item_error(error: ServiceError | InputError) -> dict[str, Any]:
    if isinstance(error, InputError):
        error = InvalidRequest(str(error))
    return error_body(error.error_type, error.message, error.details)["error"]


def validate_item(
    kind: str, custom_id: str, body: dict[str, Any], job_model: str | None, catalog: ModelCatalog, settings: Settings
) -> NewItem:
    """The item as the route would take it: its body parsed by the route's own parser; a body the
    route would refuse makes a failed item with the route's error."""
    if job_model is not None and body.get("model") is None:
        body = {**body, "model": job_model}
    raw = json.dumps(body, allow_nan=False).encode()
    try:
        (parse_single if kind == "forecast" else parse_backtest)(raw, settings)
        name = catalog.get(body.get("model")).name
    except (ServiceError, InputError) as exc:
        return NewItem(custom_id, job_model, None, item_error(exc))
    return NewItem(custom_id, name, raw.decode())


def _custom_id(value: Any, where: str, seen: dict[str, str]) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_CUSTOM_ID:
        raise InvalidRequest(f"{where}.custom_id: must be a string of 1 to {MAX_CUSTOM_ID} characters, got {value!r}")
    if value in seen:
        raise InvalidRequest(
            f"{where}.custom_id: {value!r} is used twice (also at {seen[value]}); custom_ids are unique"
        )
    seen[value] = where
    return value


def _item_body(entry: Any, where: str, seen: dict[str, str]) -> tuple[str, Any]:
    if not isinstance(entry, dict):
        raise InvalidRequest(f"{where}: must be an object with a custom_id, got {type(entry).__name__}")
    custom_id = _custom_id(entry.get("custom_id"), where, seen)
    if set(entry) == {"custom_id", "body"}:
        return custom_id, entry["body"]
    return custom_id, {k: v for k, v in entry.items() if k != "custom_id"}


def _items(
    kind: str,
    entries: Iterable[tuple[str, Any]],
    job_model: str | None,
    catalog: ModelCatalog,
    settings: Settings,
) -> list[NewItem]:
    items = []
    for custom_id, body in entries:
        if not isinstance(body, dict):
            error = item_error(InvalidRequest(f"the body must be a JSON object, got {type(body).__name__}"))
            items.append(NewItem(custom_id, job_model, None, error))
        else:
            items.append(validate_item(kind, custom_id, body, job_model, catalog, settings))
    return items


# --- a JSON body ---------------------------------------------------------------------------------


def from_json(obj: Any, owner: str, catalog: ModelCatalog, settings: Settings) -> NewJob:
    if not isinstance(obj, dict):
        raise InvalidRequest("the body must be a JSON object with kind and items")
    unknown = sorted(set(obj) - {"kind", "items", "model"})
    if unknown:
        raise InvalidRequest(f"{unknown[0]}: not a field of a job (kind, items, model)")
    kind = check_kind(obj.get("kind", "forecast"))
    model = check_model(catalog, obj.get("model"))
    entries = obj.get("items")
    if not isinstance(entries, list) or not entries:
        raise InvalidRequest("items: must be a non-empty list of {custom_id, ...request fields}")
    _limit_items(len(entries), settings, "items")
    seen: dict[str, str] = {}
    bodies = [_item_body(entry, f"items[{i}]", seen) for i, entry in enumerate(entries)]
    return NewJob(kind, owner, model, "json", {}, _items(kind, bodies, model, catalog, settings))


# --- uploaded files ------------------------------------------------------------------------------


def form_value(name: str, text: str) -> Any:
    """A form field's value: JSON where it parses (numbers, booleans, lists), else the text; quantiles
    may be comma-separated."""
    if name in _TEXT_FIELDS:
        return text
    try:
        return json.loads(text)
    except ValueError:
        if name == "quantiles":
            try:
                return [float(part) for part in text.split(",") if part.strip()]
            except ValueError:
                pass
        return text


def from_jsonl(
    content: bytes, kind: str, model: str | None, owner: str, catalog: ModelCatalog, settings: Settings
) -> NewJob:
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"file: not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        raise InvalidRequest("file: no lines; send one {custom_id, body} JSON object a line")
    _limit_items(len(lines), settings, "file")
    seen: dict[str, str] = {}
    entries: list[tuple[str, Any]] = []
    unreadable: list[tuple[int, str]] = []  # (line, why): each a failed item "line-<n>", the rest run
    for n, line in lines:
        try:
            entry = json.loads(line)
        except ValueError as exc:
            unreadable.append((n, f"file line {n}: malformed JSON: {exc}"))
            continue
        entries.append(_item_body(entry, f"line {n}", seen))
    if not entries:
        raise InvalidRequest(unreadable[0][1] + "; no line of the file is a JSON object")
    items = _items(kind, entries, model, catalog, settings)
    for n, why in unreadable:
        custom_id = _custom_id(f"line-{n}", f"line {n}", seen)
        items.append(NewItem(custom_id, model, None, item_error(InvalidRequest(why))))
    return NewJob(kind, owner, model, "jsonl", {}, items)


def read_table(content: bytes, file_format: str) -> pd.DataFrame:
    try:
        if file_format == "parquet":
            return pd.read_parquet(io.BytesIO(content))
        return pd.read_csv(io.BytesIO(content))
    except Exception as exc:  # noqa: BLE001 — pandas and pyarrow raise many kinds; all mean "unreadable"
        raise InvalidRequest(f"file: cannot be read as {file_format.upper()}: {exc}") from None


def shared_settings(kind: str, fields: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The settings every item of a table shares, checked now (a 422 naming the field) as the route
    would check them; the seed is drawn when none is given."""
    shared = {k: v for k, v in fields.items() if k not in _TABLE_FIELDS}
    for name in sorted(set(shared) & _FROM_TABLE):
        raise InvalidRequest(f"{name}: comes from the table, not from a form field")
    lookback = shared.pop("lookback", None) if kind == "forecast" else None
    schema = SingleRequest if kind == "forecast" else BacktestRequest
    template = {**shared, "data": [[1.0, 1.0, 1.0, 1.0]] * 2}
    try:
        request = schema.model_validate(template)
    except ValidationError as exc:
        raise invalid_request_from(list(exc.errors(include_url=False))) from None
    if lookback is not None and (isinstance(lookback, bool) or not isinstance(lookback, int) or lookback < 2):
        raise InvalidRequest(f"lookback: the rows kept per id, an integer of 2 or more, got {lookback!r}")
    pred_len = request.pred_len if request.pred_len is not None else settings.default_pred_len
    _check_limits((), "data", 2, pred_len, request.sample_count, settings)
    _check_bands((), request.quantiles, request.sample_count)
    if request.seed is None:
        shared["seed"] = secrets.randbits(SEED_BITS)
    if lookback is not None:
        shared["lookback"] = lookback
    return shared


def _series_body(rows: pd.DataFrame, shared: dict[str, Any], series_id: Any) -> dict[str, Any]:
    """One id's rows as the body of a single request (rows sorted by time), or an InputError."""
    stamps, rows = sorted_rows(rows)
    lookback = shared.get("lookback")
    if lookback is not None:
        stamps, rows = stamps[-lookback:], rows.iloc[-lookback:]
    values, _ = candle_values(rows, stamps)
    body = {k: v for k, v in shared.items() if k != "lookback"}
    body.update(data=values.tolist(), timestamps=[t.isoformat() for t in stamps])
    body["seed"] = series_seed(shared["seed"], series_id)
    return body


def from_table(
    df: pd.DataFrame,
    kind: str,
    model: str | None,
    fields: dict[str, Any],
    file_format: str,
    owner: str,
    catalog: ModelCatalog,
    settings: Settings,
) -> NewJob:
    id_column = str(fields.get("id_column", "id"))
    timestamp_column = str(fields.get("timestamp_column", "timestamps"))
    shared = shared_settings(kind, fields, settings)
    try:
        df = check_table(df, TableSettings(pred_len=1, id_column=id_column, timestamp_column=timestamp_column))
    except InputError as exc:
        raise InvalidRequest(f"file: {str(exc).replace('df ', 'the table ', 1)}") from None
    ids = ordered_ids(df["id"])
    _limit_items(len(ids), settings, "file")
    groups = df.groupby("id", sort=False, dropna=True).indices
    seen: dict[str, str] = {}
    items: list[NewItem] = []
    for series_id in ids:
        custom_id = _custom_id(str(series_id), f"id {series_id!r}", seen)
        try:
            body = _series_body(df.iloc[groups[series_id]], shared, series_id)
        except InputError as exc:
            items.append(NewItem(custom_id, model, None, item_error(exc)))
            continue
        items.append(validate_item(kind, custom_id, body, model, catalog, settings))
    job_settings = {
        **shared,
        "id_column": id_column,
        "timestamp_column": timestamp_column,
        "rows": len(df),
    }
    return NewJob(kind, owner, model, file_format, job_settings, items)


def detect_format(filename: str | None, content_type: str | None, head: bytes) -> str | None:
    """jsonl, csv or parquet, by the file's name, then its content type, then its first bytes."""
    name = (filename or "").lower()
    for suffixes, file_format in (
        ((".jsonl", ".ndjson"), "jsonl"),
        ((".csv",), "csv"),
        ((".parquet", ".pq"), "parquet"),
    ):
        if name.endswith(suffixes):
            return file_format
    kind = (content_type or "").split(";")[0].strip().lower()
    by_type = {
        "application/jsonl": "jsonl",
        "application/x-ndjson": "jsonl",
        "application/x-jsonlines": "jsonl",
        "text/csv": "csv",
        "application/vnd.apache.parquet": "parquet",
        "application/x-parquet": "parquet",
    }
    if kind in by_type:
        return by_type[kind]
    return "parquet" if head.startswith(b"PAR1") else None
