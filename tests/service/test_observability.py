"""Metrics, JSON access logs, OpenAPI, and health that stays prompt while a long forecast runs."""

from __future__ import annotations

import json
import threading
import time

import httpx
from conftest import GUIDE_SINGLE
from prometheus_client.parser import text_string_to_metric_families

from model.checkpoints.bundled import BUNDLED_NAME


def _samples(client: httpx.Client) -> dict[tuple, float]:
    response = client.get("/v1/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    values = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_parse_and_move(client):
    before = _samples(client)
    assert client.post("/v1/predict/single", json=GUIDE_SINGLE).status_code == 200
    assert client.post("/v1/predict/single", json={"data": []}).status_code == 422
    after = _samples(client)
    ok = {"method": "POST", "route": "/v1/predict/single", "status": "200"}
    bad = {**ok, "status": "422"}
    assert _value(after, "kronos_http_requests_total", **ok) == _value(before, "kronos_http_requests_total", **ok) + 1
    assert _value(after, "kronos_http_requests_total", **bad) == _value(before, "kronos_http_requests_total", **bad) + 1
    assert _value(after, "kronos_http_request_duration_seconds_count", **ok) > _value(
        before, "kronos_http_request_duration_seconds_count", **ok
    )
    assert (
        _value(after, "kronos_rejections_total", reason="validation_error")
        == _value(before, "kronos_rejections_total", reason="validation_error") + 1
    )
    single = {"endpoint": "single", "model": BUNDLED_NAME}
    assert (
        _value(after, "kronos_prediction_duration_seconds_count", **single)
        == _value(before, "kronos_prediction_duration_seconds_count", **single) + 1
    )
    assert _value(after, "kronos_request_rows_count") == _value(before, "kronos_request_rows_count") + 1
    assert _value(after, "kronos_request_pred_len_sum") == _value(before, "kronos_request_pred_len_sum") + 10
    assert _value(after, "kronos_model_ready", model=BUNDLED_NAME) == 1.0
    assert _value(after, "kronos_http_requests_in_flight") == 1.0  # the /v1/metrics request itself
    info = [labels for (name, labels) in after if name == "kronos_device_info"]
    assert dict(info[0])["device"] == "cpu" and dict(info[0])["state"] == "ready"
    assert _value(after, "process_resident_memory_bytes") > 0
    # Route templates, never raw paths: unknown paths share one label.
    client.get("/v1/does-not-exist-123")
    assert _value(_samples(client), "kronos_http_requests_total", method="GET", route="unmatched", status="404") >= 1
    for name, _ in after:
        assert ":" not in name


def test_one_json_log_line_per_request(client, server):
    client.post("/v1/predict/single", json=GUIDE_SINGLE, headers={"X-Request-ID": "log-check-1"})
    deadline = time.monotonic() + 5
    entry = None
    while entry is None and time.monotonic() < deadline:
        for line in server.stderr().splitlines():
            record = json.loads(line)  # every line is JSON
            if record.get("request_id") == "log-check-1":
                entry = record
        time.sleep(0.05)
    assert entry is not None
    assert entry["route"] == "/v1/predict/single" and entry["status"] == 200
    assert entry["rows"] == 2 and entry["pred_len"] == 10 and entry["device"] == "cpu"
    assert entry["duration_ms"] > 0


def test_kronos_serve_prints_its_url(server):
    assert f"http://127.0.0.1:{server.port}" in server.stdout()


def test_openapi_documents_routes_and_errors(client):
    schema = client.get("/openapi.json").json()
    single = schema["paths"]["/v1/predict/single"]["post"]
    for code in ("400", "413", "422", "429", "503", "504"):
        assert code in single["responses"]
    assert single["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith("ErrorResponse")
    refs = single["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    assert {r["$ref"].rsplit("/", 1)[1] for r in refs} == {"SingleRequest", "LegacySingleRequest"}
    assert "SingleRequest" in schema["components"]["schemas"]
    assert client.get("/docs").status_code == 200


def test_health_answers_promptly_while_a_long_forecast_runs(client, server):
    long_body = {"data": [[100, 101, 99, 100.5]] * 200, "pred_len": 200, "sample_count": 12, "seed": 1}
    result: dict = {}

    def run() -> None:
        with httpx.Client(base_url=server.url, timeout=120) as other:
            started = time.perf_counter()
            result["status"] = other.post("/v1/predict/single", json=long_body).status_code
            result["seconds"] = time.perf_counter() - started

    worker = threading.Thread(target=run)
    worker.start()
    try:
        # Wait until the forecast is in flight.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if _value(_samples(client), "kronos_http_requests_in_flight") >= 2:
                break
            time.sleep(0.02)
        time.sleep(0.2)
        slowest = 0.0
        checked = 0
        while worker.is_alive() and checked < 10:
            for path in ("/v1/healthz", "/v1/metrics"):
                started = time.perf_counter()
                assert client.get(path).status_code == 200
                slowest = max(slowest, time.perf_counter() - started)
            checked += 1
        assert checked >= 1, "the forecast finished before health could be checked"
        assert worker.is_alive(), "the forecast was too short to prove anything"
        assert slowest < 0.2, f"health took {slowest:.3f}s during a forecast"
    finally:
        worker.join(timeout=120)
    assert result["status"] == 200
