"""The shared real server over HTTP: the guide's requests, both request shapes, headers, seeds."""

from __future__ import annotations

import json

from conftest import GUIDE_BATCH, GUIDE_BATCH_ONE, GUIDE_SINGLE, GUIDE_SINGLE_ONE_ROW, assert_error

from model.checkpoints.bundled import BUNDLED_NAME

COLUMNS = ["open", "high", "low", "close", "volume", "amount"]


def _check_forecast(result: dict, pred_len: int, columns: int = 4) -> None:
    assert result["pred_len"] == pred_len
    rows = result["forecast"]
    assert len(rows) == pred_len
    assert [row["step"] for row in rows] == list(range(1, pred_len + 1))
    for row in rows:
        assert all(isinstance(row[c], float) for c in COLUMNS[:columns])
        assert all(row[c] is None for c in COLUMNS[columns:])  # not given, so not invented


def test_guide_single_payload(client):
    response = client.post("/v1/predict/single", json=GUIDE_SINGLE)
    assert response.status_code == 200, response.text
    body = response.json()
    _check_forecast(body, 10)
    assert body["device"] == "cpu"
    assert body["model"].startswith(f"{BUNDLED_NAME}@")
    assert body["instance"] == "test-default"
    assert body["elapsed_ms"] > 0
    assert body["quantiles"] is None
    assert response.headers["X-Kronos-Device"] == "cpu"
    assert response.headers["X-Kronos-Instance"] == "test-default"


