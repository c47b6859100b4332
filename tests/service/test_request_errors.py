"""Every class of bad input, over real HTTP: the documented status, the one error shape, never a 500."""

from __future__ import annotations

import pytest
from conftest import GUIDE_SINGLE, assert_error

ROW = [100.0, 105.0, 98.0, 102.0]


@pytest.mark.parametrize(
    ("body", "status", "error_type", "mentions"),
    [
        (b'{"data": [[1, 2, 3, 4]', 400, "invalid_json", "malformed JSON"),
        (b"", 400, "invalid_json", "empty"),
        (b"\xff\xfe garbage", 400, "invalid_json", "UTF-8"),
        (b"[" * 100000 + b"]" * 100000, 400, "invalid_json", "nested"),
        (b"[1, 2, 3]", 422, "validation_error", "JSON object"),
        (b"null", 422, "validation_error", "JSON object"),
        (b'{"data": [[1, 2, 3, NaN]], "pred_len": 3}', 422, "validation_error", "data[0][3]"),
        (b'{"data": [[1, 2, 3, Infinity]], "pred_len": 3}', 422, "validation_error", "data[0][3]"),
        (b'{"data": [[1, 2, 3, -Infinity]], "pred_len": 3}', 422, "validation_error", "data[0][3]"),
        (b'{"data": [[1, 2, 3, "NaN"]], "pred_len": 3}', 422, "validation_error", "data[0][3]"),
        (b'{"data": [[1, 2, "Infinity", 4]], "pred_len": 3}', 422, "validation_error", "data[0][2]"),
        (b'{"data": [[1, 2, 3, 1e400]], "pred_len": 3}', 422, "validation_error", "data[0][3]"),
        (b'{"data": [[1, 2, 3, 1e300]], "pred_len": 3}', 422, "validation_error", "data[0][3]"),
    ],
)
def test_raw_bodies(client, body, status, error_type, mentions):
    response = client.post("/v1/predict/single", content=body, headers={"Content-Type": "application/json"})
    error = assert_error(response, status, error_type)
    assert mentions in error["message"]


@pytest.mark.parametrize(
    ("body", "mentions"),
    [
        ({"data": "not a list", "pred_len": 3}, "data"),
        ({"data": [[1, 2, 3, "4"]], "pred_len": 3}, "data[0][3]"),
        ({"data": [[1, 2, 3, True]], "pred_len": 3}, "data[0][3]"),
        ({"data": [ROW, [1, 2, 3]], "pred_len": 3}, "data[1]"),
        ({"data": [ROW, [1, 2, 3, 4, 5, 6, 7]], "pred_len": 3}, "data[1]"),
        ({"data": [ROW, ROW + [10.0]], "pred_len": 3}, "data[1]"),
        ({"data": [ROW, {"open": 1, "high": 2, "low": 0, "close": 1}], "pred_len": 3}, "data[1]"),
        ({"data": [{"open": 1, "high": 2, "low": 0}], "pred_len": 3}, "data[0].close"),
        ({"data": [{"open": 1, "high": 2, "low": 0, "close": 1, "amount": 5}], "pred_len": 3}, "data[0]"),
        ({"data": [], "pred_len": 3}, "data"),
        ({"pred_len": 3}, "data"),
        ({"data": [ROW] * 2049, "pred_len": 3}, "KRONOS_MAX_ROWS"),
        ({"data": [ROW], "pred_len": 0}, "pred_len"),
        ({"data": [ROW], "pred_len": -5}, "pred_len"),
        ({"data": [ROW], "pred_len": 513}, "KRONOS_MAX_PRED_LEN"),
        ({"data": [ROW], "pred_len": 2.5}, "pred_len"),
        ({"data": [ROW], "pred_len": "10"}, "pred_len"),
        ({"data": [ROW], "pred_len": 3, "sample_count": 33}, "KRONOS_MAX_SAMPLE_COUNT"),
        ({"data": [ROW], "pred_len": 3, "sample_count": 0}, "sample_count"),
        ({"data": [ROW], "pred_len": 3, "T": 0}, "T"),
        ({"data": [ROW], "pred_len": 3, "top_p": 1.5}, "top_p"),
        ({"data": [ROW], "pred_len": 3, "top_k": -1}, "top_k"),
        ({"data": [ROW], "pred_len": 3, "seed": -1}, "seed"),
        ({"data": [ROW], "pred_len": 3, "seed": 2**63}, "seed"),
        ({"data": [ROW], "pred_len": 3, "quantiles": [0.5, 1.5]}, "quantiles[1]"),
        ({"data": [ROW], "pred_len": 3, "quantiles": []}, "quantiles"),
        ({"data": [ROW], "pred_len": 3, "freq": "fortnightly"}, "freq"),
        ({"data": [ROW, ROW], "timestamps": ["2024-01-01"], "pred_len": 3}, "timestamps"),
        ({"data": [ROW, ROW], "timestamps": ["2024-01-02", "2024-01-01"], "pred_len": 3}, "timestamps[1]"),
        ({"data": [ROW, ROW], "timestamps": ["2024-01-01", "yesterday"], "pred_len": 3}, "timestamps[1]"),
        (
            {"data": [ROW, ROW], "timestamps": ["2024-01-01T00:00:00Z", "2024-01-02T00:00:00"], "pred_len": 3},
            "timestamps",
        ),
        ({"data": [ROW], "pred_len": 3, "freq": "-1h"}, "freq"),
        ({"data": [ROW], "pred_len": 3, "prd_len": 4}, "prd_len"),
        ({**GUIDE_SINGLE, "unknown_option": True}, "unknown_option"),
    ],
)
def test_invalid_single_requests(client, body, mentions):
    error = assert_error(client.post("/v1/predict/single", json=body), 422, "validation_error")
    assert mentions in error["message"] + str(error["details"])


