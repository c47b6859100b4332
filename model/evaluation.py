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

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

MIN_CONTEXT_ROWS = 2  # the model's minimum input, and enough for a drift line
BASELINE_QUANTILE_COUNT = 100
RELIABILITY_BINS = 10
_NORMAL = NormalDist()


# --- windows ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """One backtest window: context rows ``[start, origin)``, scored rows ``[origin, origin + pred_len)``."""

    index: int  # j: 0 is the newest window
    origin: int
    start: int


def rows_needed(pred_len: int, windows: int, step: int) -> int:
    """The fewest candles for ``windows`` windows: the oldest still has MIN_CONTEXT_ROWS rows of context."""
    return MIN_CONTEXT_ROWS + pred_len + (windows - 1) * step


def backtest_windows(rows: int, pred_len: int, windows: int, step: int, lookback: int) -> list[Window]:
    """The windows of the contract, newest first. Raises ValueError when ``rows`` is too few."""
    needed = rows_needed(pred_len, windows, step)
    if rows < needed:
        raise ValueError(f"{windows} windows of pred_len {pred_len}, {step} rows apart, need at least {needed} rows")
    out = []
    for j in range(windows):
        origin = rows - pred_len - j * step
        out.append(Window(j, origin, max(0, origin - lookback)))
    return out


# --- metrics ------------------------------------------------------------------------------------


def _mean(values: np.ndarray) -> float | None:
    return float(np.mean(values)) if values.size else None


def symmetric_pairs(quantiles: Sequence[float]) -> list[tuple[float, float]]:
    """(lower, upper) pairs of levels in ``quantiles`` with lower + upper = 1 and lower < 0.5, widest first."""
    levels = sorted(set(float(q) for q in quantiles))
    pairs = []
    for q in levels:
        if q >= 0.5:
            break
        match = [u for u in levels if abs(u - (1.0 - q)) < 1e-9]
        if match:
            pairs.append((q, match[0]))
    return pairs


