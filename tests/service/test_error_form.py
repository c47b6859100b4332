"""Errors in one form: every 4xx about what was sent names its field in ``details`` (limits, timestamps,
freq, calendar and top_p included), a body declared as anything but JSON is a 415, and a client that
hangs up mid-forecast leaves no ERROR in the log."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from backtesting.test import GOOG
from conftest import assert_error

ROWS = [[1, 2, 0.5, 1.5]] * 5
DAYS = ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05"]


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"data": ROWS, "pred_len": 10**6}, "pred_len", "more than the limit of 512 (KRONOS_MAX_PRED_LEN)"),
        ({"data": ROWS, "sample_count": 33}, "sample_count", "KRONOS_MAX_SAMPLE_COUNT"),
        ({"data": ROWS * 500}, "data", "KRONOS_MAX_ROWS"),
        ({"data": ROWS, "timestamps": [DAYS[0], *DAYS[:4]]}, "timestamps[1]", "strictly increasing"),
        ({"data": ROWS, "timestamps": ["x"] * 5}, "timestamps[0]", "valid datetime"),
        ({"data": ROWS, "freq": "zz"}, "freq", "not a pandas frequency"),
        ({"data": ROWS, "timestamps": DAYS, "calendar": "XXXX"}, "calendar", "not an exchange calendar"),
        ({"data": ROWS, "top_p": 2}, "top_p", "less than or equal to 1"),
        ({"data": ROWS, "T": 0}, "T", "greater than 0"),
        ({"data": ROWS, "candles": []}, "body", "mixes the two request shapes"),
    ],
)
def test_every_422_names_its_field_in_details(client, body, field, words):
    error = assert_error(client.post("/v1/predict/single", json=body), 422, "validation_error")
    assert error["message"].startswith(f"{field}: ") or field == "body", error
    assert words in error["message"], error
    assert error["details"] and error["details"][0]["field"] == field, error
    assert all(isinstance(d, dict) and d.get("field") and d.get("message") for d in error["details"]), error


def test_top_p_over_1_is_refused_in_the_schemas_form(client):
    error = assert_error(client.post("/v1/predict/single", json={"data": ROWS, "top_p": 2}), 422)
    assert error["message"] == "top_p: Input should be less than or equal to 1"
    assert error["details"] == [
        {"field": "top_p", "message": "Input should be less than or equal to 1", "type": "less_than_equal"}
    ]


def test_bad_json_and_limits_name_the_body_or_the_limit(client):
    error = assert_error(
        client.post("/v1/predict/single", content=b"{", headers={"Content-Type": "application/json"}), 400
    )
    assert error["details"][0]["field"] == "body"
    limit = assert_error(client.post("/v1/predict/single", json={"data": ROWS, "pred_len": 10**6}), 422)
    assert (limit["details"][0]["value"], limit["details"][0]["limit"]) == (10**6, 512)


@pytest.mark.parametrize("path", ["/v1/predict/single", "/v1/predict/batch", "/v1/backtest"])
def test_only_json_bodies_are_read(client, path):
    body = {"data": ROWS * 6, "pred_len": 2, "windows": 2, "sample_count": 2} if "backtest" in path else {"data": ROWS}
    if "batch" in path:
        body = {"batch": [body]}
    text = json.dumps(body)
    for media in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        error = assert_error(client.post(path, content=text, headers={"Content-Type": media}), 415)
        assert error["type"] == "unsupported_media_type" and error["details"][0]["field"] == "Content-Type"
        assert "application/json" in error["message"]
    for media in ("application/json; charset=utf-8", "application/vnd.api+json"):
        assert client.post(path, content=text, headers={"Content-Type": media}).status_code == 200
    assert client.post(path, content=text).status_code == 200  # none declared: read as JSON


def test_a_client_that_hangs_up_leaves_no_error_in_the_log(client, server):
    """Single, batch (both kinds) and backtest requests given up by their clients mid-forecast: the
    forecasts stop, and the log has no ERROR (it had "_GatheringFuture exception was never retrieved")."""
    before = len(server.stderr()) + len(server.stdout())
    data = GOOG[["Open", "High", "Low", "Close"]].to_numpy(float)[-1000:].tolist()
    long = {"data": data, "pred_len": 300, "sample_count": 8}
    for path, body in (
        ("/v1/predict/single", long),
        ("/v1/predict/batch", {"batch": [long, long]}),
        ("/v1/predict/batch", {"batch": [long, long], "partial": True}),
        ("/v1/backtest", {"data": data, "pred_len": 50, "windows": 4}),
    ):
        with pytest.raises(httpx.TimeoutException):
            httpx.post(server.url + path, json=body, timeout=0.5)
    deadline = time.monotonic() + 20
    while "client_disconnected" not in (server.stderr() + server.stdout())[before:] and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # the abandoned futures are collected
    client.get("/v1/healthz")
    log = (server.stderr() + server.stdout())[before:]
    errors = [line for line in log.splitlines() if '"level": "ERROR"' in line or "never retrieved" in line]
    assert not errors, errors