@pytest.mark.parametrize(
    ("body", "mentions"),
    [
        ({"batch": []}, "batch"),
        ({"batch": "x"}, "batch"),
        ({}, "batch"),
        ({"batch": [GUIDE_SINGLE, {"data": [[1, 2, 3]], "pred_len": 3}]}, "batch[1].data[0]"),
        ({"batch": [GUIDE_SINGLE, {"data": [ROW], "pred_len": 600}]}, "batch[1].pred_len"),
        ({"batch": [GUIDE_SINGLE] * 65}, "KRONOS_MAX_BATCH_ITEMS"),
        ({"batch": [{**GUIDE_SINGLE, "extra": 1}]}, "batch[0].extra"),
    ],
)
def test_invalid_batch_requests(client, body, mentions):
    error = assert_error(client.post("/v1/predict/batch", json=body), 422, "validation_error")
    assert mentions in error["message"] + str(error["details"])


@pytest.mark.parametrize(
    "body",
    [
        {"data": [ROW], "timestamps": ["0001-01-01T00:00:00"], "pred_len": 3},
        {"data": [ROW], "timestamps": ["1677-09-22T00:00:00"], "pred_len": 3},
        {"data": [ROW, ROW], "timestamps": ["2262-04-10", "2262-04-11"], "pred_len": 3},
        {"data": [ROW], "pred_len": 3, "freq": "100000000D"},
        {"data": [ROW, ROW], "timestamps": ["9999-12-30", "9999-12-31"], "pred_len": 3},
        {"data": [ROW], "timestamps": ["9999-12-31T23:59:59"], "pred_len": 3, "freq": "1000000D"},
        {
            "candles": [{"open": 1, "high": 2, "low": 0.5, "close": 1.5}],
            "timestamps": ["0002-01-01T00:00:00"],
            "prediction_timestamps": ["9999-01-01T00:00:00"],
        },
    ],
)
def test_extreme_calendars_are_answered_or_refused_never_500(client, body):
    response = client.post("/v1/predict/single", json=body)
    assert response.status_code in (200, 422), response.text
    if response.status_code == 422:
        assert_error(response, 422)


def test_details_list_every_problem(client):
    body = {"data": [[1, 2, 3, "x"], [1, 2, None, 4]], "pred_len": 0}
    error = assert_error(client.post("/v1/predict/single", json=body), 422)
    fields = {d["field"] for d in error["details"]}
    assert {"data[0][3]", "data[1][2]", "pred_len"} <= fields


def test_huge_values_never_500(client):
    body = {"data": [[1e15, -1e15, 1e15, -1e15], [-1e15, 1e15, -1e15, 1e15]], "pred_len": 3}
    response = client.post("/v1/predict/single", json=body)
    assert response.status_code in (200, 422)
    if response.status_code == 422:
        assert_error(response, 422)


def test_unknown_routes_and_methods_use_the_error_shape(client):
    assert_error(client.get("/v1/nope"), 404, "not_found")
    assert_error(client.get("/v1/predict/single"), 405, "method_not_allowed")