def crps_from_samples(samples: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """CRPS of the empirical distribution of ``samples`` (..., S, H) at ``actual`` (..., H): shape (..., H).

    mean_i |x_i - y| - (1 / 2S²) Σ_ij |x_i - x_j|; with one sample it is the absolute error.
    """
    s = samples.shape[-2]
    first = np.abs(samples - actual[..., None, :]).mean(axis=-2)
    ordered = np.sort(samples, axis=-2)
    # Σ_ij |x_i - x_j| = 2 Σ_k (2k - S + 1) x_(k) over the sorted samples (k from 0).
    weights = (2 * np.arange(s) - s + 1).reshape((s, 1))
    spread = 2 * (weights * ordered).sum(axis=-2) / (s * s)
    return first - spread / 2


def up_probability(samples: np.ndarray, last: np.ndarray) -> np.ndarray:
    """P(close_h > last close) per window and step: the share of samples (W, S, H) above ``last`` (W,)."""
    return (samples > last[:, None, None]).mean(axis=1)


def reliability_bins(probability: np.ndarray, outcome: np.ndarray, bins: int = RELIABILITY_BINS) -> list[dict]:
    """Equal-width bins of the forecast probability: how often the event happened in each."""
    p, o = probability.ravel(), outcome.ravel().astype(np.float64)
    which = np.minimum((p * bins).astype(int), bins - 1)
    out = []
    for b in range(bins):
        inside = which == b
        out.append(
            {
                "lower": b / bins,
                "upper": (b + 1) / bins,
                "count": int(inside.sum()),
                "forecast": _mean(p[inside]),
                "observed": _mean(o[inside]),
            }
        )
    return out


@dataclass
class Predictive:
    """A forecast of W windows × H steps of closes: a point, band edges by level, and samples (W, S, H)."""

    point: np.ndarray
    samples: np.ndarray
    band_edges: dict[float, np.ndarray]  # level → (W, H)

    @classmethod
    def from_paths(cls, paths: np.ndarray, levels: Sequence[float], point: np.ndarray | None = None) -> Predictive:
        """The model's forecast: ``point`` (default: the mean path) and quantiles over the sample paths
        (as /v1/predict computes them)."""
        edges = np.quantile(paths, np.asarray(levels, dtype=np.float64), axis=1) if len(levels) else []
        point = paths.mean(axis=1) if point is None else np.asarray(point, dtype=np.float64)
        return cls(point, paths, {float(q): e for q, e in zip(levels, edges)})


def _point_metrics(point: np.ndarray, actual: np.ndarray, last: np.ndarray) -> dict[str, float | None]:
    """MAE, RMSE, MAPE (%) over everything given, and direction accuracy on the last column."""
    error = point - actual
    nonzero = actual != 0
    forecast_move, true_move = np.sign(point[:, -1] - last), np.sign(actual[:, -1] - last)
    both = (forecast_move != 0) & (true_move != 0)
    return {
        "mae": float(np.abs(error).mean()),
        "rmse": float(np.sqrt((error**2).mean())),
        "mape": _mean(100 * np.abs(error[nonzero]) / np.abs(actual[nonzero])),
        "direction_accuracy": _mean((forecast_move == true_move)[both]),
    }


def _coverage(
    forecast: Predictive,
    actual: np.ndarray,
    pairs: list[tuple[float, float]],
    calibrated: dict[tuple[float, float], tuple[np.ndarray, np.ndarray]] | None,
) -> list[dict]:
    out = []
    for lower, upper in pairs:
        inside = (forecast.band_edges[lower] <= actual) & (actual <= forecast.band_edges[upper])
        entry: dict = {"lower": lower, "upper": upper, "nominal": round(upper - lower, 10), "observed": _mean(inside)}
        if calibrated is not None:
            low, high = calibrated[(lower, upper)]
            known = ~np.isnan(low)
            hit = (low <= actual) & (actual <= high)
            entry["observed_calibrated"] = _mean(hit[known])
            entry["calibrated_windows"] = int(known[:, 0].sum())  # a window is calibrated at every step or none
        out.append(entry)
    return out


def score(
    forecast: Predictive,
    actual: np.ndarray,
    last: np.ndarray,
    pairs: list[tuple[float, float]],
    calibrated: dict[tuple[float, float], tuple[np.ndarray, np.ndarray]] | None = None,
) -> dict:
    """Every metric over all windows and steps, and ``per_horizon`` the same per step (1 … H)."""
    crps = crps_from_samples(forecast.samples, actual)
    p_up = up_probability(forecast.samples, last)
    went_up = actual > last[:, None]
    metrics = {
        **_point_metrics(forecast.point, actual, last),
        "crps": float(crps.mean()),
        "coverage": _coverage(forecast, actual, pairs, calibrated),
        "brier": float(((p_up - went_up) ** 2).mean()),
        "reliability": reliability_bins(p_up, went_up),
    }
    per_horizon = []
    for h in range(actual.shape[1]):
        step = Predictive(forecast.point[:, h : h + 1], forecast.samples[:, :, h : h + 1], {})
        step.band_edges = {q: e[:, h : h + 1] for q, e in forecast.band_edges.items()}
        step_calibrated = None
        if calibrated is not None:
            step_calibrated = {k: (lo[:, h : h + 1], hi[:, h : h + 1]) for k, (lo, hi) in calibrated.items()}
        per_horizon.append(
            {
                "step": h + 1,
                **_point_metrics(step.point, actual[:, h : h + 1], last),
                "crps": float(crps[:, h].mean()),
                "coverage": _coverage(step, actual[:, h : h + 1], pairs, step_calibrated),
                "brier": float(((p_up[:, h] - went_up[:, h]) ** 2).mean()),
            }
        )
    metrics["per_horizon"] = per_horizon
    return metrics


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


# --- calibration --------------------------------------------------------------------------------


def conformity_scores(lower: np.ndarray, upper: np.ndarray, actual: np.ndarray, last: np.ndarray) -> np.ndarray:
    """How far the truth fell outside [lower, upper] (negative inside), in units of the last close: (W, H)."""
    scale = np.abs(last)[:, None]
    scale = np.where(scale > 0, scale, 1.0)
    return np.maximum(lower - actual, actual - upper) / scale


def conformal_margin(scores: np.ndarray, nominal: float) -> np.ndarray | None:
    """Per step, the ``ceil((n + 1) · nominal)``-th smallest of n scores (n, H); None when n is too few."""
    n = len(scores)
    rank = math.ceil((n + 1) * nominal - 1e-9)
    if n == 0 or rank > n:
        return None
    return np.sort(scores, axis=0)[rank - 1]


def windows_needed(nominal: float) -> int:
    """The fewest earlier windows that can calibrate a band of this nominal coverage."""
    n = 1
    while math.ceil((n + 1) * nominal - 1e-9) > n:
        n += 1
    return n


def widen(lower: np.ndarray, upper: np.ndarray, margin: np.ndarray, last: float) -> tuple[np.ndarray, np.ndarray]:
    """The calibrated band: both edges moved out by margin · |last| (in by a negative margin, never crossing)."""
    scale = abs(last) if last else 1.0
    low, high = lower - margin * scale, upper + margin * scale
    middle = (low + high) / 2
    return np.minimum(low, middle), np.maximum(high, middle)


def calibrate_windows(
    forecast: Predictive,
    actual: np.ndarray,
    last: np.ndarray,
    origins: np.ndarray,
    pred_len: int,
    pairs: list[tuple[float, float]],
) -> dict[tuple[float, float], tuple[np.ndarray, np.ndarray]]:
    """Each window's calibrated band per pair, from the windows scored entirely before its origin only
    (NaN where there are too few of them)."""
    out = {}
    ends = origins + pred_len
    for lower, upper in pairs:
        scores = conformity_scores(forecast.band_edges[lower], forecast.band_edges[upper], actual, last)
        low = np.full(actual.shape, np.nan)
        high = np.full(actual.shape, np.nan)
        for j, origin in enumerate(origins):
            margin = conformal_margin(scores[ends <= origin], upper - lower)
            if margin is not None:
                low[j], high[j] = widen(forecast.band_edges[lower][j], forecast.band_edges[upper][j], margin, last[j])
        out[(lower, upper)] = (low, high)
    return out


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
                "observed": _mean(inside),
                "band": band,
            }
        )
    return out
