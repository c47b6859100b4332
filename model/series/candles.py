"""Valid candles: low <= min(open, close) <= max(open, close) <= high.

The model forecasts the four prices as separate tokens' decodings, so a sampled candle can have
its open above its high. The repair widens the wick to cover the body: ``high = max(high, open,
close)``, ``low = min(low, open, close)``. Open and close (the body, what a forecast is mostly
read for) are never moved, and a valid candle is left exactly as it was.

Repaired paths make every summary of them valid too: the mean of valid candles is valid (the rule
is linear), and so is each level of the per-column quantiles (each path's low is at most its open,
so the q-quantile of lows is at most the q-quantile of opens, and so on).
"""

from __future__ import annotations

import numpy as np

OPEN, HIGH, LOW, CLOSE = range(4)
RULE = "low <= min(open, close) <= max(open, close) <= high"


def repair_candles(values: np.ndarray) -> tuple[np.ndarray, int]:
    """(repaired copy, number of candles changed) of ``(..., >=4)`` candles (open, high, low, close, ...)."""
    values = np.array(values, dtype=np.float64, copy=True)
    body_top = np.maximum(values[..., OPEN], values[..., CLOSE])
    body_bottom = np.minimum(values[..., OPEN], values[..., CLOSE])
    high = np.maximum(values[..., HIGH], body_top)
    low = np.minimum(values[..., LOW], body_bottom)
    changed = int(np.count_nonzero((high != values[..., HIGH]) | (low != values[..., LOW])))
    values[..., HIGH], values[..., LOW] = high, low
    return values, changed


def invalid_rows(candles: np.ndarray) -> np.ndarray:
    """Row numbers of ``(n, >=4)`` candles that break the rule."""
    candles = np.asarray(candles, dtype=np.float64)
    o, h, lo, c = candles[:, OPEN], candles[:, HIGH], candles[:, LOW], candles[:, CLOSE]
    return np.flatnonzero((lo > np.minimum(o, c)) | (h < np.maximum(o, c)))


def describe_invalid(candle: np.ndarray) -> str:
    """What is wrong with one candle, in words (for error messages)."""
    o, h, lo, c = (float(v) for v in candle[:4])
    problems = []
    if h < max(o, c):
        problems.append(f"high {h:g} is below max(open, close) {max(o, c):g}")
    if lo > min(o, c):
        problems.append(f"low {lo:g} is above min(open, close) {min(o, c):g}")
    return " and ".join(problems)
