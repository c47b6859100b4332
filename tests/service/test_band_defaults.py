"""Requests for quantile bands sample with the measured band defaults unless they set T / top_p."""

from __future__ import annotations

import json

from services.kronos_fastapi.band_defaults import QUANTILE_TEMPERATURE, QUANTILE_TOP_P
from services.kronos_fastapi.forecasting import parse_batch, parse_single
from services.kronos_fastapi.settings import load_settings

SETTINGS = load_settings(env_file=None)
ROWS = [[100, 105, 98, 102], [102, 108, 101, 107], [107, 109, 104, 105]]


def _series(body: dict):
    return parse_single(json.dumps(body).encode(), SETTINGS).items[0].series


def test_quantile_requests_get_the_band_defaults():
    s = _series({"data": ROWS, "pred_len": 2, "sample_count": 8, "quantiles": [0.1, 0.5, 0.9]})
    assert (s.temperature, s.top_p) == (QUANTILE_TEMPERATURE, QUANTILE_TOP_P)
    batch = parse_batch(
        json.dumps({"batch": [{"data": ROWS, "quantiles": [0.1, 0.9], "sample_count": 2}]}).encode(), SETTINGS
    )
    assert (batch.items[0].series.temperature, batch.items[0].series.top_p) == (QUANTILE_TEMPERATURE, QUANTILE_TOP_P)


def test_point_forecasts_keep_the_plain_defaults():
    s = _series({"data": ROWS, "pred_len": 2})
    assert (s.temperature, s.top_p) == (1.0, 0.9)


def test_values_the_request_gives_are_kept():
    s = _series({"data": ROWS, "quantiles": [0.1, 0.9], "sample_count": 2, "T": 0.7, "top_p": 0.5})
    assert (s.temperature, s.top_p) == (0.7, 0.5)
    only_t = _series({"data": ROWS, "quantiles": [0.1, 0.9], "sample_count": 2, "T": 0.7})
    assert (only_t.temperature, only_t.top_p) == (0.7, QUANTILE_TOP_P)
    only_p = _series({"data": ROWS, "quantiles": [0.1, 0.9], "sample_count": 2, "top_p": 0.5})
    assert (only_p.temperature, only_p.top_p) == (QUANTILE_TEMPERATURE, 0.5)
