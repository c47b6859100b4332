"""A universe in one call: a long table of candles in (one row per id and timestamp), a long table of
forecasts out (``KronosPredictor.predict_df``).

**Per-id seeds.** Each series' seed depends on the call's seed and the series' id only, never on its
position, so a symbol gets the same forecast however the universe is ordered, split, resumed or
distributed::

    series_seed(seed, id) = int.from_bytes(blake2b(f"kronos:{seed}:{id}".encode(), digest_size=8).digest(), "big") >> 11

(53 bits, the integers a JSON reader keeps exactly; ``id`` as ``str(id)``, so ``7`` and ``"7"`` share a seed).
``predict(that_symbol's_frame, seed=series_seed(seed, id))`` reproduces the symbol's rows. Without a
call seed one is drawn and returned in ``result.attrs["seed"]``.

**Bounded memory.** At most ``batch_size`` series are decoded together, and at most
``MAX_CHUNK_PATHS`` sample paths (each path is a row of the KV cache: 64 series of 20 paths would
be 1,280 rows, ~19 GiB for Kronos-small at 400/20, so such a chunk holds 12 series instead); a
series' numbers do not depend on its batch mates (the batched loop is exact per series), so the
chunking changes nothing but the time.

**Bad series.** A series that cannot be forecast (too short, NaN, invalid candles, unparseable or
unordered timestamps) is left out with its message in ``result.attrs["errors"]`` (a dict id →
message; ``pd.Series(result.attrs["errors"])`` is a table of them); the others are forecast.
``on_error="raise"`` raises the first such error instead.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..errors import InputError
from ..series.calendars import future_timestamps
from ..series.candles import describe_invalid, invalid_rows
from .forecast import FEATURE_COLUMNS, MIN_ROWS, PRICE_COLUMNS, SEED_BITS, Forecast, SeriesInput, frame_columns

DEFAULT_BATCH_SIZE = 64
MAX_CHUNK_PATHS = 256  # series x sample_count decoded together at most (one KV-cache row per path)


def series_seed(seed: int, series_id: Hashable) -> int:
    """The seed of one series of a universe forecast with ``seed`` (see the module docstring)."""
    digest = hashlib.blake2b(f"kronos:{int(seed)}:{series_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> (64 - SEED_BITS)


def quantile_column(level: float) -> str:
    """The output column of a close quantile: ``close_q0.1``, ``close_q0.5``, ``close_q0.9``."""
    return f"close_q{float(level):g}"


@dataclass
class TableSettings:
    """Everything of a universe forecast but the table itself; shared by every series."""

    pred_len: int
    id_column: str = "id"
    timestamp_column: str = "timestamps"
    sample_count: int = 1
    T: float = 1.0
    top_k: int = 0
    top_p: float = 0.9
    seed: int | None = None
    clean: bool = False
    window: str = "exact"
    quantiles: Sequence[float] = ()
    freq: str | None = None
    calendar: str | None = None
    lookback: int | None = None
    batch_size: int = DEFAULT_BATCH_SIZE

    def check(self) -> None:
        if isinstance(self.pred_len, bool) or not isinstance(self.pred_len, (int, np.integer)) or self.pred_len < 1:
            raise InputError(f"pred_len must be a positive integer, got {self.pred_len!r}")
        count = self.sample_count
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
            raise InputError(f"sample_count must be an integer >= 1, got {count!r}")
        if (
            isinstance(self.batch_size, bool)
            or not isinstance(self.batch_size, (int, np.integer))
            or self.batch_size < 1
        ):
            raise InputError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if self.lookback is not None and (not isinstance(self.lookback, (int, np.integer)) or self.lookback < 2):
            raise InputError(f"lookback must be an integer >= 2, got {self.lookback!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer))):
            raise InputError(f"seed must be an integer, got {self.seed!r}")
        for q in self.quantiles:
            if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0 < q < 1:
                raise InputError(f"quantiles must be numbers strictly between 0 and 1, got {q!r}")
        if self.quantiles and self.sample_count < 2:
            raise InputError("quantiles are taken over sample paths: give sample_count 2 or more")


@dataclass
class Prepared:
    """One series of the table, ready to forecast (or the reason it cannot be)."""

    id: Hashable
    series: SeriesInput | None = None
    columns: tuple[str, ...] = ()
    error: str | None = None


@dataclass
class TableResult:
    forecasts: list[pd.DataFrame] = field(default_factory=list)
    errors: list[tuple[Hashable, str]] = field(default_factory=list)


def check_table(df: pd.DataFrame, settings: TableSettings) -> pd.DataFrame:
    """The table with normalised column names, or an InputError naming what is missing."""
    if not isinstance(df, pd.DataFrame):
        raise InputError(f"df must be a pandas DataFrame, got {type(df).__name__}")
    if df.empty:
        raise InputError("df is empty: no rows to forecast")
    df = frame_columns(df)
    id_column, time_column = settings.id_column.strip().lower(), settings.timestamp_column.strip().lower()
    missing = [c for c in (id_column, time_column, *PRICE_COLUMNS) if c not in df.columns]
    if missing:
        raise InputError(f"df is missing column(s) {', '.join(missing)}; the columns are {', '.join(df.columns)}")
    return (
        df.rename(columns={id_column: "id", time_column: "timestamps"})
        if (id_column, time_column)
        != (
            "id",
            "timestamps",
        )
        else df
    )


def ordered_ids(ids: pd.Series) -> list:
    """The distinct ids in a fixed order (sorted; by their text when they do not compare)."""
    unique = list(pd.unique(ids.dropna()))
    try:
        return sorted(unique)
    except TypeError:
        return sorted(unique, key=str)


def sorted_rows(rows: pd.DataFrame) -> tuple[pd.DatetimeIndex, pd.DataFrame]:
    """One id's rows in time order (stable), with their parsed timestamps; an InputError when a timestamp
    cannot be parsed or is missing. Shared by ``predict_df`` and the service's table uploads (jobs)."""
    try:
        stamps = pd.DatetimeIndex(pd.to_datetime(rows["timestamps"]))
    except (TypeError, ValueError, OverflowError) as exc:
        raise InputError(f"timestamps are not parseable ({exc})") from None
    if stamps.hasnans:
        raise InputError("a timestamp is missing (NaT)")
    order = np.argsort(stamps.asi8, kind="stable")
    return stamps[order], rows.iloc[order]


