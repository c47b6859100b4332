"""DataFrames to request bodies and back.

A series is a DataFrame of candles, oldest first: columns ``open, high, low, close`` (any case),
optionally ``volume`` and ``amount``, and its times either as a ``DatetimeIndex`` or as a column
(``timestamps``, ``timestamp``, ``date``, ``datetime`` or ``time``, or the one you name). Without times
the server lays the rows on ``freq`` periods from 2024-01-01 and the forecast is indexed by ``step``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

PRICE_COLUMNS = ("open", "high", "low", "close")
CANDLE_COLUMNS = (*PRICE_COLUMNS, "volume", "amount")
TIME_COLUMNS = ("timestamps", "timestamp", "date", "datetime", "time")
SEED_BITS = 53


def series_seed(seed: int, series_id: Hashable) -> int:
    """The seed of one series of a universe forecast with ``seed``: the service's and ``predict_df``'s
    formula (``model/decoding/table.py``), so a symbol gets the same numbers however the universe is split,
    ordered or sent (batch requests or a job)."""
    digest = hashlib.blake2b(f"kronos:{int(seed)}:{series_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> (64 - SEED_BITS)


def quantile_column(level: float) -> str:
    """``close_q0.1``: a close quantile's column in the long format (as ``predict_df`` names it)."""
    return f"close_q{float(level):g}"


@dataclass
class SeriesShape:
    """What a reply needs to know about the frame a request came from."""

    columns: dict[str, str]  # canonical candle column -> the frame's own name for it
    has_timestamps: bool
    tz: Any = None
    wall: bool = False  # sent as the zone's wall-clock times (see wire_timestamps)


def _by_lower(df: pd.DataFrame) -> dict[str, Any]:
    names: dict[str, Any] = {}
    for column in df.columns:
        key = str(column).strip().lower()
        if key in names:
            raise ValueError(f"df: columns {names[key]!r} and {column!r} are the same when case is ignored")
        names[key] = column
    return names


def _timestamps(df: pd.DataFrame, names: dict[str, Any], timestamp_column: str | None) -> pd.DatetimeIndex | None:
    if isinstance(df.index, pd.DatetimeIndex):
        return df.index
    if timestamp_column is not None:
        key = timestamp_column.strip().lower()
        if key not in names:
            raise ValueError(f"df has no column {timestamp_column!r}; its columns are {list(df.columns)}")
        column = names[key]
    else:
        column = next((names[k] for k in TIME_COLUMNS if k in names), None)
        if column is None:
            return None
    return pd.DatetimeIndex(pd.to_datetime(df[column]))


def series_body(df: pd.DataFrame, timestamp_column: str | None = None) -> tuple[dict[str, Any], SeriesShape]:
    """``{"data": [[o, h, l, c(, v(, a))], ...], "timestamps"?: [...]}`` for one series, and its shape."""
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"a series is a pandas DataFrame, got {type(df).__name__}")
    names = _by_lower(df)
    missing = [c for c in PRICE_COLUMNS if c not in names]
    if missing:
        raise ValueError(f"df is missing column(s) {', '.join(missing)}; its columns are {list(df.columns)}")
    present = [c for c in CANDLE_COLUMNS if c in names and df[names[c]].notna().any()]
    columns = {c: names[c] for c in present}
    values = df[list(columns.values())].to_numpy(dtype="float64").tolist()
    if "amount" in columns and "volume" not in columns:  # rows of values cannot skip volume: named rows
        data: list[Any] = [dict(zip(columns, row)) for row in values]
    else:
        data = values
    body: dict[str, Any] = {"data": data}
    stamps = _timestamps(df, names, timestamp_column)
    wall = False
    if stamps is not None:
        body["timestamps"], wall = wire_timestamps(stamps)
    tz = stamps.tz if stamps is not None else None
    return body, SeriesShape(columns, stamps is not None, tz, wall)


def wire_timestamps(stamps: pd.DatetimeIndex) -> tuple[list[str], bool]:
    """ISO 8601 strings for the server, and whether they are the zone's wall-clock times.

    Naive times, and aware times with one UTC offset, go as they are. Times of a zone whose offset changes
    within the series (summer time) go as wall-clock times without an offset: the server's calendar is
    about wall-clock sessions, and it does not read a list of mixed offsets. The forecast's times are put
    back in the zone. Wall-clock times that repeat (an autumn night's hour) go in UTC instead."""
    if stamps.tz is None:
        return [t.isoformat() for t in stamps], False
    local = stamps.tz_localize(None)
    offsets = local.asi8 - stamps.tz_convert("UTC").tz_localize(None).asi8
    if len(set(offsets.tolist())) <= 1:
        return [t.isoformat() for t in stamps], False
    if (np.diff(local.asi8) > 0).all():
        return [t.isoformat() for t in local], True
    return [t.isoformat() for t in stamps.tz_convert("UTC")], False


