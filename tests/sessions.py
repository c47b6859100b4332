"""A 5-minute series with trading sessions, built from real candles (backtesting's EURUSD hourly):
each hour from 09:00 to 15:00 on weekdays becomes twelve 5-minute candles (09:00-15:55), whose
path runs from the hour's open to its close inside its high-low range; one weekday is left out
as a holiday."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

SESSION_OPEN, SESSION_LAST_BAR = "09:00", "15:55"


def _eurusd() -> pd.DataFrame:
    import backtesting.test

    frame = pd.read_csv(Path(backtesting.test.__file__).parent / "EURUSD.csv", index_col=0, parse_dates=True)
    frame.columns = [c.lower() for c in frame.columns]
    return frame


def five_minute_sessions(days: int = 12) -> pd.DataFrame:
    hourly = _eurusd()
    hourly = hourly[(hourly.index.day_of_week < 5) & (hourly.index.hour >= 9) & (hourly.index.hour <= 15)]
    dates = sorted(set(hourly.index.normalize()))[-days:]
    holiday = dates[len(dates) // 2]
    rng = np.random.default_rng(0)
    rows, stamps = [], []
    for stamp, hour in hourly[hourly.index.normalize().isin(dates)].iterrows():
        if stamp.normalize() == holiday:
            continue
        path = np.linspace(hour.open, hour.close, 13)
        path[1:-1] += rng.normal(scale=(hour.high - hour.low) / 6, size=11)
        path = np.clip(path, hour.low, hour.high)
        for j in range(12):
            o, c = path[j], path[j + 1]
            rows.append([o, max(o, c), min(o, c), c, hour.volume / 12])
            stamps.append(stamp + pd.Timedelta(minutes=5 * j))
    return pd.DataFrame(rows, columns=["open", "high", "low", "close", "volume"], index=pd.DatetimeIndex(stamps))
