"""kronos-train's input checks: bad CSV files fail with errors that name the file, line and column."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from model.training.cli import main
from model.training.data import CandleDataError, WindowSampler, load_csv, series_from_frame

GOOD = """timestamps,open,high,low,close,volume
2024-01-01 09:00,10,11,9,10.5,100
2024-01-01 10:00,10.5,12,10,11,120
2024-01-01 11:00,11,11.5,10,10.2,90
2024-01-01 12:00,10.2,10.8,9.9,10.6,80
"""


def _write(tmp_path, text: str, name: str = "candles.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_good_csv_loads_with_amount_filled(tmp_path):
    series = load_csv(_write(tmp_path, GOOD))
    assert series.candles.shape == (4, 6)
    # No amount column: amount = volume x mean(open, high, low, close), as the predictor does.
    np.testing.assert_allclose(series.candles[0, 5], 100 * np.mean([10, 11, 9, 10.5]), rtol=1e-6)
    assert series.timestamps[0] == pd.Timestamp("2024-01-01 09:00")


def test_backtesting_layout_unnamed_index_column(tmp_path):
    text = ",Open,High,Low,Close,Volume\n2020-01-01,1,2,0.5,1.5,10\n2020-01-02,1.5,2,1,1.8,12\n"
    series = load_csv(_write(tmp_path, text))
    assert len(series) == 2 and series.timestamps[1] == pd.Timestamp("2020-01-02")


@pytest.mark.parametrize(
    "text,message",
    [
        pytest.param(
            "timestamps,open,high,close\n2024-01-01,1,2,1.5\n", "missing required column(s) low", id="missing-column"
        ),
        pytest.param(GOOD.replace("01 11:00", "01 09:30"), "line 4: timestamps are not sorted", id="unsorted"),
        pytest.param(GOOD.replace("01 11:00", "01 10:00"), "line 4: duplicate timestamp", id="duplicate"),
        pytest.param(GOOD.replace("10.5,12,10,11,120", "10.5,12,10,,120"), "line 3: column close", id="nan"),
        pytest.param(GOOD.replace("11,11.5,10,10.2,90", "11,11.5,NaN,10.2,90"), "line 4: column low", id="nan-literal"),
        pytest.param(GOOD.replace("2024-01-01 12:00", "not a time"), "line 5: timestamp 'not a time'", id="bad-time"),
        pytest.param("open,high,low,close\n1,2,0,1\n", "no timestamp column", id="no-timestamps"),
        pytest.param("timestamps,open,high,low,close\n", "no rows", id="empty"),
    ],
)
def test_bad_csv_is_refused_clearly(tmp_path, capsys, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(CandleDataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_csv(path)
    # The command line says the same, names the file, and exits 2 without a traceback.
    assert main([str(path), "--out", str(tmp_path / "out"), "--size", "tiny", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kronos-train: error:") and str(path) in err and message in err
    assert not (tmp_path / "out").exists()


def test_missing_file_is_an_error(tmp_path, capsys):
    assert main([str(tmp_path / "nope.csv"), "--out", str(tmp_path / "out")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_series_too_short_for_the_windows(tmp_path):
    series = load_csv(_write(tmp_path, GOOD))
    with pytest.raises(CandleDataError, match="no series has min_window = 16 training rows"):
        WindowSampler([series], 0.15, 16, 32, 4)


def test_windows_are_normalized_on_their_context_and_reproducible(goog):
    series = series_from_frame(goog.reset_index(names="date"), "GOOG")
    sampler = WindowSampler([series], 0.15, 32, 64, 8, seed=3)
    a, b = sampler.batch(7, 4), sampler.batch(7, 4)
    assert np.array_equal(a.candles.numpy(), b.candles.numpy())
    x = a.candles.numpy()
    length = x.shape[1]
    assert 32 <= length <= 64
    context = x[:, : length - 8, :4]
    np.testing.assert_allclose(context.mean(axis=1), 0, atol=1e-3)
    assert np.abs(x).max() <= 5


def test_training_windows_stay_out_of_the_held_out_rows():
    # One candle a minute: minute + 60 * hour is the row number, so the stamps say where a window lies.
    n = 100
    frame = pd.DataFrame(
        {
            "timestamps": pd.date_range("2024-01-01", periods=n, freq="min"),
            "open": 1.0,
            "high": 2.0,
            "low": 0.5,
            "close": np.linspace(1, 2, n),
        }
    )
    series = series_from_frame(frame, "minutes")
    assert series.split(0.15) == 85
    sampler = WindowSampler([series], 0.15, 8, 40, 4)
    for step in range(50):
        stamps = sampler.batch(step, 16).stamps.numpy()
        rows = stamps[..., 0] + 60 * stamps[..., 1]
        assert rows.max() < 85
