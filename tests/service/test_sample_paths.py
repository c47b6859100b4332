"""Sample paths over HTTP (``return_paths``): every path the forecast is the mean of, as the mean is sent
(repaired, rounded, the request's columns), bounded by KRONOS_MAX_PATH_VALUES; absent unless asked for."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import assert_error

from services.kronos_fastapi.errors import InvalidRequest
from services.kronos_fastapi.forecasting import parse_batch, parse_single
from services.kronos_fastapi.settings import load_settings

COLUMNS = ["open", "high", "low", "close", "volume", "amount"]


def _goog(rows: int = 120) -> pd.DataFrame:
    import backtesting.test

    frame = backtesting.test.GOOG.copy().iloc[-rows:]
    frame.columns = [c.lower() for c in frame.columns]
    return frame


def _body(columns: int, **extra) -> dict:
    frame = _goog()
    return {
        "data": frame[COLUMNS[:columns]].to_numpy().tolist(),
        "timestamps": [t.isoformat() for t in frame.index],
        **extra,
    }


def _valid(candle: dict) -> bool:
    body = (candle["open"], candle["close"])
    return candle["low"] <= min(body) <= max(body) <= candle["high"]


def _check_paths(result: dict, sample_count: int, pred_len: int, columns: int) -> np.ndarray:
    """The paths' shape, columns and candles; returns them as (sample_count, pred_len, columns)."""
    paths = result["paths"]
    assert len(paths) == sample_count
    for path in paths:
        assert len(path) == pred_len
        for candle in path:
            assert list(candle) == COLUMNS  # the candle fields of a forecast row, no step or timestamp
            assert all(isinstance(candle[c], float) for c in COLUMNS[:columns])
            assert all(candle[c] is None for c in COLUMNS[columns:])  # not given, so not invented
            assert all(float(f"{candle[c]:.7g}") == candle[c] for c in COLUMNS[:columns])  # float32's digits
            assert _valid(candle), candle  # repaired as the mean's paths are
    return np.array([[[candle[c] for c in COLUMNS[:columns]] for candle in path] for path in paths])


def _mean(result: dict, columns: int) -> np.ndarray:
    return np.array([[row[c] for c in COLUMNS[:columns]] for row in result["forecast"]])


@pytest.mark.parametrize("columns", [4, 5])
def test_the_paths_are_what_the_forecast_is_the_mean_of(client, columns):
    body = _body(columns, pred_len=6, sample_count=5, seed=11, quantiles=[0.1, 0.9])
    response = client.post("/v1/predict/single", json={**body, "return_paths": True})
    assert response.status_code == 200, response.text
    result = response.json()
    paths = _check_paths(result, 5, 6, columns)
    # The mean of the paths is the forecast, to the 7 digits either is sent with.
    np.testing.assert_allclose(paths.mean(axis=0), _mean(result, columns), rtol=1e-6)
    # ... and the close band and p_up are theirs too.
    for band in result["close_quantiles"]:
        np.testing.assert_allclose(np.quantile(paths[:, :, 3], band["level"], axis=0), band["close"], rtol=1e-6)
    last_close = body["data"][-1][3]
    assert result["p_up"] == pytest.approx((paths[:, :, 3] > last_close).mean(axis=0).tolist())

    # Without return_paths: the same answer, and no paths key at all.
    plain = client.post("/v1/predict/single", json=body)
    assert plain.status_code == 200, plain.text
    plain_result = plain.json()
    assert "paths" not in plain_result
    for answer in (plain_result, result):
        answer.pop("elapsed_ms")
    assert {k: v for k, v in result.items() if k != "paths"} == plain_result


def test_batch_items_with_and_without_paths(client):
    batch = {
        "batch": [
            _body(4, pred_len=4, sample_count=3, seed=1, return_paths=True),
            _body(5, pred_len=3, sample_count=2, seed=2),
            {"data": [[100, 105, 98, 102]], "pred_len": 2, "return_paths": True, "seed": 3},
        ]
    }
    response = client.post("/v1/predict/batch", json=batch)
    assert response.status_code == 200, response.text
    first, second, third = response.json()["results"]
    paths = _check_paths(first, 3, 4, 4)
    np.testing.assert_allclose(paths.mean(axis=0), _mean(first, 4), rtol=1e-6)
    assert "paths" not in second
    one = _check_paths(third, 1, 2, 4)  # a single path is the forecast itself
    np.testing.assert_allclose(one[0], _mean(third, 4), rtol=1e-7)


