"""Candle series for training: CSV loading with clear errors, the split by time, and windows.

Every window is normalized the way ``KronosPredictor`` normalizes its input: per column, mean and
population std over the window's *context* rows (all but the last ``horizon``), then clipped. The
last ``horizon`` rows are scaled with the context's statistics, as forecast candles are.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..decoding.forecast import FEATURE_COLUMNS, PRICE_COLUMNS, complete_features, time_features
from ..errors import InputError

TIMESTAMP_NAMES = ("timestamps", "timestamp", "datetime", "date", "time")
_STD_EPS = 1e-5


class CandleDataError(InputError):
    """A candles file (or series) that cannot be trained on."""


@dataclass(frozen=True)
class CandleSeries:
    """One series: (n, 6) float32 open, high, low, close, volume, amount and n timestamps."""

    name: str
    candles: np.ndarray
    timestamps: pd.DatetimeIndex

    def __len__(self) -> int:
        return len(self.candles)

    @property
    def stamps(self) -> np.ndarray:
        return time_features(self.timestamps)

    def split(self, val_fraction: float) -> int:
        """Index of the first held-out row: the last ``val_fraction`` of the rows, by time."""
        return train_rows(len(self), val_fraction)


def train_rows(n: int, val_fraction: float) -> int:
    if not 0.0 <= val_fraction < 1.0:
        raise CandleDataError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    return n - int(round(n * val_fraction))


def _timestamp_column(frame: pd.DataFrame, wanted: str | None, source: str) -> str:
    if wanted is not None:
        key = wanted.strip().lower()
        if key not in frame.columns:
            raise CandleDataError(f"{source}: no timestamp column {wanted!r} (columns: {', '.join(frame.columns)})")
        return key
    for name in TIMESTAMP_NAMES:
        if name in frame.columns:
            return name
    for name in frame.columns:
        if "time" in name or "date" in name:
            return name
    # A DataFrame saved with its DatetimeIndex (e.g. the backtesting package's CSVs) has an unnamed first column.
    if frame.columns[0] in ("", "unnamed: 0"):
        return frame.columns[0]
    raise CandleDataError(
        f"{source}: no timestamp column (looked for {', '.join(TIMESTAMP_NAMES)} or an unnamed first column); "
        "name it with --timestamp-column"
    )


def series_from_frame(frame: pd.DataFrame, name: str, timestamp_column: str | None = None) -> CandleSeries:
    """Check and convert a DataFrame with a timestamp column and open, high, low, close[, volume[, amount]].

    Errors name the source, the column and the file line (header = line 1) of the first problem.
    """
    frame = frame.rename(columns=lambda c: str(c).strip().lower())
    if len(frame) == 0:
        raise CandleDataError(f"{name}: no rows")
    missing = [c for c in PRICE_COLUMNS if c not in frame.columns]
    if missing:
        raise CandleDataError(
            f"{name}: missing required column(s) {', '.join(missing)} (found: {', '.join(frame.columns)})"
        )
    ts_col = _timestamp_column(frame, timestamp_column, name)
    raw_ts = frame[ts_col]
    parsed = pd.to_datetime(raw_ts, errors="coerce")
    if parsed.isna().any():
        row = int(np.argmax(parsed.isna().to_numpy()))
        raise CandleDataError(f"{name}: line {row + 2}: timestamp {raw_ts.iloc[row]!r} is missing or not a date/time")
    if getattr(parsed.dt, "tz", None) is not None:
        parsed = parsed.dt.tz_convert(None)
    timestamps = pd.DatetimeIndex(parsed)
    steps = np.diff(timestamps.asi8)
    if (steps == 0).any():
        row = int(np.argmax(steps == 0)) + 1
        raise CandleDataError(f"{name}: line {row + 2}: duplicate timestamp {timestamps[row]} (same as line {row + 1})")
    if (steps < 0).any():
        row = int(np.argmax(steps < 0)) + 1
        raise CandleDataError(
            f"{name}: line {row + 2}: timestamps are not sorted ({timestamps[row]} comes after {timestamps[row - 1]}); "
            "sort the file by time"
        )
    columns = list(PRICE_COLUMNS)
    if "volume" in frame.columns:
        columns.append("volume")
        if "amount" in frame.columns:
            columns.append("amount")
    values = frame[columns].apply(pd.to_numeric, errors="coerce")
    bad = values.isna().to_numpy() | ~np.isfinite(values.to_numpy(dtype=np.float64))
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raw = frame[columns[col]].iloc[row]
        raise CandleDataError(
            f"{name}: line {row + 2}: column {columns[col]} is {raw!r} (missing, NaN or not a finite number)"
        )
    return CandleSeries(name, complete_features(values.to_numpy(np.float64), name), timestamps)


def load_csv(path: str | os.PathLike, timestamp_column: str | None = None) -> CandleSeries:
    """Read one OHLCV CSV file into a checked ``CandleSeries``."""
    path = Path(path)
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise CandleDataError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise CandleDataError(f"{path}: not a readable CSV file ({exc})") from None
    return series_from_frame(frame, str(path), timestamp_column)


def backtesting_csv_paths(names: Sequence[str] = ("GOOG", "EURUSD", "BTCUSD")) -> list[Path]:
    """The real candles shipped in the PyPI package ``backtesting`` (GOOG daily, EURUSD hourly, BTCUSD)."""
    try:
        import backtesting
    except ImportError:
        raise CandleDataError("the demo data comes from the 'backtesting' package: pip install backtesting") from None
    folder = Path(backtesting.__file__).parent / "test"
    return [folder / f"{name}.csv" for name in names]


# --- windows ------------------------------------------------------------------------------


def normalize_window(x: np.ndarray, context_rows: int, clip: float) -> np.ndarray:
    """x (L, 6) scaled with the mean/std of its first context_rows rows, clipped to ±clip."""
    context = x[:context_rows]
    mean, std = context.mean(axis=0), context.std(axis=0)
    return np.clip((x - mean) / (std + np.float32(_STD_EPS)), -clip, clip).astype(np.float32)


@dataclass
class WindowBatch:
    """Normalized candles (B, L, 6), time features (B, L, 5) and the rows that count in a loss (B, L)."""

    candles: torch.Tensor
    stamps: torch.Tensor
    loss_mask: torch.Tensor

    def to(self, device: torch.device) -> WindowBatch:
        return WindowBatch(self.candles.to(device), self.stamps.to(device), self.loss_mask.to(device))


def aggregate_candles(x: np.ndarray, factor: int) -> np.ndarray:
    """(factor * L, 6) candles merged into (L, 6) candles of factor times the period: first open, highest high,
    lowest low, last close, summed volume and amount. Valid candles stay valid."""
    if factor == 1:
        return x
    g = x.reshape(-1, factor, x.shape[-1])
    out = np.empty((g.shape[0], x.shape[-1]), dtype=x.dtype)
    out[:, 0], out[:, 1], out[:, 2], out[:, 3] = g[:, 0, 0], g[:, :, 1].max(1), g[:, :, 2].min(1), g[:, -1, 3]
    out[:, 4:] = g[:, :, 4:].sum(1)
    return out


def invert_candles(x: np.ndarray) -> np.ndarray:
    """The candles of the inverse quote (EURUSD -> USDEUR): prices 1/p, so high and low swap, and volume and
    amount (base and quote currency turnover) swap. Valid candles stay valid."""
    out = np.empty_like(x)
    out[:, 0], out[:, 1], out[:, 2], out[:, 3] = 1 / x[:, 0], 1 / x[:, 2], 1 / x[:, 1], 1 / x[:, 3]
    out[:, 4], out[:, 5] = x[:, 5], x[:, 4]
    return out


class WindowSampler:
    """Random training windows drawn from the training part of every series.

    Batch ``step`` is a pure function of (seed, step): a resumed run draws the batches an
    uninterrupted run would have drawn. Each batch has one length, drawn from
    [min_window, max_window], and one aggregation factor k from ``aggregate``: its windows are
    k x length consecutive candles merged into length candles of k times the period (more
    frequencies from the same data). The start is uniform over every (series, start) that fits.
    With probability ``invert_prob`` a window is replaced by its inverse quote (prices 1/p), so
    that up and down moves are seen equally often. Windows lie wholly in the training part.
    """

    def __init__(
        self,
        series: Sequence[CandleSeries],
        val_fraction: float,
        min_window: int,
        max_window: int,
        horizon: int,
        clip: float = 5.0,
        seed: int = 0,
        aggregate: Sequence[int] = (1,),
        invert_prob: float = 0.0,
    ):
        if not aggregate or any(int(k) < 1 for k in aggregate):
            raise CandleDataError(f"aggregation factors must be >= 1, got {list(aggregate)}")
        if not 0.0 <= invert_prob <= 1.0:
            raise CandleDataError(f"invert_prob must be in [0, 1], got {invert_prob}")
        if not 2 <= min_window <= max_window:
            raise CandleDataError(f"need 2 <= min_window <= max_window, got {min_window} and {max_window}")
        if not 0 <= horizon < min_window:
            raise CandleDataError(f"horizon ({horizon}) must be below min_window ({min_window})")
        self.series = list(series)
        self.ends = [s.split(val_fraction) for s in self.series]
        longest = max(self.ends, default=0)
        if longest < min_window:
            raise CandleDataError(
                f"no series has min_window = {min_window} training rows (the longest has {longest} before the "
                "held-out part); lower --min-window or give longer series"
            )
        self.min_window, self.max_window = min_window, min(max_window, longest)
        self.horizon, self.clip, self.seed = horizon, clip, seed
        self.aggregate, self.invert_prob = [int(k) for k in aggregate], float(invert_prob)
        self._stamps = [s.stamps for s in self.series]

    def batch(self, step: int, batch_size: int, max_tokens: int = 0) -> WindowBatch:
        """Batch ``step``: up to batch_size windows, fewer for long windows when max_tokens caps B x L."""
        rng = np.random.default_rng([self.seed, step])
        length = int(rng.integers(self.min_window, self.max_window + 1))
        if max_tokens:
            batch_size = max(1, min(batch_size, max_tokens // length))
        factor = (
            self.aggregate[int(rng.integers(len(self.aggregate)))] if len(self.aggregate) > 1 else self.aggregate[0]
        )
        raw = length * factor
        starts = np.array([max(end - raw + 1, 0) for end in self.ends], dtype=np.int64)
        if factor > 1 and not starts.any():  # too long for every series at this factor: no aggregation
            factor, raw = 1, length
            starts = np.array([max(end - raw + 1, 0) for end in self.ends], dtype=np.int64)
        total = int(starts.sum())
        picks = rng.integers(0, total, size=batch_size)
        inverted = rng.random(batch_size) < self.invert_prob if self.invert_prob else np.zeros(batch_size, bool)
        bounds = np.cumsum(starts)
        candles = np.empty((batch_size, length, 6), dtype=np.float32)
        stamps = np.empty((batch_size, length, 5), dtype=np.int64)
        for i, pick in enumerate(picks):
            k = int(np.searchsorted(bounds, pick, side="right"))
            start = int(pick - (bounds[k - 1] if k else 0))
            rows = slice(start, start + raw)
            x = aggregate_candles(self.series[k].candles[rows], factor)
            if inverted[i]:
                x = invert_candles(x)
            candles[i] = normalize_window(x, length - self.horizon, self.clip)
            stamps[i] = self._stamps[k][rows][::factor]
        mask = torch.ones(batch_size, length, dtype=torch.bool)
        return WindowBatch(torch.from_numpy(candles), torch.from_numpy(stamps), mask)


def heldout_windows(
    series: Sequence[CandleSeries], val_fraction: float, context: int, horizon: int, clip: float = 5.0
) -> list[WindowBatch]:
    """Validation windows: consecutive held-out chunks of ``horizon`` rows, each after up to
    ``context`` rows of history (which may reach into the training part, as a forecast's would).
    Only the held-out rows count in a loss; one window per batch, since lengths differ."""
    windows = []
    for s in series:
        stamps = s.stamps
        for start in range(s.split(val_fraction), len(s), horizon):
            first = max(0, start - context)
            if start - first < 2:
                continue
            stop = min(start + horizon, len(s))
            x = normalize_window(s.candles[first:stop], start - first, clip)
            mask = torch.zeros(1, stop - first, dtype=torch.bool)
            mask[0, start - first :] = True
            windows.append(WindowBatch(torch.from_numpy(x)[None], torch.from_numpy(stamps[first:stop])[None], mask))
    return windows


__all__ = [
    "FEATURE_COLUMNS",
    "CandleDataError",
    "CandleSeries",
    "WindowBatch",
    "WindowSampler",
    "aggregate_candles",
    "backtesting_csv_paths",
    "heldout_windows",
    "invert_candles",
    "load_csv",
    "normalize_window",
    "series_from_frame",
    "train_rows",
]
