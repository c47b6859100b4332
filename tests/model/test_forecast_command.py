"""``kronos-forecast`` on real candles: the trading calendar, valid candles, no invented columns,
quantiles of close and sample paths, files without timestamps, and clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "model", *args], capture_output=True, text=True, timeout=180, cwd=ROOT)


@pytest.fixture(scope="module")
def goog_csv(tmp_path_factory, goog) -> Path:
    path = tmp_path_factory.mktemp("cli") / "goog.csv"
    # As most sources write it: a Date column and capitalised OHLC, no volume.
    goog.iloc[-200:][["open", "high", "low", "close"]].rename(columns=str.capitalize).to_csv(path, index_label="Date")
    return path


def _valid(frame: pd.DataFrame) -> bool:
    body_low, body_high = frame[["open", "close"]].min(axis=1), frame[["open", "close"]].max(axis=1)
    return bool(((frame["low"] <= body_low) & (body_high <= frame["high"])).all())


def test_goog_forecast_with_bands_and_paths(goog_csv, tmp_path):
    paths = tmp_path / "paths.csv"
    out = _run(str(goog_csv), "--pred-len", "8", "--sample-count", "6", "--seed", "4", "--quantiles", "0.1,0.9")
    assert out.returncode == 0, out.stderr
    again = _run(
        str(goog_csv),
        "--pred-len",
        "8",
        "--sample-count",
        "6",
        "--seed",
        "4",
        "--quantiles",
        "0.1,0.9",
        "--paths",
        str(paths),
    )
    assert again.stdout == out.stdout
    frame = pd.read_csv(pd.io.common.StringIO(out.stdout), index_col="timestamp", parse_dates=True)
    assert frame.columns.tolist() == ["open", "high", "low", "close", "close_q0.1", "close_q0.9"]
    assert frame.index[0] == pd.Timestamp("2013-03-04") and set(frame.index.day_of_week) <= {0, 1, 2, 3, 4}
    assert _valid(frame) and (frame["close_q0.1"] <= frame["close_q0.9"]).all()
    assert "seed 4" in out.stderr
    every = pd.read_csv(paths)
    assert every.columns.tolist() == ["path", "timestamp", "open", "high", "low", "close"]
    assert len(every) == 6 * 8 and _valid(every)
    # Numbers as float32 holds them, not 17-digit noise.
    assert all(
        len(value.replace("-", "").replace(".", "").lstrip("0")) <= 7 for value in out.stdout.split()[1].split(",")[1:]
    )


def test_calendar_and_freq_options(goog_csv):
    thanksgiving = _run(str(goog_csv), "--pred-len", "2", "--seed", "1", "--calendar", "XNYS", "--freq", "D")
    assert thanksgiving.returncode == 0, thanksgiving.stderr
    daily = _run(str(goog_csv), "--pred-len", "2", "--seed", "1", "--freq", "D")
    assert daily.stdout.splitlines()[1].startswith("2013-03-02")  # freq D is calendar days, as asked
    assert thanksgiving.stdout.splitlines()[1].startswith("2013-03-04")  # XNYS sessions


def test_files_without_timestamps_and_bad_options(tmp_path, goog):
    bare = tmp_path / "bare.csv"
    goog.iloc[-50:][["open", "high", "low", "close"]].to_csv(bare, index=False)
    out = _run(str(bare), "--pred-len", "3", "--seed", "2")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "step,open,high,low,close"
    assert [line.split(",")[0] for line in out.stdout.splitlines()[1:]] == ["1", "2", "3"]
    assert "no timestamp column" in out.stderr
    wrong = _run(str(bare), "--timestamp-column", "when")
    assert wrong.returncode == 2
    assert "--timestamp-column 'when': no such column; the columns are open, high, low, close" in wrong.stderr
    assert "quantiles" in _run(str(bare), "--quantiles", "0.5").stderr  # one path has no band
    broken = tmp_path / "broken.csv"
    rows = goog.iloc[-20:][["open", "high", "low", "close"]].copy()
    rows.iloc[4, 1] = rows.iloc[4, 0] - 1  # high below open
    rows.to_csv(broken, index_label="date")
    refused = _run(str(broken), "--pred-len", "2")
    # the file's line (header line 1, data row 4 on line 6), as the page says it
    assert refused.returncode == 2 and "line 6, column high: not a valid candle" in refused.stderr
    assert _run(str(broken), "--pred-len", "2", "--repair-input").returncode == 0


def test_a_rolling_window_is_its_own_reproducible_forecast(goog_csv):
    """--window rolling past --max-context: valid candles on the same calendar, not the exact answer,
    the same answer again with the same seed."""
    common = [str(goog_csv), "--pred-len", "10", "--sample-count", "6", "--seed", "2", "--max-context", "64"]
    exact, rolling, again = _run(*common), _run(*common, "--window", "rolling"), _run(*common, "--window", "rolling")
    for out in (exact, rolling):
        assert out.returncode == 0, out.stderr
    assert rolling.stdout == again.stdout and rolling.stdout != exact.stdout
    # the exact run is told its window slides, what it costs and the two ways out, in the CLI's words
    assert "the window slides: 200 rows + pred_len 10 outgrow the model's max_context of 64" in exact.stderr
    assert "send at most" not in exact.stderr and "Two ways out: --lookback 54, or --window rolling" in exact.stderr
    assert "the window slides" not in rolling.stderr
    frames = [
        pd.read_csv(pd.io.common.StringIO(o.stdout), index_col="timestamp", parse_dates=True) for o in (exact, rolling)
    ]
    assert frames[0].index.equals(frames[1].index) and _valid(frames[1])
