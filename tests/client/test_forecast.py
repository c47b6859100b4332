"""``Client.forecast``, ``backtest``, ``models``, ``ready``, ``health`` against a real server, on real candles."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from kronos_client import BacktestResult, ForecastResult


def test_health_ready_models(kronos):
    assert kronos.health()["status"] == "ok"
    ready = kronos.ready()
    assert ready["status"] == "ready" and ready["batching"]["max_queue"] >= 1
    models = kronos.models()
    assert models["default"] in [m["name"] for m in models["models"]]


def test_a_forecast_is_frames_indexed_by_the_forecast_times(kronos, goog):
    result = kronos.forecast(goog, 10, sample_count=8, quantiles=(0.1, 0.5, 0.9), seed=7)
    assert isinstance(result, ForecastResult)
    frame = result.frame
    assert list(frame.columns) == ["Open", "High", "Low", "Close", "Volume"]  # the input's columns, its names
    assert isinstance(frame.index, pd.DatetimeIndex) and len(frame) == 10
    assert frame.index[0] == pd.Timestamp("2013-03-04")  # GOOG's last row is Friday 2013-03-01: Monday next
    assert frame.index.day_of_week.max() <= 4  # trading days only
    assert (frame["Low"] <= frame[["Open", "Close"]].min(axis=1)).all()
    assert list(result.bands.columns) == [0.1, 0.5, 0.9] and result.bands.index.equals(frame.index)
    assert (result.bands[0.1] <= result.bands[0.9]).all()
    assert sorted(result.quantiles) == [0.1, 0.5, 0.9] and result.quantiles[0.5].shape == frame.shape
    assert result.p_up is not None and result.p_up.between(0, 1).all() and result.p_up.index.equals(frame.index)
    assert result.seed == 7 and result.model == kronos.models()["default"] and result.model_version
    assert result.paths is None and isinstance(result.notes, list)


def test_the_seed_sent_back_reproduces(kronos, goog):
    first = kronos.forecast(goog, 8, sample_count=4)
    again = kronos.forecast(goog, 8, sample_count=4, seed=first.seed)
    pd.testing.assert_frame_equal(first.frame, again.frame)
    other = kronos.forecast(goog, 8, sample_count=4, seed=first.seed + 1)
    assert not first.frame.equals(other.frame)


def test_a_timestamp_column_works_as_the_index_does(kronos, goog):
    by_index = kronos.forecast(goog, 5, seed=3)
    by_column = kronos.forecast(goog.rename_axis("Date").reset_index(), 5, seed=3)
    named = kronos.forecast(goog.rename_axis("when").reset_index(), 5, seed=3, timestamp_column="when")
    pd.testing.assert_frame_equal(by_index.frame, by_column.frame)
    pd.testing.assert_frame_equal(by_index.frame, named.frame)


def test_no_timestamps_means_steps_and_no_invented_columns(kronos, goog):
    plain = goog[["Open", "High", "Low", "Close"]].reset_index(drop=True)
    result = kronos.forecast(plain, 4, seed=1)
    assert result.frame.index.name == "step" and list(result.frame.index) == [1, 2, 3, 4]
    assert list(result.frame.columns) == ["Open", "High", "Low", "Close"]  # no volume: none invented
    assert result.p_up is None and result.bands is None  # one path


def test_time_zones_across_summer_time_come_back_in_the_zone(kronos, eurusd):
    """EURUSD hours as Europe/London times across the March change of offset: the forecast continues them,
    in the input's zone."""
    hours = eurusd.copy()
    hours.index = pd.date_range("2024-03-25 00:00", periods=len(hours), freq="h", tz="Europe/London")
    assert hours.index[0].utcoffset() != hours.index[-1].utcoffset()  # GMT, then BST
    result = kronos.forecast(hours, 6, seed=2)
    assert str(result.frame.index.tz) == "Europe/London"
    assert result.frame.index[0] == hours.index[-1] + pd.Timedelta(hours=1)
    assert (result.frame.index[1:] - result.frame.index[:-1] == pd.Timedelta(hours=1)).all()


def test_return_paths_gives_every_sample_path(kronos, goog):
    result = kronos.forecast(goog, 6, sample_count=5, seed=11, return_paths=True)
    paths = result.paths
    assert paths is not None and paths.index.names == ["path", "timestamp"]
    assert sorted(set(paths.index.get_level_values("path"))) == [0, 1, 2, 3, 4]
    assert list(paths.columns) == list(result.frame.columns)
    mean = paths.groupby(level="timestamp").mean()
    np.testing.assert_allclose(mean.to_numpy(), result.frame.to_numpy(), rtol=1e-5)  # the forecast is their mean


def test_sampling_options_reach_the_server(kronos, goog):
    base = kronos.forecast(goog, 5, sample_count=2, seed=5)
    for options in ({"T": 0.5}, {"top_p": 0.5}, {"top_k": 3}, {"freq": "D"}, {"window": "rolling"}):
        changed = kronos.forecast(goog, 5, sample_count=2, seed=5, **options)
        if "freq" in options:  # calendar days: Saturday comes after Friday now
            assert changed.frame.index[0] == pd.Timestamp("2013-03-02")
        elif "window" in options:
            assert any("rolling" in note for note in changed.notes) or changed.frame.equals(base.frame)
        else:
            assert not changed.frame.equals(base.frame), options
    with_calendar = kronos.forecast(goog, 3, seed=5, calendar="XNAS")
    assert with_calendar.frame.index[0].date() == pd.Timestamp("2013-03-04").date()


def test_a_backtest_is_frames_of_scores(kronos, goog):
    result = kronos.backtest(goog, windows=4, step=5, lookback=64, pred_len=5, sample_count=4, seed=3)
    assert isinstance(result, BacktestResult)
    assert set(result.metrics.index) >= {"mae", "rmse", "crps", "brier"} and result.metrics["mae"] > 0
    assert list(result.baselines.index) == ["model", "last_value", "drift"]
    assert result.baselines.loc["model", "mae"] == pytest.approx(result.metrics["mae"])
    assert list(result.skill.index) == ["last_value", "drift"] and list(result.skill.columns) == ["mae", "crps"]
    expected = 1 - result.metrics["mae"] / result.baselines.loc["last_value", "mae"]
    assert result.skill.loc["last_value", "mae"] == pytest.approx(expected, abs=1e-6)
    windows = result.windows
    assert list(windows.columns) == ["origin", "timestamp", "seed", "mae"] and len(windows) == 4
    assert list(windows["origin"]) == [155, 150, 145, 140]  # newest first, step 5 apart
    assert isinstance(windows["timestamp"].iloc[0], pd.Timestamp)
    assert result.lookback == 64 and result.step == 5 and len(result.per_horizon) == 5


def test_a_backtest_window_is_the_forecast_of_its_seed(kronos, goog):
    """A window's seed, sent to forecast with the window's rows, gives the window's forecast (its MAE)."""
    sampling = {"sample_count": 4, "T": 1.0, "top_p": 0.9}
    result = kronos.backtest(goog, windows=2, pred_len=4, lookback=50, seed=9, **sampling)
    window = result.windows.iloc[0]
    origin = int(window["origin"])
    rows = goog.iloc[origin - 50 : origin]
    forecast = kronos.forecast(rows, 4, seed=int(window["seed"]), **sampling)
    truth = goog["Close"].iloc[origin : origin + 4].to_numpy()
    assert np.abs(forecast.frame["Close"].to_numpy() - truth).mean() == pytest.approx(window["mae"], rel=1e-4)
