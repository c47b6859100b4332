"""Market time and candles: exchange calendars and forecast timestamps, candle validity and repair.
Plain numpy/pandas: no torch, no network."""