def test_the_legacy_shape_asks_in_overrides(client):
    frame = _goog(30)
    future = pd.bdate_range(frame.index[-1] + pd.Timedelta(days=1), periods=3)
    body = {
        "series_id": "GOOG",
        "candles": [dict(zip(COLUMNS[:5], row)) for row in frame[COLUMNS[:5]].to_numpy().tolist()],
        "timestamps": [t.isoformat() for t in frame.index],
        "prediction_timestamps": [t.isoformat() for t in future],
        "overrides": {"sample_count": 4, "seed": 5, "return_paths": True},
    }
    response = client.post("/v1/predict/single", json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    paths = _check_paths(result, 4, 3, 5)
    prediction = np.array([[row[c] for c in COLUMNS[:5]] for row in result["prediction"]])
    np.testing.assert_allclose(paths.mean(axis=0), prediction, rtol=1e-6)
    del body["overrides"]["return_paths"]
    assert "paths" not in client.post("/v1/predict/single", json=body).json()


def test_more_path_values_than_the_limit_is_a_422_naming_it(client):
    # 32 paths × 512 candles × 6 columns = 98304 numbers an item; the third goes over 200000. Refused when the
    # body is read, so nothing is forecast.
    item = {"data": [[100, 105, 98, 102, 10, 1000]] * 2, "pred_len": 512, "sample_count": 32, "return_paths": True}
    response = client.post("/v1/predict/batch", json={"batch": [item, item, item]})
    error = assert_error(response, 422, "validation_error")
    assert error["message"].startswith("batch[2].return_paths: 32 paths × 512 candles × 6 columns = 98304 numbers")
    assert "294912" in error["message"] and "limit of 200000 (KRONOS_MAX_PATH_VALUES)" in error["message"]
    assert error["details"] == [
        {
            "field": "batch[2].return_paths",
            "message": "294912 numbers of sample paths, limit 200000",
            "values": 294912,
            "limit": 200000,
        }
    ]


def test_the_limit_is_a_setting_and_counts_the_columns_sent():
    settings = load_settings(env_file=None, max_path_values=100)
    body = {"data": [[1, 2, 0.5, 1.5]] * 3, "pred_len": 5, "sample_count": 5, "return_paths": True}
    assert parse_single(json.dumps(body).encode(), settings).items[0].return_paths  # 5 × 5 × 4 = 100: at the limit
    body["data"] = [[1, 2, 0.5, 1.5, 7]] * 3  # 5 × 5 × 5 = 125
    with pytest.raises(InvalidRequest, match=r"^return_paths: 5 paths × 5 candles × 5 columns = 125 numbers, more"):
        parse_single(json.dumps(body).encode(), settings)
    body["return_paths"] = False  # only the paths asked for count
    parse_batch(json.dumps({"batch": [body] * 3}).encode(), settings)
    legacy = {
        "candles": [{"open": 1, "high": 2, "low": 0.5, "close": 1.5}] * 2,
        "timestamps": ["2024-01-01", "2024-01-02"],
        "prediction_timestamps": [f"2024-01-{day:02d}" for day in range(3, 10)],
        "overrides": {"sample_count": 4, "return_paths": True},  # 4 × 7 × 4 = 112
    }
    with pytest.raises(InvalidRequest, match=r"^overrides\.return_paths: .*KRONOS_MAX_PATH_VALUES") as raised:
        parse_single(json.dumps(legacy).encode(), settings)
    assert raised.value.details["limit"] == 100


def test_the_field_is_documented_and_offered_to_the_page_but_not_the_backtest(client):
    schema = client.get("/openapi.json").json()["components"]["schemas"]
    field = schema["SingleRequest"]["properties"]["return_paths"]
    assert field["default"] is False and "KRONOS_MAX_PATH_VALUES" in field["description"]
    assert "return_paths" not in schema["BacktestRequest"]["properties"]
    assert client.get("/ui/config.json").json()["sample_flag"] == "return_paths"
    backtest = {"data": [[100 + i, 101 + i, 99 + i, 100.5 + i] for i in range(40)], "pred_len": 3, "windows": 2}
    error = assert_error(client.post("/v1/backtest", json={**backtest, "return_paths": True}), 422)
    assert error["message"].startswith("return_paths: not a backtest field")