def test_guide_curl_bodies_sent_as_text(client):
    # Exactly the bytes the guide's curl sends, whitespace and all.
    raw = """{
    "data": [
      [100.0, 105.0, 98.0, 102.0],
      [102.0, 108.0, 101.0, 107.0]
    ],
    "pred_len": 10
  }"""
    response = client.post("/v1/predict/single", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 200
    assert len(response.json()["forecast"]) == 10


def test_guide_one_row_and_header_override_payloads(client):
    for body, headers in [
        (GUIDE_SINGLE_ONE_ROW, {}),
        (GUIDE_SINGLE_ONE_ROW, {"X-Kronos-Device": "gpu"}),
    ]:
        response = client.post("/v1/predict/single", json=body, headers=headers)
        assert response.status_code == 200, response.text
        _check_forecast(response.json(), 10)


def test_guide_batch_payloads(client):
    response = client.post("/v1/predict/batch", json=GUIDE_BATCH)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["count"] == 2 and len(body["results"]) == 2
    for result in body["results"]:
        _check_forecast(result, 10)
    # A flat one-row history forecasts (roughly) that row: the second series sits near 200.
    assert abs(body["results"][1]["forecast"][0]["close"] - 202) < 5
    response = client.post("/v1/predict/batch", json=GUIDE_BATCH_ONE, headers={"X-Kronos-Device": "cpu"})
    assert response.status_code == 200
    assert response.json()["count"] == 1


def test_readyz_reports_cpu_and_model(client):
    response = client.get("/v1/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["device"] == "cpu" and body["device_requested"] == "cpu" and body["device_fallback"] is False
    assert body["instance"] == "test-default"
    assert body["model"]["version"].startswith(f"{BUNDLED_NAME}@")
    assert body["model"]["max_context"] == 512


def test_healthz_and_detailed(client):
    response = client.get("/v1/healthz")
    assert response.status_code == 200 and response.json()["status"] == "ok"
    detailed = client.get("/v1/healthz/detailed").json()
    assert detailed["status"] in ("healthy", "degraded")
    assert detailed["model"]["state"] == "ready"
    assert detailed["process"]["rss_bytes"] > 0
    assert detailed["system"]["memory_total_bytes"] > 0
    assert detailed["disk"]["total_bytes"] > 0


def test_request_id_echoed_or_generated(client):
    echoed = client.get("/v1/healthz", headers={"X-Request-ID": "trace-abc.123"})
    assert echoed.headers["X-Request-ID"] == "trace-abc.123"
    generated = client.get("/v1/healthz", headers={"X-Request-ID": "bad id with spaces"})
    assert generated.headers["X-Request-ID"] != "bad id with spaces"
    assert len(generated.headers["X-Request-ID"]) == 32
    # Errors carry the headers too.
    error = client.post("/v1/predict/single", content=b"{", headers={"X-Request-ID": "err-1"})
    assert error.headers["X-Request-ID"] == "err-1"
    assert error.headers["X-Kronos-Device"] == "cpu"
    assert error.headers["X-Kronos-Instance"] == "test-default"


def test_seed_reproduces_and_does_not_depend_on_batch_companions(client):
    body = {
        "data": [[10, 11, 9, 10.5], [10.5, 12, 10, 11], [11, 11.5, 10, 10.2]],
        "pred_len": 6,
        "seed": 42,
        "sample_count": 3,
    }
    first = client.post("/v1/predict/single", json=body).json()
    second = client.post("/v1/predict/single", json=body).json()
    assert first["forecast"] == second["forecast"]
    assert first["seed"] == 42
    other = {"data": [[1, 2, 0.5, 1.5]] * 7, "pred_len": 9, "seed": 5}
    batch = client.post("/v1/predict/batch", json={"batch": [other, body]}).json()
    # Step-level batching (the default) encodes, decodes and samples each series on its own: the
    # same numbers to the last bit, whoever shares its steps.
    assert batch["results"][1]["forecast"] == first["forecast"]
    unseeded = client.post("/v1/predict/single", json={**body, "seed": None}).json()
    assert isinstance(unseeded["seed"], int)


def test_rows_with_volume_amount_and_named_fields(client):
    five = {"data": [[10, 11, 9, 10.5, 1000], [10.5, 12, 10, 11, 1500]], "pred_len": 3, "seed": 1}
    six = {"data": [[10, 11, 9, 10.5, 1000, 10500], [10.5, 12, 10, 11, 1500, 16000]], "pred_len": 3, "seed": 1}
    named = {
        "data": [
            {"open": 10, "high": 11, "low": 9, "close": 10.5, "volume": 1000},
            {"open": 10.5, "high": 12, "low": 10, "close": 11, "volume": 1500},
        ],
        "pred_len": 3,
        "seed": 1,
    }
    answers = [client.post("/v1/predict/single", json=b) for b in (five, six, named)]
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    # Named fields mean the same as the positional row.
    assert answers[0].json()["forecast"] == answers[2].json()["forecast"]


def test_timestamps_continue_their_frequency_and_quantiles(client):
    stamps = ["2024-03-04T09:30:00Z", "2024-03-04T09:35:00Z", "2024-03-04T09:40:00Z"]
    body = {
        "data": [[10, 11, 9, 10.5], [10.5, 12, 10, 11], [11, 11.5, 10, 10.2]],
        "timestamps": stamps,
        "pred_len": 4,
        "sample_count": 5,
        "seed": 3,
        "quantiles": [0.1, 0.5, 0.9],
    }
    response = client.post("/v1/predict/single", json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert [r["timestamp"] for r in result["forecast"]] == [
        "2024-03-04T09:45:00+00:00",
        "2024-03-04T09:50:00+00:00",
        "2024-03-04T09:55:00+00:00",
        "2024-03-04T10:00:00+00:00",
    ]
    bands = result["quantiles"]
    assert [b["level"] for b in bands] == [0.1, 0.5, 0.9]
    for low, mid, high in zip(bands[0]["forecast"], bands[1]["forecast"], bands[2]["forecast"]):
        assert low["close"] <= mid["close"] <= high["close"]
    # Business-day data continues on business days: Friday → Monday.
    days = ["2024-03-06", "2024-03-07", "2024-03-08", "2024-03-11", "2024-03-12", "2024-03-13", "2024-03-14"]
    daily = {"data": [[1, 2, 0.5, 1.5]] * 7, "timestamps": days, "pred_len": 3}
    stamps_out = [r["timestamp"] for r in client.post("/v1/predict/single", json=daily).json()["forecast"]]
    assert stamps_out == ["2024-03-15T00:00:00", "2024-03-18T00:00:00", "2024-03-19T00:00:00"]
    # An explicit freq wins.
    hourly = {**daily, "freq": "h"}
    stamps_out = [r["timestamp"] for r in client.post("/v1/predict/single", json=hourly).json()["forecast"]]
    assert stamps_out == ["2024-03-14T01:00:00", "2024-03-14T02:00:00", "2024-03-14T03:00:00"]


def test_default_pred_len(client):
    response = client.post("/v1/predict/single", json={"data": [[1, 2, 0.5, 1.5], [1.5, 2, 1, 1.8]]})
    assert response.status_code == 200
    assert len(response.json()["forecast"]) == 120


def test_batch_items_may_differ_and_come_back_in_order(client):
    items = [
        {"data": [[1, 2, 0.5, 1.5]] * 3, "pred_len": 2, "seed": 1},
        {"data": [[100, 101, 99, 100.5, 10]] * 30, "pred_len": 7, "seed": 2, "sample_count": 2},
        {"data": [[50, 52, 49, 51]] * 12, "pred_len": 4, "seed": 3, "T": 0.7, "top_k": 5},
    ]
    body = client.post("/v1/predict/batch", json={"batch": items}).json()
    assert [r["pred_len"] for r in body["results"]] == [2, 7, 4]
    assert [r["seed"] for r in body["results"]] == [1, 2, 3]
    assert abs(body["results"][1]["forecast"][0]["close"] - 100.5) < 5


# --- the original service's request shape --------------------------------------------------------

LEGACY = {
    "series_id": "EURUSD-1h",
    "candles": [
        {"open": 1.10, "high": 1.11, "low": 1.09, "close": 1.105, "volume": 100},
        {"open": 1.105, "high": 1.12, "low": 1.10, "close": 1.115, "volume": 120},
        {"open": 1.115, "high": 1.118, "low": 1.11, "close": 1.112, "volume": 90},
    ],
    "timestamps": ["2024-03-04T09:00:00", "2024-03-04T10:00:00", "2024-03-04T11:00:00"],
    "prediction_timestamps": ["2024-03-04T12:00:00", "2024-03-04T13:00:00"],
}


def test_legacy_single_shape(client):
    response = client.post("/v1/predict/single", json=LEGACY)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"series_id", "prediction", "model_version", "tokenizer_version"}
    assert body["series_id"] == "EURUSD-1h"
    assert [p["timestamp"] for p in body["prediction"]] == ["2024-03-04T12:00:00", "2024-03-04T13:00:00"]
    assert set(body["prediction"][0]) == {"timestamp", *COLUMNS}
    assert body["model_version"].startswith(f"{BUNDLED_NAME}@")
    # Partial overrides are fine; the original's required-all fault is fixed.
    partial = client.post("/v1/predict/single", json={**LEGACY, "overrides": {"top_p": 0.5}})
    assert partial.status_code == 200, partial.text
    seeded = {
        **LEGACY,
        "overrides": {"pred_len": 2, "temperature": 0.8, "top_k": 0, "top_p": 0.9, "sample_count": 2, "seed": 9},
    }
    assert (
        client.post("/v1/predict/single", json=seeded).json() == client.post("/v1/predict/single", json=seeded).json()
    )


def test_legacy_faults_are_422_not_500(client):
    mismatch = client.post("/v1/predict/single", json={**LEGACY, "overrides": {"pred_len": 5}})
    error = assert_error(mismatch, 422, "validation_error")
    assert "overrides.pred_len" in error["message"]
    empty = client.post("/v1/predict/batch", json={"items": []})
    assert "items" in assert_error(empty, 422)["message"]
    empty_new = client.post("/v1/predict/batch", json={"batch": []})
    assert "batch" in assert_error(empty_new, 422)["message"]
    before = client.post("/v1/predict/single", json={**LEGACY, "prediction_timestamps": ["2024-03-04T10:30:00"]})
    assert "prediction_timestamps" in assert_error(before, 422)["message"]


def test_legacy_batch_shape_items_of_different_lengths(client):
    short = {
        **LEGACY,
        "series_id": "short",
        "candles": LEGACY["candles"][:2],
        "timestamps": LEGACY["timestamps"][:2],
        "prediction_timestamps": ["2024-03-04T11:00:00"],
    }
    response = client.post("/v1/predict/batch", json={"items": [LEGACY, short]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert isinstance(body, list)
    assert [item["series_id"] for item in body] == ["EURUSD-1h", "short"]
    assert [len(item["prediction"]) for item in body] == [2, 1]
    missing_id = {k: v for k, v in LEGACY.items() if k != "series_id"}
    error = assert_error(client.post("/v1/predict/batch", json={"items": [missing_id]}), 422)
    assert "items[0].series_id" in error["message"]


def test_mixing_the_two_shapes_is_422(client):
    error = assert_error(client.post("/v1/predict/single", json={**GUIDE_SINGLE, "candles": LEGACY["candles"]}), 422)
    assert "mixes" in error["message"]
    error = assert_error(client.post("/v1/predict/batch", json={"batch": [GUIDE_SINGLE], "items": [LEGACY]}), 422)
    assert "mixes" in error["message"]
    error = assert_error(client.post("/v1/predict/single", json={**GUIDE_SINGLE, "overrides": {}}), 422)
    assert "overrides" in json.dumps(error)
