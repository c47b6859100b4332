"""One series from a CSV file, for ``kronos-forecast INPUT`` (``-``: standard input), checked the way the
forecast page checks it: what is wrong is named by the file's line (1-based, the header being line 1, as
the page says "Line 5") and column, in words.

``read_csv`` keeps each row's line number as the frame's index; ``numeric_columns``, ``timestamp_column``
and ``invalid_candle`` turn a bad value, a timestamp that is not after the row before and a candle that
breaks the candle rule into such messages (``InputError``).
"""

from __future__ import annotations

import io
import sys

import numpy as np
import pandas as pd

from ..errors import InputError
from .candles import RULE, describe_invalid


def source_name(source: str) -> str:
    return "stdin" if source == "-" else source


def read_csv(source: str) -> pd.DataFrame:
    """The table of ``source`` (a path, or ``-`` for stdin), indexed by each row's line in the file."""
    name = source_name(source)
    if source == "-":
        text = sys.stdin.read()
    else:
        with open(source, encoding="utf-8-sig", newline="") as handle:  # OSError: the caller says it
            text = handle.read()
    if not text.strip():
        raise InputError(
            f"{name}: the file is empty; it needs a header line (e.g. date,open,high,low,close) and one row per candle"
        )
    try:
        frame = pd.read_csv(io.StringIO(text))
    except pd.errors.ParserError as exc:
        raise InputError(f"{name}: not a CSV table ({exc})") from None
    if frame.empty:
        raise InputError(f"{name}: the header ({', '.join(map(str, frame.columns))}) has no rows below it")
    # Rows in order on the file's non-blank lines after the header (pandas skips blank ones); a quoted
    # value spanning lines would shift this, so then the rows are numbered as if one line each.
    lines = [i for i, line in enumerate(text.splitlines(), start=1) if line.strip()]
    rows = lines[1:] if len(lines) - 1 == len(frame) else list(range(2, len(frame) + 2))
    return frame.set_axis(pd.Index(rows, name="line"), axis=0)


def numeric_columns(frame: pd.DataFrame, columns: list[str], name: str) -> np.ndarray:
    """The columns as float64, or an InputError naming the line and column of the first missing,
    non-numeric or infinite value."""
    values = np.empty((len(frame), len(columns)))
    for j, column in enumerate(columns):
        raw = frame[column]
        numbers = pd.to_numeric(raw, errors="coerce").to_numpy(dtype="float64")
        bad = ~np.isfinite(numbers)
        if bad.any():
            i = int(np.argmax(bad))
            line, given = frame.index[i], raw.iloc[i]
            if pd.isna(given):
                problem = "the value is missing"
            elif isinstance(given, str):
                problem = f"{given!r} is not a number"
            else:
                problem = f"{given} is not a finite number"
            raise InputError(f"{name}: line {line}, column {column}: {problem}")
        values[:, j] = numbers
    return values


def timestamp_column(frame: pd.DataFrame, column: str, name: str) -> pd.DatetimeIndex:
    """The column as timestamps, oldest first: an InputError names the line of the first one that is
    not a date or time, or that is not after the row before."""
    raw = frame[column]
    try:
        stamps = pd.to_datetime(raw)
    except (TypeError, ValueError, OverflowError) as exc:
        try:  # which value: each one parsed on its own
            stamps = pd.to_datetime(raw, errors="coerce", format="mixed")
        except (TypeError, ValueError, OverflowError):
            raise InputError(f"{name}: column {column} is not parseable as timestamps ({exc})") from None
        if not stamps.isna().any():
            raise InputError(f"{name}: column {column} is not parseable as timestamps ({exc})") from None
    missing = stamps.isna().to_numpy()
    if missing.any():
        i = int(np.argmax(missing))
        given = raw.iloc[i]
        what = "the value is missing" if pd.isna(given) else f"{given!r} is not a date or time"
        raise InputError(f"{name}: line {frame.index[i]}, column {column}: {what}")
    index = pd.DatetimeIndex(stamps)
    steps = np.diff(index.asi8)
    if (steps <= 0).any():
        i = int(np.argmax(steps <= 0)) + 1
        raise InputError(
            f"{name}: line {frame.index[i]}, column {column}: {raw.iloc[i]} is not after the row before (line "
            f"{frame.index[i - 1]}: {raw.iloc[i - 1]}); rows go oldest first, one per timestamp"
        )
    return index


def invalid_candle(frame: pd.DataFrame, candles: np.ndarray, bad: np.ndarray, name: str) -> InputError:
    """The first candle breaking the candle rule, by line and the column at fault."""
    i = int(bad[0])
    open_, high, low, close = candles[i, :4]
    column = "high" if high < max(open_, close, low) else "low"
    more = f" ({len(bad) - 1} more rows too)" if len(bad) > 1 else ""
    return InputError(
        f"{name}: line {frame.index[i]}, column {column}: not a valid candle ({describe_invalid(candles[i])}); "
        f"a candle needs {RULE}{more}. --repair-input widens high and low to fit"
    )
