"""Is the forecast any good? Rolling-origin windows, forecast metrics, naive baselines and calibrated bands.

One implementation, shared by ``POST /v1/backtest``, ``/v1/predict``'s calibrated bands and
``benchmarks/forecast_quality.py``. Pure numpy; everything is scored on the close.

**Windows** (the contract the backtest route promises): with ``rows`` candles, window j (j = 0 …
windows - 1, newest first) has origin ``rows - pred_len - j * step`` (the row of its first forecast
candle), forecasts from rows ``[max(0, origin - lookback), origin)`` and is scored on rows
``[origin, origin + pred_len)``.

**Metrics** pool every window and horizon: MAE, RMSE, MAPE (in %), direction accuracy (the sign of
the last step's move from the last input close, forecast against truth, over the windows where both
moved), CRPS from the sample paths (the empirical distribution's: mean |X - y| - mean |X - X'| / 2),
the observed coverage of each symmetric quantile pair, P(close > last close) with its Brier score and
reliability bins; and each of them per horizon step.

**Baselines**: ``last_value`` (persistence) and ``drift`` (the line through the context's first and
last close), each with a historical-volatility band: a log-normal random walk whose one-step
volatility is the standard deviation of the context's log returns, centred (median) on the baseline's
point forecast and widening with the square root of the step. Its CRPS comes from 100 evenly spaced
quantiles of that band.

**Calibration** is split-conformal per horizon step and quantile pair (conformalised quantile
regression): on earlier windows, the score of a step is how far the truth fell outside the raw band
(negative inside it), in units of the window's last close; the band is widened (or narrowed) by the
``ceil((n + 1) · nominal)``-th smallest of the n scores. A window is calibrated only from windows
scored entirely before its origin, so calibration never looks ahead; with too few of them (fewer
than ``nominal / (1 - nominal)``) it has no calibrated band.
"""

from __future__ import annotations

from .baselines import (
    BASELINE_QUANTILE_COUNT,
    baseline_forecasts,
    drift_forecast,
    last_value_forecast,
    log_volatility,
    skill,
    volatility_quantile,
)
from .calibration import (
    calibrate_windows,
    conformal_margin,
    conformity_scores,
    widen,
    windows_needed,
)
from .metrics import (
    MIN_CONTEXT_ROWS,
    RELIABILITY_BINS,
    Predictive,
    Window,
    backtest_windows,
    crps_from_samples,
    mean_or_none,
    reliability_bins,
    rows_needed,
    score,
    symmetric_pairs,
    up_probability,
)
from .report import (
    backtest_report,
    calibrate_forecast,
)

__all__ = [
    "BASELINE_QUANTILE_COUNT",
    "MIN_CONTEXT_ROWS",
    "Predictive",
    "RELIABILITY_BINS",
    "Window",
    "backtest_report",
    "backtest_windows",
    "baseline_forecasts",
    "calibrate_forecast",
    "calibrate_windows",
    "conformal_margin",
    "conformity_scores",
    "crps_from_samples",
    "drift_forecast",
    "last_value_forecast",
    "log_volatility",
    "mean_or_none",
    "reliability_bins",
    "rows_needed",
    "score",
    "skill",
    "symmetric_pairs",
    "up_probability",
    "volatility_quantile",
    "widen",
    "windows_needed",
]
