"""From request bodies to the model's ``SeriesInput`` (responses are shaped in ``responses.py``).

All the rules about what a request means live here: which of the two request shapes it is, row
forms, limits, timestamps (given, or a fixed calendar so a seeded request always gives the same
answer), and how one-row series and quantile bands are handled.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ValidationError

from model import SeriesInput
from model.pipeline import FEATURE_COLUMNS as COLUMNS

from . import band_defaults
from .errors import InvalidJSON, InvalidRequest, field_path, invalid_request_from
from .schemas import (
    BatchRequest,
    Candle,
    LegacyBatchRequest,
    LegacySingleRequest,
    Overrides,
    SingleRequest,
)
from .settings import Settings

# Rows sent without timestamps are consecutive periods from here (a Monday), so the model's
# calendar features — and with a seed, the answer — never depend on when the request was made.
CALENDAR_START = pd.Timestamp("2024-01-01T00:00:00")

_NEW_SINGLE = frozenset(SingleRequest.model_fields) - {"timestamps"}
_LEGACY_SINGLE = frozenset(LegacySingleRequest.model_fields) - {"timestamps"}


@dataclass
class PreparedSeries:
    """One series ready for the model, with what the response needs to know about it."""

    series: SeriesInput
    rows: int  # as sent (a one-row series is padded for the model)
    quantiles: list[float] | None = None
    has_timestamps: bool = True
    series_id: str | None = None


@dataclass
class ParsedRequest:
    legacy: bool
    batch: bool
    items: list[PreparedSeries]

    @property
    def rows(self) -> int:
        return sum(item.rows for item in self.items)

    @property
    def pred_len(self) -> int:
        return max(item.series.pred_len for item in self.items)


# --- reading the body ---------------------------------------------------------------------------


def parse_json(body: bytes) -> dict[str, Any]:
    """The body as a JSON object. NaN/Infinity literals parse here and are refused by the schema."""
    if not body.strip():
        raise InvalidJSON("the request body is empty; send a JSON object")
    try:
        value = json.loads(body.decode("utf-8-sig"))  # JSON is UTF-8 (RFC 8259); a BOM is tolerated
    except UnicodeDecodeError as exc:
        raise InvalidJSON(f"the request body is not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise InvalidJSON(f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise InvalidJSON("malformed JSON: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer literal with too many digits
        raise InvalidJSON(f"malformed JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidRequest(
            f"the body must be a JSON object, got {type(value).__name__ if value is not None else 'null'}"
        )
    return value


def _validate(schema: type[BaseModel], body: dict[str, Any], prefix: tuple = ()) -> Any:
    try:
        return schema.model_validate(body)
    except ValidationError as exc:
        errors = []
        for error in exc.errors(include_url=False):
            error = dict(error)
            error["loc"] = prefix + tuple(error["loc"])
            errors.append(error)
        raise invalid_request_from(errors) from None
    except RecursionError:
        raise InvalidRequest("the body is nested too deeply") from None


def _is_legacy(body: dict[str, Any], new_fields: frozenset[str], legacy_fields: frozenset[str]) -> bool:
    new, legacy = sorted(body.keys() & new_fields), sorted(body.keys() & legacy_fields)
    if new and legacy:
        raise InvalidRequest(
            f"the body mixes the two request shapes: {', '.join(new)} belong to the data/batch shape, "
            f"{', '.join(legacy)} to the candles/items shape",
            {"data_shape_fields": new, "candles_shape_fields": legacy},
        )
    return bool(legacy)


def parse_single(body: bytes, settings: Settings) -> ParsedRequest:
    obj = parse_json(body)
    if _is_legacy(obj, _NEW_SINGLE, _LEGACY_SINGLE):
        request = _validate(LegacySingleRequest, obj)
        return ParsedRequest(True, False, [legacy_series(request, settings, ())])
    request = _validate(SingleRequest, obj)
    return ParsedRequest(False, False, [new_series(request, settings, ())])


def parse_batch(body: bytes, settings: Settings) -> ParsedRequest:
    obj = parse_json(body)
    legacy = _is_legacy(obj, frozenset({"batch"}), frozenset({"items"}))
    field = "items" if legacy else "batch"
    raw_items = obj.get(field)
    # Check the count before validating every item, so an oversized batch is refused cheaply.
    if isinstance(raw_items, list) and len(raw_items) > settings.max_batch_items:
        raise InvalidRequest(
            f"{field}: {len(raw_items)} items, more than the limit of {settings.max_batch_items} "
            "(KRONOS_MAX_BATCH_ITEMS)"
        )
    if legacy:
        request = _validate(LegacyBatchRequest, obj)
        items = [legacy_series(item, settings, ("items", i)) for i, item in enumerate(request.items)]
    else:
        request = _validate(BatchRequest, obj)
        items = [new_series(item, settings, ("batch", i)) for i, item in enumerate(request.batch)]
    return ParsedRequest(legacy, True, items)


# --- request → SeriesInput ----------------------------------------------------------------------


def _name(prefix: tuple, *parts: Any) -> str:
    return field_path(prefix + parts)


def _candle_values(row: Candle) -> list[float]:
    values = [row.open, row.high, row.low, row.close]
    if row.volume is not None:
        values.append(row.volume)
        if row.amount is not None:
            values.append(row.amount)
    return values


def _describe(row: Any) -> str:
    if isinstance(row, Candle):
        named = [c for c in COLUMNS if getattr(row, c) is not None]
        return "an object with " + ", ".join(named)
    return f"{len(row)} values"


def candles_array(rows: Sequence[Any], prefix: tuple, field: str) -> np.ndarray:
    """(n, 4|5|6) float64 from rows that must all have the same form and columns."""
    first = rows[0]
    if isinstance(first, Candle) and first.amount is not None and first.volume is None:
        raise InvalidRequest(f"{_name(prefix, field, 0)}: amount given without volume")
    shape = _describe(first)
    values = []
    for i, row in enumerate(rows):
        if _describe(row) != shape:
            raise InvalidRequest(
                f"{_name(prefix, field, i)}: row has {_describe(row)} but {_name(prefix, field, 0)} has {shape}; "
                "every row needs the same columns"
            )
        values.append(_candle_values(row) if isinstance(row, Candle) else row)
    return np.asarray(values, dtype=np.float64)


def _check_limits(
    prefix: tuple,
    field: str,
    rows: int,
    pred_len: int,
    sample_count: int,
    settings: Settings,
    pred_len_field: str = "pred_len",
    samples_field: str = "sample_count",
) -> None:
    if rows > settings.max_rows:
        raise InvalidRequest(
            f"{_name(prefix, field)}: {rows} rows, more than the limit of {settings.max_rows} (KRONOS_MAX_ROWS)"
        )
    if pred_len > settings.max_pred_len:
        raise InvalidRequest(
            f"{_name(prefix, pred_len_field)}: {pred_len} is more than the limit of {settings.max_pred_len} "
            "(KRONOS_MAX_PRED_LEN)"
        )
    if sample_count > settings.max_sample_count:
        raise InvalidRequest(
            f"{_name(prefix, samples_field)}: {sample_count} is more than the limit of {settings.max_sample_count} "
            "(KRONOS_MAX_SAMPLE_COUNT)"
        )


def timestamp_index(values: Sequence[Any], name: str) -> pd.DatetimeIndex:
    """Strictly increasing timestamps, all with or all without a time zone."""
    try:
        index = pd.DatetimeIndex(values)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidRequest(f"{name}: {exc}") from None
    steps = np.diff(index.asi8)
    if (steps <= 0).any():
        at = int(np.argmax(steps <= 0)) + 1
        raise InvalidRequest(
            f"{name}[{at}]: timestamps must be strictly increasing ({index[at]} is not after {index[at - 1]})"
        )
    return index


def _offset(freq: str, name: str) -> pd.DateOffset:
    try:
        offset = pd.tseries.frequencies.to_offset(freq)
    except (ValueError, TypeError):
        raise InvalidRequest(f"{name}: {freq!r} is not a pandas frequency (e.g. 5min, h, D, B, W)") from None
    if offset is None or offset.n <= 0:
        raise InvalidRequest(f"{name}: {freq!r} must move forward in time")
    return offset


@contextmanager
def _calendar_errors(name: str) -> Iterator[None]:
    """Timestamp arithmetic that leaves pandas' range (years 1677-2262) is the request's fault."""
    try:
        yield
    except (ValueError, OverflowError, TypeError) as exc:
        raise InvalidRequest(f"{name}: the timestamps cannot be extended ({exc})") from None


def _continue(last: pd.Timestamp, step: Any, periods: int, name: str) -> pd.DatetimeIndex:
    with _calendar_errors(name):
        return pd.date_range(start=last + step, periods=periods, freq=step)


def _future_of(
    index: pd.DatetimeIndex, freq: str | None, pred_len: int, settings: Settings, prefix: tuple
) -> pd.DatetimeIndex:
    """Future timestamps: ``freq`` if given, else the inferred frequency (business days stay business
    days), else the median step; one row with no freq uses KRONOS_DEFAULT_FREQ."""
    name = _name(prefix, "timestamps")
    if freq is not None:
        step: Any = _offset(freq, _name(prefix, "freq"))
    elif len(index) == 1:
        step = _offset(settings.default_freq, "KRONOS_DEFAULT_FREQ")
    else:
        inferred = pd.infer_freq(index) if len(index) >= 3 else None
        # The median step, as a Timedelta (pandas 3 keeps timestamps in s/ms/us/ns units).
        step = pd.tseries.frequencies.to_offset(inferred) if inferred else (index[1:] - index[:-1]).median()
    return _continue(index[-1], step, pred_len, name)


def _pad_one_row(candles: np.ndarray, index: pd.DatetimeIndex, future: pd.DatetimeIndex):
    """The model needs two rows; a single candle is read as a flat history (the row, one period earlier)."""
    if len(candles) != 1:
        return candles, index
    earlier = index[0] - (future[0] - index[0])
    return np.repeat(candles, 2, axis=0), pd.DatetimeIndex([earlier, index[0]])


def new_series(request: SingleRequest, settings: Settings, prefix: tuple) -> PreparedSeries:
    candles = candles_array(request.data, prefix, "data")
    pred_len = request.pred_len if request.pred_len is not None else settings.default_pred_len
    _check_limits(prefix, "data", len(candles), pred_len, request.sample_count, settings)
    if request.timestamps is not None:
        if len(request.timestamps) != len(candles):
            raise InvalidRequest(
                f"{_name(prefix, 'timestamps')}: {len(request.timestamps)} timestamps for {len(candles)} rows "
                "(one per row)"
            )
        index = timestamp_index(request.timestamps, _name(prefix, "timestamps"))
        future = _future_of(index, request.freq, pred_len, settings, prefix)
    else:
        step = _offset(
            request.freq or settings.default_freq, _name(prefix, "freq") if request.freq else "KRONOS_DEFAULT_FREQ"
        )
        rows = max(len(candles), 2)
        with _calendar_errors(_name(prefix, "freq")):
            calendar = _continue(CALENDAR_START - step, step, rows + pred_len, _name(prefix, "freq"))
        index, future = calendar[:rows], calendar[rows:]
        if len(candles) == 1:
            candles = np.repeat(candles, 2, axis=0)
    with _calendar_errors(_name(prefix, "timestamps")):
        candles, index = _pad_one_row(candles, index, future)
    temperature, top_p = band_defaults.sampling(request)  # measured defaults where quantiles are asked for
    series = SeriesInput(
        candles=candles,
        timestamps=index,
        future_timestamps=future,
        temperature=temperature,
        top_k=request.top_k,
        top_p=top_p,
        sample_count=request.sample_count,
        seed=request.seed,
    )
    return PreparedSeries(series, len(request.data), request.quantiles, request.timestamps is not None)


def legacy_series(request: LegacySingleRequest, settings: Settings, prefix: tuple) -> PreparedSeries:
    candles = candles_array(request.candles, prefix, "candles")
    overrides = request.overrides or Overrides()
    given = len(request.prediction_timestamps)
    pred_len = overrides.pred_len if overrides.pred_len is not None else given
    if pred_len != given:
        raise InvalidRequest(
            f"{_name(prefix, 'overrides', 'pred_len')}: {pred_len} does not match the {given} prediction_timestamps"
        )
    sample_count = overrides.sample_count if overrides.sample_count is not None else 1
    _check_limits(
        prefix,
        "candles",
        len(candles),
        pred_len,
        sample_count,
        settings,
        "prediction_timestamps",
        "overrides.sample_count",
    )
    if len(request.timestamps) != len(candles):
        raise InvalidRequest(
            f"{_name(prefix, 'timestamps')}: {len(request.timestamps)} timestamps for {len(candles)} candles "
            "(one per candle)"
        )
    index = timestamp_index(request.timestamps, _name(prefix, "timestamps"))
    future = timestamp_index(request.prediction_timestamps, _name(prefix, "prediction_timestamps"))
    try:
        after = bool(future[0] > index[-1])
    except TypeError:
        raise InvalidRequest(
            f"{_name(prefix, 'prediction_timestamps')}: all timestamps must have a time zone, or none"
        ) from None
    if not after:
        raise InvalidRequest(
            f"{_name(prefix, 'prediction_timestamps', 0)}: must be after the last timestamp {index[-1]}"
        )
    with _calendar_errors(_name(prefix, "timestamps")):
        candles, index = _pad_one_row(candles, index, future)
    series = SeriesInput(
        candles=candles,
        timestamps=index,
        future_timestamps=future,
        temperature=overrides.temperature if overrides.temperature is not None else 1.0,
        top_k=overrides.top_k if overrides.top_k is not None else 0,
        top_p=overrides.top_p if overrides.top_p is not None else 0.9,
        sample_count=sample_count,
        seed=overrides.seed,
    )
    return PreparedSeries(series, len(request.candles), None, True, request.series_id)
