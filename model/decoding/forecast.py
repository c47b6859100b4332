"""What a forecast is, apart from how it is decoded: ``SeriesInput`` (one series and its settings),
``Forecast`` (the mean candle and every path, in price units), ``finish_forecast`` (paths → Forecast,
the one place both decoders build one) and the feature helpers (columns, timestamps, normalisation).

Both decoders import this module: the batched loop behind ``KronosPredictor`` (``pipeline.py``) and
the step-level engine (``engine.py``); neither imports the other's module for these names.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..errors import InputError
from ..series.candles import repair_candles

PRICE_COLUMNS = ("open", "high", "low", "close")
FEATURE_COLUMNS = (*PRICE_COLUMNS, "volume", "amount")
MIN_ROWS = 2
WINDOWS = ("exact", "rolling")  # SeriesInput.window
# Drawn seeds stay below 2^53, the integers a JavaScript number (a float64) holds exactly, so a seed
# read from a JSON answer by a browser or jq and sent back reproduces the forecast.
SEED_BITS = 53
_STD_EPS = 1e-5


def column_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and (population std + 1e-5) of an input, in float32 as the reference: the
    normalization of the input and the denormalization of its forecast."""
    return x.mean(axis=0), x.std(axis=0) + np.float32(_STD_EPS)


def finish_forecast(s: SeriesInput, x: np.ndarray, paths: np.ndarray, seed: int) -> Forecast:
    """A series' forecast from its normalised sample paths (S, pred_len, 6): denormalised with the
    statistics of its input features ``x``; with ``s.clean`` every path candle is repaired and the columns
    the input lacked are dropped. The one place both decoders (here and ``engine.py``) build a Forecast."""
    center, scale = column_stats(x)
    samples = (paths * scale + center).astype(np.float64)
    columns, repaired = FEATURE_COLUMNS, 0
    if s.clean:
        samples, repaired = repair_candles(samples)
        columns = FEATURE_COLUMNS[: np.shape(s.candles)[1]]
        mean = samples.mean(axis=0)
    else:
        mean = (paths.mean(axis=0) * scale + center).astype(np.float64)  # the reference's arithmetic
    return Forecast(s.future_timestamps, mean, samples, seed, columns, repaired)


def time_features(timestamps: pd.DatetimeIndex) -> np.ndarray:
    """(n, 5) int64: minute, hour, weekday (Monday = 0), day of month, month."""
    return np.stack(
        [timestamps.minute, timestamps.hour, timestamps.day_of_week, timestamps.day, timestamps.month], axis=1
    ).astype(np.int64)


def as_timestamps(values, name: str, expected_len: int) -> pd.DatetimeIndex:
    """Parse timestamps and check their count and strict increase; errors name ``name``."""
    try:
        index = pd.DatetimeIndex(pd.to_datetime(values))
    except (TypeError, ValueError, OverflowError) as exc:
        raise InputError(f"{name}: not parseable as timestamps ({exc})") from None
    if len(index) != expected_len:
        raise InputError(f"{name}: expected {expected_len} timestamps, got {len(index)}")
    if index.hasnans:
        raise InputError(f"{name}: contains missing timestamps (NaT) at position {int(np.argmax(index.isna()))}")
    if expected_len > 1:
        steps = np.diff(index.asi8)
        if (steps <= 0).any():
            at = int(np.argmax(steps <= 0)) + 1
            raise InputError(f"{name}: timestamps must be strictly increasing (position {at} is not after {at - 1})")
    return index


def complete_features(candles: np.ndarray, name: str = "candles") -> np.ndarray:
    """(n, 6) float32 open, high, low, close, volume, amount from (n, 4|5|6) candles.

    No volume: volume and amount are 0. Volume but no amount: amount = volume × mean(OHLC).
    """
    try:
        x = np.asarray(candles, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name}: not numeric ({exc})") from None
    if x.ndim != 2 or x.shape[1] not in (4, 5, 6):
        raise InputError(f"{name}: expected rows of 4, 5 or 6 values (OHLC[V[A]]), got shape {x.shape}")
    bad = ~np.isfinite(x)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise InputError(f"{name}: row {row} column {FEATURE_COLUMNS[col]} is {x[row, col]} (must be finite)")
    if x.shape[1] == 4:
        x = np.concatenate([x, np.zeros((len(x), 2))], axis=1)
    elif x.shape[1] == 5:
        x = np.concatenate([x, (x[:, 4] * x[:, :4].mean(axis=1))[:, None]], axis=1)
    return x.astype(np.float32)


def frame_columns(df: pd.DataFrame, name: str = "df") -> pd.DataFrame:
    """df with its column names stripped and lower-cased (``Open``, ``Volume`` as in most data
    sources), unless that makes two columns one."""
    names = [str(c).strip().lower() for c in df.columns]
    if names == list(df.columns):
        return df
    if len(set(names)) != len(names):
        clashes = sorted({n for n in names if names.count(n) > 1})
        raise InputError(f"{name}: columns {', '.join(clashes)} appear twice when case is ignored")
    return df.set_axis(names, axis=1)


@dataclass
class SeriesInput:
    """One series to forecast, with its own generation settings."""

    candles: np.ndarray  # (n, 4|5|6): open, high, low, close[, volume[, amount]]
    timestamps: pd.DatetimeIndex  # n input timestamps
    future_timestamps: pd.DatetimeIndex  # pred_len future timestamps
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 0.9
    sample_count: int = 1
    seed: int | None = None
    # Repair every sample path's candles (see ``model/series/candles.py``) and leave out the columns the candles
    # lack (volume, amount); off by default, so the drop-in API gives the reference's numbers.
    clean: bool = False
    # Set it (from any thread) to abandon this series mid-decode; forecast() then returns None for it.
    cancel: threading.Event | None = None
    # "exact" (the reference): once input + forecast outgrow max_context, every token recomputes the
    # window. "rolling": keep the cache and drop the oldest key/value per token instead (sliding-window
    # attention; much faster for long forecasts, not equal to the reference once the window slides).
    window: str = "exact"

    @property
    def pred_len(self) -> int:
        return len(self.future_timestamps)


@dataclass
class Forecast:
    """A forecast: the mean over sample paths and every path, in price units, float64."""

    timestamps: pd.DatetimeIndex
    mean: np.ndarray  # (pred_len, 6)
    samples: np.ndarray  # (sample_count, pred_len, 6)
    seed: int
    # The columns that mean something: all six, or (``clean``) only those the input had.
    columns: tuple[str, ...] = field(default=FEATURE_COLUMNS)
    repaired: int = 0  # sample-path candles whose wicks were widened to cover their body (``clean``)

    def quantiles(self, levels: Sequence[float]) -> np.ndarray:
        """(len(levels), pred_len, 6) per-column quantiles over the sample paths: each column on its
        own, so a level's row is not one path's candle (with repaired paths it is still valid)."""
        return np.quantile(self.samples, np.asarray(levels, dtype=np.float64), axis=0)

    def close_quantiles(self, levels: Sequence[float]) -> np.ndarray:
        """(len(levels), pred_len) quantiles of the close over the sample paths: the headline band."""
        return np.quantile(self.samples[..., 3], np.asarray(levels, dtype=np.float64), axis=0)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.mean[:, : len(self.columns)], columns=list(self.columns), index=self.timestamps)
