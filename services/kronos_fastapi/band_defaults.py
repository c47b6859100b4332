"""Sampling defaults for requests that ask for quantile bands.

A request with ``quantiles`` but without ``T`` / ``top_p`` gets these instead of the plain
defaults (T 1.0, top_p 0.9): nucleus sampling at 0.9 cuts the tails of every step's token
distribution, so the sample paths spread too little and a 10-90% band covers fewer than 80% of
outcomes. Measured with the bundled kronos-demo on held-out index candles (SP500, NASDAQ;
``python benchmarks/forecast_quality.py --heldout --grid 1:0.9 1:1 1.1:0.95``, table in
model/bundled/kronos-demo/README.md): the 10-90% band covers 65% at T 1.0 / top_p 0.9 and 70% at
T 1.1 / top_p 0.95, at a slightly higher point error (1.19x against 1.11x the last-value MAE).
A value the request gives is always kept; another checkpoint may want other values.
"""

from __future__ import annotations

from .schemas import SingleRequest

QUANTILE_TEMPERATURE = 1.1
QUANTILE_TOP_P = 0.95


def sampling(request: SingleRequest) -> tuple[float, float]:
    """(temperature, top_p) for a request: the band defaults where it asks for quantiles and leaves them out."""
    given = request.model_fields_set
    if not request.quantiles:
        return request.T, request.top_p
    temperature = request.T if "T" in given else QUANTILE_TEMPERATURE
    top_p = request.top_p if "top_p" in given else QUANTILE_TOP_P
    return temperature, top_p