def options_body(**options: Any) -> dict[str, Any]:
    """The request's optional fields, leaving out those not given (the server's defaults apply)."""
    body = {k: v for k, v in options.items() if v is not None}
    if body.get("return_paths") is False:
        del body["return_paths"]  # an older server rejects the field it does not know; False is its default
    if "quantiles" in body:
        body["quantiles"] = [float(q) for q in body["quantiles"]]
    return body


def split_long(df: pd.DataFrame, id_column: str, timestamp_column: str | None) -> dict[Hashable, pd.DataFrame]:
    """A long table (one row per id and time) as frames by id, ids sorted as ``predict_df`` orders them,
    each frame's rows in time order."""
    names = _by_lower(df)
    key = id_column.strip().lower()
    if key not in names:
        raise ValueError(f"df has no id column {id_column!r}; its columns are {list(df.columns)}")
    column = names[key]
    if timestamp_column is None:
        timestamp_column = next((names[k] for k in TIME_COLUMNS if k in names), None)
    frames: dict[Hashable, pd.DataFrame] = {}
    for series_id, rows in df.groupby(column, sort=False, dropna=True):
        rows = rows.drop(columns=[column])
        if timestamp_column is not None:
            rows = rows.sort_values(names.get(timestamp_column.strip().lower(), timestamp_column), kind="stable")
        elif isinstance(rows.index, pd.DatetimeIndex):
            rows = rows.sort_index(kind="stable")
        frames[series_id] = rows
    return {i: frames[i] for i in ordered_ids(list(frames))}


def ordered_ids(ids: Sequence[Hashable]) -> list[Hashable]:
    try:
        return sorted(ids)  # type: ignore[type-var]
    except TypeError:
        return sorted(ids, key=str)


def parse_stamps(text: list[str], shape: SeriesShape) -> pd.DatetimeIndex:
    """The server's ISO strings as times in the input's zone (see ``wire_timestamps``)."""
    if shape.tz is not None and shape.wall:
        naive = pd.DatetimeIndex(pd.to_datetime(text))
        return naive.tz_localize(shape.tz, ambiguous=np.zeros(len(naive), bool), nonexistent="shift_forward")
    if shape.tz is not None:
        return pd.DatetimeIndex(pd.to_datetime(text, utc=True)).tz_convert(shape.tz)
    return pd.DatetimeIndex(pd.to_datetime(text))


def _index(rows: list[dict[str, Any]], shape: SeriesShape) -> pd.Index:
    if not shape.has_timestamps or any(r.get("timestamp") is None for r in rows):
        return pd.Index([r["step"] for r in rows], name="step")
    return parse_stamps([r["timestamp"] for r in rows], shape).rename("timestamp")


def candle_frame(rows: list[dict[str, Any]], shape: SeriesShape) -> pd.DataFrame:
    """Forecast rows as a DataFrame indexed by their timestamps (or step), in the input's column names."""
    index = _index(rows, shape)
    data = {name: [r.get(c) for r in rows] for c, name in shape.columns.items()}
    return pd.DataFrame(data, index=index, dtype="float64")


def long_rows(series_id: Hashable, body: dict[str, Any], shape: SeriesShape) -> pd.DataFrame:
    """One series' forecast in the universe's long format: ``id, timestamps, step``, the candle columns the
    input has, ``close_q<level>`` per quantile, ``p_up`` (with 2+ sample paths)."""
    rows = body["forecast"]
    frame = candle_frame(rows, SeriesShape({c: c for c in shape.columns}, shape.has_timestamps, shape.tz, shape.wall))
    out = pd.DataFrame({"id": [series_id] * len(rows)})
    out["timestamps"] = frame.index if frame.index.name == "timestamp" else [r.get("timestamp") for r in rows]
    out["step"] = [r["step"] for r in rows]
    for column in shape.columns:
        out[column] = frame[column].to_numpy()
    for band in body.get("close_quantiles") or []:
        out[quantile_column(band["level"])] = band["close"]
    if body.get("p_up") is not None:
        out["p_up"] = body["p_up"]
    return out
