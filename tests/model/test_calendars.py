"""Future timestamps follow the history's own calendar, on real candles: GOOG daily (weekdays,
holidays), EURUSD hourly (round the clock, Sunday evening to Friday evening) and a 5-minute series
with sessions; exchange calendars for exact holidays; explicit frequencies still win."""

from __future__ import annotations

import pandas as pd
import pytest

from model import InputError, future_timestamps
from model.series.calendars import infer_calendar
from tests.sessions import five_minute_sessions


def _slots(index: pd.DatetimeIndex) -> set[tuple[int, pd.Timedelta]]:
    return set(zip(index.day_of_week, index - index.normalize()))


def test_goog_daily_continues_on_weekdays_across_holidays(goog):
    history = goog.index[-200:]  # last row Friday 2013-03-01, with Presidents' Day and Christmas gaps
    future = future_timestamps(history, 10)
    assert future[0] == pd.Timestamp("2013-03-04")  # Friday -> Monday, not Saturday
    assert set(future.day_of_week) <= set(history.day_of_week) == {0, 1, 2, 3, 4}
    assert len(future) == 10 and (future.diff()[1:] > pd.Timedelta(0)).all()
    # Every window of the history infers the same calendar, holidays or not.
    for end in range(60, len(goog), 97):
        window = goog.index[end - 60 : end]
        assert set(future_timestamps(window, 7).day_of_week) <= {0, 1, 2, 3, 4}


def test_exchange_calendar_knows_the_holidays(goog):
    history = goog.index[goog.index <= "2012-11-21"][-100:]  # the day before Thanksgiving
    inferred = future_timestamps(history, 3)
    exact = future_timestamps(history, 3, calendar="XNYS")
    assert inferred[0] == pd.Timestamp("2012-11-22")  # the history cannot know Thanksgiving
    assert list(exact) == [pd.Timestamp(d) for d in ("2012-11-23", "2012-11-26", "2012-11-27")]
    with pytest.raises(InputError, match="calendar: 'NOPE' is not an exchange calendar code"):
        future_timestamps(history, 3, calendar="NOPE")


def test_eurusd_hourly_never_forecasts_the_weekend(eurusd):
    history = eurusd.index[-200:]  # about eight days: one weekend, open Sunday evening to Friday evening
    seen = _slots(history)
    future = future_timestamps(history, 120)  # runs over the next weekend
    assert _slots(future) <= seen
    assert 5 not in set(future.day_of_week)
    assert (future.minute == 0).all()
    friday = future[future.day_of_week == 4]
    sunday = future[future.day_of_week == 6]
    assert len(friday) and len(sunday)
    assert friday.hour.max() == history[history.day_of_week == 4].hour.max()
    assert sunday.hour.min() == history[history.day_of_week == 6].hour.min()


def test_five_minute_sessions_resume_at_the_next_open():
    candles = five_minute_sessions()
    for rows in (300, 120, 924):  # several sessions; the last day and the afternoon before; everything
        history = candles.index[-rows:]
        future = future_timestamps(history, 200)
        assert _slots(future) <= _slots(candles.index), rows
        # After the last bar of a day comes the next weekday's 09:00 open.
        assert future[0] == history[-1].normalize() + pd.offsets.BDay(1) + pd.Timedelta(hours=9)
        times = future - future.normalize()
        assert times.min() == pd.Timedelta("09:00:00") and times.max() == pd.Timedelta("15:55:00")
        assert (future.diff()[1:] >= pd.Timedelta("5min")).all()
    # The left-out weekday (a holiday) does not make the weekday a closed one.
    assert infer_calendar(candles.index).weekdays == frozenset(range(5))


def test_five_minute_sessions_on_an_exchange_and_in_a_time_zone():
    candles = five_minute_sessions()
    local = candles.index[-300:].tz_localize("America/New_York")
    future = future_timestamps(local, 100, calendar="XNYS")
    assert str(future.tz) == "America/New_York"
    times = future - future.normalize()
    assert times.min() == pd.Timedelta("09:30:00") and times.max() == pd.Timedelta("15:55:00")
    history = local.tz_convert("UTC")
    utc = future_timestamps(history, 100)
    assert set(utc - utc.normalize()) <= set(history - history.normalize())
    assert set(utc.day_of_week) <= {0, 1, 2, 3, 4}


def test_explicit_freq_wins_and_short_histories_stay_sensible(goog):
    history = goog.index[-30:]
    assert list(future_timestamps(history, 2, freq="D")) == [pd.Timestamp("2013-03-02"), pd.Timestamp("2013-03-03")]
    assert list(future_timestamps(history, 2, freq="B")) == [pd.Timestamp("2013-03-04"), pd.Timestamp("2013-03-05")]
    # A few 5-minute rows inside one day: no session known yet, so the bars just continue.
    morning = pd.date_range("2024-03-04 15:45", periods=3, freq="5min")
    assert future_timestamps(morning, 2)[-1] == pd.Timestamp("2024-03-04 16:05")
    # Weekly and month-end rows keep their anchor.
    assert future_timestamps(pd.date_range("2024-01-05", periods=8, freq="W-FRI"), 1)[0] == pd.Timestamp("2024-03-01")
    assert future_timestamps(pd.date_range("2024-01-31", periods=5, freq="ME"), 1)[0] == pd.Timestamp("2024-06-30")
    assert future_timestamps(history[-1:], 1, default_freq="h")[0] == history[-1] + pd.Timedelta("1h")
    with pytest.raises(InputError, match="freq"):
        future_timestamps(history, 2, freq="fortnight")


def test_odd_histories_still_get_a_future():
    # Three Mondays of irregular seconds: one weekday, a session narrower than its grid.
    mondays = pd.DatetimeIndex(
        [
            "2024-03-04 09:00:00",
            "2024-03-11 09:00:07",
            "2024-03-11 09:00:09",
            "2024-03-18 09:00:03",
            "2024-03-18 09:00:05",
        ]
    )
    future = future_timestamps(mondays, 3)
    assert len(future) == 3 and future[0] > mondays[-1] and set(future.day_of_week) == {0}
    # Sub-second bars just continue (a day of millisecond slots would be millions).
    ticks = pd.date_range("2024-01-01", periods=5, freq="1ms")
    assert future_timestamps(ticks, 2)[-1] == ticks[-1] + pd.Timedelta("2ms")
