"""The whole backtest report (model, baselines, skill, calibrated bands) and a forecast's calibrated bands:
what ``POST /v1/backtest``, ``/v1/predict`` and ``benchmarks/forecast_quality.py`` call."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .baselines import baseline_forecasts, skill
from .calibration import calibrate_windows, conformal_margin, conformity_scores, widen
from .metrics import Predictive, mean_or_none, score, symmetric_pairs

# --- the whole report ---------------------------------------------------------------------------


def backtest_report(
    paths: np.ndarray,
    actual: np.ndarray,
    contexts: Sequence[np.ndarray],
    origins: Sequence[int],
    quantiles: Sequence[float],
    calibrate: bool = False,
    point: np.ndarray | None = None,
) -> dict:
    """Metrics of the model and the baselines over W windows.

    ``paths`` (W, S, H): the model's sample paths of the close; ``actual`` (W, H): the true closes;
    ``contexts``: each window's input closes (its last is the "last close"); ``origins``: each
    window's origin row (for calibration's look-ahead rule); ``point`` (W, H): the point forecast
    (default: the mean of the paths).
    """
    paths = np.asarray(paths, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    last = np.array([float(c[-1]) for c in contexts])
    pred_len = actual.shape[1]
    pairs = symmetric_pairs(quantiles)
    levels = sorted({q for pair in pairs for q in pair})
    model = Predictive.from_paths(paths, levels, point)
    calibrated = calibrate_windows(model, actual, last, np.asarray(origins), pred_len, pairs) if calibrate else None
    metrics = score(model, actual, last, pairs, calibrated)
    baselines = {}
    for name, forecast in baseline_forecasts(contexts, pred_len, levels).items():
        baseline = score(forecast, actual, last, pairs)
        baseline["skill"] = skill(metrics, baseline)
        baselines[name] = baseline
    window_mae = np.abs(model.point - actual).mean(axis=1)
    return {"metrics": metrics, "baselines": baselines, "window_mae": [float(v) for v in window_mae]}


def calibrate_forecast(
    window_paths: np.ndarray,
    window_actual: np.ndarray,
    window_last: np.ndarray,
    paths: np.ndarray,
    last: float,
    pairs: list[tuple[float, float]],
) -> list[dict]:
    """A new forecast's bands calibrated on past windows (all scored before its origin).

    ``window_paths`` (K, S, H), ``window_actual`` (K, H), ``window_last`` (K,): the past windows;
    ``paths`` (S, H) and ``last``: the forecast's. Per pair: the raw band's observed coverage on the
    windows and the calibrated edges (H,), or None edges when K is too few for that pair.
    """
    levels = sorted({q for pair in pairs for q in pair})
    past = Predictive.from_paths(np.asarray(window_paths, dtype=np.float64), levels)
    edges = dict(zip(levels, np.quantile(np.asarray(paths, dtype=np.float64), levels, axis=0)))
    out = []
    for lower, upper in pairs:
        low, high = past.band_edges[lower], past.band_edges[upper]
        scores = conformity_scores(low, high, window_actual, window_last)
        margin = conformal_margin(scores, upper - lower)
        band = None if margin is None else widen(edges[lower], edges[upper], margin, last)
        inside = (low <= window_actual) & (window_actual <= high)
        out.append(
            {
                "lower": lower,
                "upper": upper,
                "nominal": round(upper - lower, 10),
                "observed": mean_or_none(inside),
                "band": band,
            }
        )
    return out