def candle_values(rows: pd.DataFrame, stamps: pd.DatetimeIndex) -> tuple[np.ndarray, list[str]]:
    """The rows' candles as float64 and their columns (the prices, then volume and amount where the table
    has them), or an InputError naming a non-numeric column or the first NaN/infinite value."""
    columns = list(PRICE_COLUMNS)
    if "volume" in rows.columns and rows["volume"].notna().any():
        columns.append("volume")
        if "amount" in rows.columns and rows["amount"].notna().any():
            columns.append("amount")
    try:
        candles = rows[columns].to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"price/volume columns must be numeric ({exc})") from None
    bad = ~np.isfinite(candles)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise InputError(f"column {columns[col]} has a NaN or infinite value at {stamps[row]}")
    return candles, columns


def prepare_series(series_id: Hashable, rows: pd.DataFrame, settings: TableSettings, call_seed: int) -> Prepared:
    """One id's rows → its ``SeriesInput`` (rows sorted by time), or the message of why it cannot be forecast."""
    try:
        stamps, rows = sorted_rows(rows)
        if stamps.has_duplicates:
            raise InputError(f"timestamp {stamps[stamps.duplicated()][0]} appears twice")
        if settings.lookback is not None:
            stamps, rows = stamps[-settings.lookback :], rows.iloc[-settings.lookback :]
        if len(rows) < MIN_ROWS:
            raise InputError(f"needs at least {MIN_ROWS} rows, got {len(rows)}")
        candles, columns = candle_values(rows, stamps)
        invalid = invalid_rows(candles)
        if len(invalid):
            row = int(invalid[0])
            raise InputError(f"the candle at {stamps[row]} is not valid ({describe_invalid(candles[row])})")
        future = future_timestamps(stamps, settings.pred_len, settings.freq, settings.calendar)
        series = SeriesInput(
            candles=candles,
            timestamps=stamps,
            future_timestamps=future,
            temperature=settings.T,
            top_k=settings.top_k,
            top_p=settings.top_p,
            sample_count=settings.sample_count,
            seed=series_seed(call_seed, series_id),
            clean=settings.clean,
            window=settings.window,
        )
        return Prepared(series_id, series, tuple(columns))
    except InputError as exc:
        return Prepared(series_id, error=str(exc))


