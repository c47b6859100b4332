"""Rolling-origin windows and the forecast metrics (point, band, CRPS, direction, P(up) and its
reliability), pooled and per horizon step. Pure numpy, scored on the close (see the package docstring)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MIN_CONTEXT_ROWS = 2  # the model's minimum input, and enough for a drift line
RELIABILITY_BINS = 10


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


def mean_or_none(values: np.ndarray) -> float | None:
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
                "forecast": mean_or_none(p[inside]),
                "observed": mean_or_none(o[inside]),
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
        "mape": mean_or_none(100 * np.abs(error[nonzero]) / np.abs(actual[nonzero])),
        "direction_accuracy": mean_or_none((forecast_move == true_move)[both]),
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
        entry: dict = {
            "lower": lower,
            "upper": upper,
            "nominal": round(upper - lower, 10),
            "observed": mean_or_none(inside),
        }
        if calibrated is not None:
            low, high = calibrated[(lower, upper)]
            known = ~np.isnan(low)
            hit = (low <= actual) & (actual <= high)
            entry["observed_calibrated"] = mean_or_none(hit[known])
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
