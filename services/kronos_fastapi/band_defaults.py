"""Sampling defaults for requests that ask for quantile bands.

A request with ``quantiles`` but without ``T`` / ``top_p`` gets these instead of the plain
defaults (T 1.0, top_p 0.9): nucleus sampling at 0.9 cuts the tails of every step's token
distribution, so the sample paths spread too little and a 10-90% band covers far fewer than
80% of outcomes. The values are measured on held-out instruments with
``python benchmarks/heldout.py --grid ...`` (table in model/bundled/kronos-demo/README.md).
A value the request gives is always kept.
"""

from __future__ import annotations

from .schemas import SingleRequest

QUANTILE_TEMPERATURE = 1.0
QUANTILE_TOP_P = 1.0


def sampling(request: SingleRequest) -> tuple[float, float]:
    """(temperature, top_p) for a request: the band defaults where it asks for quantiles and leaves them out."""
    given = request.model_fields_set
    if not request.quantiles:
        return request.T, request.top_p
    temperature = request.T if "T" in given else QUANTILE_TEMPERATURE
    top_p = request.top_p if "top_p" in given else QUANTILE_TOP_P
    return temperature, top_p
