"""Trading calendars: the timestamps a forecast continues on, after a history of candles.

The future follows the history's own calendar, inferred from its timestamps:

- **Step**: the most common gap between consecutive rows (not the median, not ``pd.infer_freq``,
  both of which a holiday or a session gap throws off).
- **Trading weekdays**: the weekdays the history has rows on. A history shorter than two weeks
  cannot tell a holiday from a closed weekday, so Monday to Friday count as trading days there too.
- **Sessions** (intraday steps): the times of day seen. With at least two full days in the history
  the times seen are the session (a lunch break stays a break); with fewer, the session is every
  step from the earliest to the latest time seen. A weekday whose every full day seen opens later
  or closes earlier (FX opening on Sunday evening, closing on Friday) keeps those hours, once the
  history covers a week.
- **Daily steps** keep the last row's time of day; weekly, monthly and longer steps continue the
  pandas frequency the recent rows follow (``pd.infer_freq``), else the common step.

Overrides, strongest first: explicit future timestamps (``y_timestamp``, ``prediction_timestamps``);
``freq``, a pandas offset continued from the last timestamp as pandas defines it (``B`` skips
weekends, ``5min`` runs round the clock); ``calendar``, an exchange code of the
``exchange_calendars`` package (``XNYS``, ``XLON``, ...) for exact holidays, sessions and early
closes, with ``freq`` (or the inferred step) as the bar length within a session.

The Python API (``future_timestamps``), ``kronos-forecast`` and the service all call this module.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputError

DAY = pd.Timedelta(days=1)
WEEKDAYS = frozenset(range(5))  # Monday to Friday
# Rows sent without timestamps are consecutive periods from here (a Monday), so the model's
# calendar features (and with a seed, the answer) never depend on when the request was made.
SYNTHETIC_START = pd.Timestamp("2024-01-01T00:00:00")
_SHORT_HISTORY = pd.Timedelta(days=14)
_WEEK = pd.Timedelta(days=7)
_FINEST_SESSION_STEP = pd.Timedelta(seconds=1)


def parse_freq(freq: str, name: str = "freq") -> pd.DateOffset:
    """A pandas frequency (``5min``, ``h``, ``D``, ``B``, ``W``) that moves forward in time."""
    try:
        offset = pd.tseries.frequencies.to_offset(freq)
    except (ValueError, TypeError):
        raise InputError(f"{name}: {freq!r} is not a pandas frequency (e.g. 5min, h, D, B, W)") from None
    if offset is None or offset.n <= 0:
        raise InputError(f"{name}: {freq!r} must move forward in time")
    return offset


def _step_of(index: pd.DatetimeIndex) -> pd.Timedelta:
    """The most common gap between rows; the smaller on a tie (gaps are holidays and closes)."""
    gaps = pd.Series(index[1:] - index[:-1])
    counts = gaps.value_counts()
    return pd.Timedelta(counts[counts == counts.max()].index.min())


@dataclass(frozen=True)
class InferredCalendar:
    """What the history says about when its market trades."""

    step: pd.Timedelta
    weekdays: frozenset[int]
    # Intraday only: the times of day a bar may start at, per weekday (Monday = 0).
    sessions: dict[int, tuple[pd.Timedelta, ...]] | None = None
    # Weekly and longer steps: the pandas frequency the recent rows follow, if any.
    offset: pd.DateOffset | None = None

    def describe(self) -> str:
        names = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
        days = ",".join(names[d] for d in sorted(self.weekdays))
        text = f"step {self.offset.freqstr if self.offset is not None else self.step}, weekdays {days}"
        if self.sessions:
            spans = {(_clock(t[0]), _clock(t[-1])) for t in self.sessions.values()}
            text += ", sessions " + "; ".join(f"{a}-{b}" for a, b in sorted(spans))
        return text

    def future(self, last: pd.Timestamp, periods: int) -> pd.DatetimeIndex:
        if self.offset is not None:
            return pd.date_range(start=last + self.offset, periods=periods, freq=self.offset)
        if self.sessions is None:
            return self._daily(last, periods)
        return self._intraday(last, periods)

    def _daily(self, last: pd.Timestamp, periods: int) -> pd.DatetimeIndex:
        days = max(1, round(self.step / DAY))
        out, t = [], last
        while len(out) < periods:
            t = t + pd.Timedelta(days=days)
            if t.day_of_week in self.weekdays:
                out.append(t)
        return pd.DatetimeIndex(out)

    def _intraday(self, last: pd.Timestamp, periods: int) -> pd.DatetimeIndex:
        assert self.sessions is not None
        midnight = last.normalize()
        out: list[pd.Timestamp] = []
        day = midnight
        while len(out) < periods:
            for time in self.sessions.get(day.day_of_week, ()):
                stamp = _at(day, time)
                if stamp > last:
                    out.append(stamp)
                    if len(out) == periods:
                        break
            day = day + DAY
        return pd.DatetimeIndex(out)


def _clock(t: pd.Timedelta) -> str:
    minutes = int(t.total_seconds() // 60)
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _at(day: pd.Timestamp, time: pd.Timedelta) -> pd.Timestamp:
    """``day`` at wall-clock ``time`` (in the day's own time zone, if it has one)."""
    if day.tz is None:
        return day + time
    naive = day.tz_localize(None) + time
    return naive.tz_localize(day.tz, ambiguous=True, nonexistent="shift_forward")


def _times_of_day(index: pd.DatetimeIndex) -> np.ndarray:
    return np.asarray((index - index.normalize()).asi8)


def infer_calendar(index: pd.DatetimeIndex) -> InferredCalendar:
    """The calendar of a history of at least two strictly increasing timestamps."""
    if len(index) < 2:
        raise InputError("a calendar needs at least two timestamps to infer the step from")
    index = index.as_unit("ns")  # times of day are counted in nanoseconds below
    step = _step_of(index)
    if step < _FINEST_SESSION_STEP:
        # Sub-second bars: no sessions to infer, and a day of them would be millions of slots.
        return InferredCalendar(step, frozenset(range(7)), None, pd.tseries.frequencies.to_offset(step))
    span = index[-1] - index[0]
    weekdays = frozenset(int(d) for d in np.unique(index.day_of_week))
    if span < _SHORT_HISTORY:
        weekdays = weekdays | WEEKDAYS
    if step >= DAY:
        offset = None
        if step > DAY:
            for tail in (len(index), 24, 12, 6, 3):
                if len(index) >= tail >= 3:
                    with warnings.catch_warnings():  # pandas 3 warns that it will return an offset
                        warnings.simplefilter("ignore")
                        inferred = pd.infer_freq(index[-tail:])
                    if inferred:
                        offset = pd.tseries.frequencies.to_offset(getattr(inferred, "freqstr", inferred))
                        break
            if offset is None:
                offset = pd.tseries.frequencies.to_offset(step)
        return InferredCalendar(step, weekdays, None, offset)
    return InferredCalendar(step, weekdays, _sessions(index, step, weekdays, span))


def _sessions(
    index: pd.DatetimeIndex, step: pd.Timedelta, weekdays: frozenset[int], span: pd.Timedelta
) -> dict[int, tuple[pd.Timedelta, ...]]:
    times = _times_of_day(index)
    dates = index.normalize()
    # Full days: neither the first nor the last date of the history, which it may cover only in part.
    full = (dates != dates[0]) & (dates != dates[-1])
    unit = step.value
    if len(np.unique(dates[full])) >= 2:
        seen = np.unique(times)
    else:
        # Too little to see the session: every step between the earliest and the latest time seen
        # when the history shows an overnight close (a gap longer than the step into a new day),
        # else round the clock; on the grid of the last row.
        anchor = times[-1] % unit
        grid = np.arange(anchor, DAY.value, unit)
        overnight = (np.diff(index.asi8) > unit) & (dates[1:] != dates[:-1])
        if overnight.any():
            grid = grid[(grid >= times.min() - ((times.min() - anchor) % unit)) & (grid <= times.max())]
        seen = grid
    common = tuple(pd.Timedelta(int(t)) for t in seen)
    sessions = {d: common for d in weekdays}
    if span >= _WEEK:
        week_day = np.asarray(index.day_of_week)
        for d in weekdays:
            mine = full & (week_day == d)
            if mine.any():
                own = np.unique(times[mine])
                # Only a later open or an earlier close: a weekday never gains hours the others lack.
                lo, hi = own.min(), own.max()
                narrowed = tuple(t for t in common if lo <= t.value <= hi)
                sessions[d] = narrowed or common
    return sessions


def _exchange(code: str, name: str) -> Any:
    try:
        import exchange_calendars
    except ImportError:  # pragma: no cover — a dependency; kept for a clear message
        raise InputError(f"{name}: exchange calendars need the exchange_calendars package") from None
    if code not in exchange_calendars.get_calendar_names(include_aliases=True):
        raise InputError(f"{name}: {code!r} is not an exchange calendar code (e.g. XNYS, XNAS, XLON, XTKS, 24/7)")
    return exchange_calendars


def _exchange_future(
    code: str, last: pd.Timestamp, periods: int, step: pd.Timedelta | pd.DateOffset, name: str
) -> pd.DatetimeIndex:
    """Bar starts after ``last`` on an exchange's sessions: sessions for daily steps (at ``last``'s
    time of day), else every ``step`` from each open, up to the close (early closes included)."""
    xcals = _exchange(code, name)
    try:
        return _sessions_after(xcals, code, last, periods, step, name)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 — the package raises many types for dates it cannot serve
        raise InputError(f"{name}: {code} cannot continue {last} by {periods} periods ({exc})") from None


def _sessions_after(
    xcals: Any, code: str, last: pd.Timestamp, periods: int, step: pd.Timedelta | pd.DateOffset, name: str
) -> pd.DatetimeIndex:
    daily = not isinstance(step, pd.Timedelta) or step >= DAY
    # Session labels are dates without a time zone.
    day = (last.tz_localize(None) if last.tz is not None else last).normalize()
    # The package caches its default calendar (20 years back, one ahead); building another takes a second.
    calendar = xcals.get_calendar(code)
    days = 40 + periods * (2 if daily else 1)
    for _ in range(6):
        start, end = day - pd.Timedelta(days=7), day + pd.Timedelta(days=days)
        if start < calendar.first_session or end > calendar.last_session:
            calendar = xcals.get_calendar(code, start=start, end=end)
        if daily:
            sessions = calendar.sessions_in_range(start, end)
            stamps = (sessions.tz_localize(None) if sessions.tz is not None else sessions) + (last - last.normalize())
            if last.tz is not None:
                ambiguous = np.ones(len(stamps), dtype=bool)
                stamps = stamps.tz_localize(last.tz, ambiguous=ambiguous, nonexistent="shift_forward")
        else:
            utc = calendar.trading_index(start, end, step, intervals=False)
            stamps = utc.tz_convert(last.tz) if last.tz is not None else utc.tz_convert(calendar.tz).tz_localize(None)
        after = stamps[stamps > last]
        if len(after) >= periods:
            return after[:periods]
        days *= 2
    raise InputError(f"{name}: {code} has too few sessions after {last} for {periods} periods")


def future_timestamps(
    history: Sequence[Any] | pd.DatetimeIndex | pd.Series,
    pred_len: int,
    freq: str | None = None,
    calendar: str | None = None,
    *,
    default_freq: str = "D",
) -> pd.DatetimeIndex:
    """The ``pred_len`` timestamps after a history's, on the history's calendar (see the module).

    ``freq`` (a pandas frequency) replaces the inferred calendar; ``calendar`` (an exchange code)
    gives exact sessions and holidays. A one-row history has no step: ``default_freq`` is used.
    This is how to make ``y_timestamp`` for ``KronosPredictor.predict``.
    """
    if isinstance(pred_len, bool) or not isinstance(pred_len, (int, np.integer)) or pred_len < 1:
        raise InputError(f"pred_len must be a positive integer, got {pred_len!r}")
    try:
        index = pd.DatetimeIndex(pd.to_datetime(history))
    except (TypeError, ValueError, OverflowError) as exc:
        raise InputError(f"timestamps: not parseable as timestamps ({exc})") from None
    if len(index) == 0:
        raise InputError("timestamps: the history is empty")
    if (np.diff(index.asi8) <= 0).any():
        raise InputError("timestamps: must be strictly increasing")
    last = index[-1]
    try:
        if calendar is not None:
            if freq is not None:
                step: Any = parse_freq(freq)
            elif len(index) >= 2:
                step = _step_of(index)
            else:
                step = DAY
            if isinstance(step, pd.DateOffset) and not isinstance(step, pd.offsets.Tick):
                step = DAY  # a calendar's sessions are its business days
            elif isinstance(step, pd.offsets.Tick):
                step = pd.Timedelta(step)
            return _exchange_future(calendar, last, pred_len, step, "calendar")
        if freq is not None or len(index) == 1:
            offset = parse_freq(freq) if freq is not None else parse_freq(default_freq, "default_freq")
            return pd.date_range(start=last + offset, periods=pred_len, freq=offset)
        return infer_calendar(index).future(last, pred_len)
    except (OverflowError, pd.errors.OutOfBoundsDatetime) as exc:
        raise InputError(f"timestamps: cannot be extended by {pred_len} periods ({exc})") from None


def synthetic_timestamps(rows: int, pred_len: int, freq: str) -> tuple[pd.DatetimeIndex, pd.DatetimeIndex]:
    """Timestamps for rows sent without any: consecutive periods of ``freq`` from ``SYNTHETIC_START``
    (history, future)."""
    offset = parse_freq(freq)
    try:
        stamps = pd.date_range(start=SYNTHETIC_START, periods=rows + pred_len, freq=offset)
    except (OverflowError, ValueError, pd.errors.OutOfBoundsDatetime) as exc:
        raise InputError(f"freq: {rows + pred_len} periods of {freq} do not fit in pandas' dates ({exc})") from None
    return stamps[:rows], stamps[rows:]
