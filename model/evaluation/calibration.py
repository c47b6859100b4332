"""Split-conformal calibration of the bands, per horizon step and quantile pair, from earlier windows only
(see the package docstring)."""

from __future__ import annotations

import math

import numpy as np

from .metrics import Predictive

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
