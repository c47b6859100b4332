"""Naive baselines every forecast is compared with: last value (persistence) and drift, each with a
historical-volatility band (a log-normal random walk, see the package docstring)."""

from __future__ import annotations

from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

from .metrics import Predictive

BASELINE_QUANTILE_COUNT = 100
_NORMAL = NormalDist()


# --- baselines ----------------------------------------------------------------------------------


def last_value_forecast(context: np.ndarray, pred_len: int) -> np.ndarray:
    """Persistence: the last close, for every step."""
    return np.full(pred_len, float(context[-1]))


def drift_forecast(context: np.ndarray, pred_len: int) -> np.ndarray:
    """The line through the context's first and last close, extended: last + h · (last - first) / (n - 1)."""
    slope = (float(context[-1]) - float(context[0])) / max(len(context) - 1, 1)
    return float(context[-1]) + slope * np.arange(1, pred_len + 1)


def log_volatility(context: np.ndarray) -> float:
    """Standard deviation (ddof 1) of the context's one-step log returns; 0 with fewer than two returns
    or a non-positive close (no log return is defined then)."""
    closes = np.asarray(context, dtype=np.float64)
    if len(closes) < 3 or (closes <= 0).any():
        return 0.0
    return float(np.diff(np.log(closes)).std(ddof=1))


def volatility_quantile(center: np.ndarray, sigma: float, level: float) -> np.ndarray:
    """The ``level`` quantile of the historical-volatility band around ``center`` (H,): center · exp(z σ √h)."""
    z = _NORMAL.inv_cdf(min(max(level, 1e-12), 1 - 1e-12))
    return center * np.exp(z * sigma * np.sqrt(np.arange(1, len(center) + 1)))


def baseline_forecasts(contexts: Sequence[np.ndarray], pred_len: int, levels: Sequence[float]) -> dict[str, Predictive]:
    """``last_value`` and ``drift`` for every window's context closes, each with its volatility band."""
    grid = (np.arange(BASELINE_QUANTILE_COUNT) + 0.5) / BASELINE_QUANTILE_COUNT
    out = {}
    for name, point_of in (("last_value", last_value_forecast), ("drift", drift_forecast)):
        points, samples, edges = [], [], {float(q): [] for q in levels}
        for context in contexts:
            center, sigma = point_of(context, pred_len), log_volatility(context)
            points.append(center)
            samples.append(np.stack([volatility_quantile(center, sigma, g) for g in grid]))
            for q in edges:
                edges[q].append(volatility_quantile(center, sigma, q))
        out[name] = Predictive(np.stack(points), np.stack(samples), {q: np.stack(e) for q, e in edges.items()})
    return out


def skill(model: dict, baseline: dict) -> dict[str, float | None]:
    """1 - model / baseline for MAE and CRPS: above 0 the model is better, 0 as good, below 0 worse."""
    return {key: (1.0 - model[key] / baseline[key]) if baseline[key] else None for key in ("mae", "crps")}