def forecast_frame(series_id: Hashable, forecast: Forecast, series: SeriesInput, columns, settings) -> pd.DataFrame:
    """One series' rows of the output table."""
    out = pd.DataFrame(
        {
            "id": [series_id] * len(forecast.timestamps),
            "timestamps": forecast.timestamps,
            "step": np.arange(1, len(forecast.timestamps) + 1),
        }
    )
    for c in columns:
        out[c] = forecast.mean[:, FEATURE_COLUMNS.index(c)]
    if settings.quantiles:
        bands = forecast.close_quantiles(settings.quantiles)
        for level, band in zip(settings.quantiles, bands):
            out[quantile_column(level)] = band
    if forecast.samples.shape[0] >= 2:
        last_close = float(series.candles[-1, 3])
        out["p_up"] = (forecast.samples[..., 3] > last_close).mean(axis=0)
    return out


def chunks(df: pd.DataFrame, settings: TableSettings, call_seed: int) -> Iterator[list[Prepared]]:
    """The table's series in id order, ``batch_size`` at a time but never more than ``MAX_CHUNK_PATHS``
    paths (each group sliced when its turn comes)."""
    groups = df.groupby("id", sort=False, dropna=True).indices
    ids = ordered_ids(df["id"])
    size = max(1, min(settings.batch_size, MAX_CHUNK_PATHS // settings.sample_count))
    for start in range(0, len(ids), size):
        yield [prepare_series(i, df.iloc[groups[i]], settings, call_seed) for i in ids[start : start + size]]


def run_table(
    forecast: Callable[[list[SeriesInput]], list[Forecast | None]],
    df: pd.DataFrame,
    settings: TableSettings,
    *,
    on_error: str = "collect",
    on_chunk: Callable[[pd.DataFrame, list[tuple[Hashable, str]]], None] | None = None,
) -> pd.DataFrame:
    """The universe forecast (see the module docstring): ``forecast`` decodes one chunk of series.

    ``on_chunk(rows, errors)`` hears of every chunk as soon as it is done (the file runner appends it).
    """
    if on_error not in ("collect", "raise"):
        raise InputError(f"on_error must be 'collect' or 'raise', got {on_error!r}")
    settings.check()
    df = check_table(df, settings)
    call_seed = settings.seed if settings.seed is not None else secrets.randbits(SEED_BITS)
    parts: list[pd.DataFrame] = []
    errors: list[tuple[Hashable, str]] = []
    for chunk in chunks(df, settings, call_seed):
        bad = [(p.id, p.error) for p in chunk if p.error is not None]
        if bad and on_error == "raise":
            raise InputError(f"series {bad[0][0]!r}: {bad[0][1]}")
        good = [p for p in chunk if p.error is None]
        rows = []
        for p, f in zip(good, decode_isolating(forecast, good, bad)):
            if f is not None:
                rows.append(forecast_frame(p.id, f, p.series, p.columns, settings))
        if bad and on_error == "raise":
            raise InputError(f"series {bad[0][0]!r}: {bad[0][1]}")
        part = pd.concat(rows, ignore_index=True) if rows else empty_output(df, settings)
        errors.extend(bad)
        parts.append(part)
        if on_chunk is not None:
            on_chunk(part, bad)
    result = pd.concat(parts, ignore_index=True) if parts else empty_output(df, settings)
    # Plain values only: pandas compares attrs when frames are concatenated (a DataFrame there breaks concat).
    result.attrs["errors"] = {series_id: message for series_id, message in errors}
    result.attrs["seed"] = int(call_seed)
    return result


def decode_isolating(forecast, good: list[Prepared], bad: list[tuple[Hashable, str]]) -> list[Forecast | None]:
    """The chunk's forecasts; when the decoder rejects the chunk (a check this module does not repeat),
    each series is decoded alone so only the one at fault fails (its message joins ``bad``)."""
    if not good:
        return []
    try:
        return forecast([p.series for p in good])
    except InputError as exc:
        if len(good) == 1:
            bad.append((good[0].id, str(exc).removeprefix("series[0]: ")))
            return [None]
    done: list[Forecast | None] = []
    for p in good:
        done.extend(decode_isolating(forecast, [p], bad))
    return done


def empty_output(df: pd.DataFrame, settings: TableSettings) -> pd.DataFrame:
    columns = ["id", "timestamps", "step", *PRICE_COLUMNS]
    columns += [c for c in ("volume", "amount") if c in df.columns]
    columns += [quantile_column(q) for q in settings.quantiles]
    if settings.sample_count >= 2:
        columns.append("p_up")
    return pd.DataFrame(columns=columns)
