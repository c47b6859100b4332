"""A request's effective sampling settings, by the one rule every tool shares
(``model/decoding/defaults.py``: what it is and why).

A value the request gives is kept; the others are ``BAND`` (T 1.1, top_p 0.95) with 2 or more sample
paths, else ``PLAIN`` (T 1.0, top_p 0.9). Predict, batch items, backtest windows and calibrated
predict all take their settings from here, and every answer echoes them (``sampling``). The original
service's shape (``overrides``) keeps that service's defaults (``PLAIN``).
"""

from __future__ import annotations

from model.decoding.defaults import BAND, Sampling, effective_sampling

from .schemas import Overrides, SingleRequest

QUANTILE_TEMPERATURE = BAND["temperature"]
QUANTILE_TOP_P = BAND["top_p"]


def sampling(request: SingleRequest) -> Sampling:
    """The settings a data-shape request (or a backtest and its windows) samples with."""
    given = request.model_fields_set
    return effective_sampling(
        sample_count=request.sample_count,
        temperature=request.T if "T" in given else None,
        top_k=request.top_k if "top_k" in given else None,
        top_p=request.top_p if "top_p" in given else None,
        seed=request.seed,
    )


def legacy_sampling(overrides: Overrides) -> Sampling:
    """The original service's overrides: its defaults, whatever the number of paths."""
    return effective_sampling(
        sample_count=overrides.sample_count,
        temperature=overrides.temperature,
        top_k=overrides.top_k,
        top_p=overrides.top_p,
        seed=overrides.seed,
        plain=True,
    )
