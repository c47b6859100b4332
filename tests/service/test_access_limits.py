"""Limits and access over real HTTP: rate limit, body size (with and without Content-Length),
API keys, the client allow-list, and the request timeout."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from conftest import GUIDE_BATCH, GUIDE_SINGLE, assert_error

LONG_FORECAST = {"data": [[100, 101, 99, 100.5]] * 200, "pred_len": 200, "sample_count": 8, "seed": 1}


@pytest.fixture(scope="module")
def servers(start_servers):
    return start_servers(
        ready=False,
        guarded={
            "KRONOS_API_KEYS": "key-one, key-two",
            "KRONOS_MAX_REQUEST_SIZE_MB": "0.01",
            "KRONOS_RATE_LIMIT_PER_MINUTE": "0",
        },
        limited={"KRONOS_RATE_LIMIT_PER_MINUTE": "3"},
        allowlist={"KRONOS_ALLOWED_CLIENTS": "10.9.8.0/24", "KRONOS_TRUSTED_PROXIES": "127.0.0.1"},
        timeout={"KRONOS_REQUEST_TIMEOUT_S": "0.5", "KRONOS_RATE_LIMIT_PER_MINUTE": "0"},
    )


def _wait_ready(url: str, headers: dict | None = None) -> None:
    deadline = time.monotonic() + 30
    while httpx.get(url + "/v1/readyz", headers=headers).status_code != 200:
        assert time.monotonic() < deadline, "server never became ready"
        time.sleep(0.1)


# --- rate limit -----------------------------------------------------------------------------------


def test_rate_limit_per_client_with_retry_after(servers):
    url = servers["limited"].url
    _wait_ready(url)
    with httpx.Client(base_url=url, timeout=60) as client:
        answers = [
            client.post("/v1/predict/single", json=GUIDE_SINGLE),
            client.post("/v1/predict/batch", json=GUIDE_BATCH),
            client.post("/v1/predict/single", json={}),  # a refused body still counts
        ]
        assert [a.status_code for a in answers] == [200, 200, 422]
        assert answers[0].headers["X-RateLimit-Limit"] == "3"
        limited = client.post("/v1/predict/single", json=GUIDE_SINGLE)
        error = assert_error(limited, 429, "rate_limited")
        assert "KRONOS_RATE_LIMIT_PER_MINUTE" in error["message"]
        assert 0 < int(limited.headers["Retry-After"]) <= 61
        assert limited.headers["X-Request-ID"]
        assert_error(client.post("/v1/predict/batch", json=GUIDE_BATCH), 429, "rate_limited")
        # Probes and scrapers are never limited.
        for _ in range(5):
            for path in ("/v1/healthz", "/v1/readyz", "/v1/metrics"):
                assert client.get(path).status_code == 200
        metrics = client.get("/v1/metrics").text
        assert 'kronos_rate_limited_total{route="/v1/predict/single"} 1.0' in metrics
        assert 'kronos_rejections_total{reason="rate_limited"} 2.0' in metrics


# --- body size ------------------------------------------------------------------------------------


def _big_body(rows: int) -> bytes:
    return json.dumps({"data": [[100.123456, 105.123456, 98.123456, 102.123456]] * rows, "pred_len": 3}).encode()


def test_body_limit_with_content_length(servers):
    url = servers["guarded"].url
    headers = {"X-API-Key": "key-one", "Content-Type": "application/json"}
    body = _big_body(400)
    assert len(body) > 0.01 * 2**20
    response = httpx.post(url + "/v1/predict/single", content=body, headers=headers)
    error = assert_error(response, 413, "payload_too_large")
    assert "KRONOS_MAX_REQUEST_SIZE_MB" in error["message"]
    assert error["details"][0]["limit_bytes"] == int(0.01 * 2**20)


def test_body_limit_without_content_length(servers):
    url = servers["guarded"].url
    _wait_ready(url)
    headers = {"X-API-Key": "key-one", "Content-Type": "application/json"}

    def chunked(body: bytes, size: int = 1000):
        for start in range(0, len(body), size):
            yield body[start : start + size]

    with httpx.Client(base_url=url, timeout=60, headers=headers) as client:
        small = json.dumps(GUIDE_SINGLE).encode()
        ok = client.post("/v1/predict/single", content=chunked(small, 16))
        assert ok.status_code == 200, ok.text
        assert "content-length" not in ok.request.headers
        big = client.post("/v1/predict/single", content=chunked(_big_body(400)))
        assert "content-length" not in big.request.headers
        assert_error(big, 413, "payload_too_large")
        # A 4 MB stream is refused too, and the connection stays usable afterwards.
        huge = client.post("/v1/predict/single", content=chunked(_big_body(150_000), 65536))
        assert_error(huge, 413, "payload_too_large")
        assert client.post("/v1/predict/single", json=GUIDE_SINGLE).status_code == 200


# --- API keys -------------------------------------------------------------------------------------


def test_api_keys(servers):
    url = servers["guarded"].url
    with httpx.Client(base_url=url, timeout=60) as client:
        error = assert_error(client.post("/v1/predict/single", json=GUIDE_SINGLE), 401, "unauthorized")
        assert "missing API key" in error["message"]
        missing = client.post("/v1/predict/batch", json=GUIDE_BATCH)
        assert missing.headers["WWW-Authenticate"].startswith("Bearer")
        wrong = client.post("/v1/predict/single", json=GUIDE_SINGLE, headers={"X-API-Key": "key-three"})
        assert "invalid API key" in assert_error(wrong, 401, "unauthorized")["message"]
        bearer_wrong = client.post("/v1/predict/single", json=GUIDE_SINGLE, headers={"Authorization": "Bearer KEY-ONE"})
        assert_error(bearer_wrong, 401)
        _wait_ready(url)
        bearer = client.post("/v1/predict/single", json=GUIDE_SINGLE, headers={"Authorization": "Bearer key-two"})
        assert bearer.status_code == 200, bearer.text
        header = client.post("/v1/predict/batch", json=GUIDE_BATCH, headers={"X-API-Key": "key-one"})
        assert header.status_code == 200
        # Probes need no key; everything else does.
        for path in ("/v1/healthz", "/v1/readyz", "/v1/metrics"):
            assert client.get(path).status_code == 200
        for path in ("/v1/healthz/detailed", "/openapi.json", "/docs"):
            assert_error(client.get(path), 401)
            assert client.get(path, headers={"X-API-Key": "key-one"}).status_code == 200


# --- allow-list -----------------------------------------------------------------------------------


def test_allow_list_refuses_other_clients(servers):
    url = servers["allowlist"].url
    with httpx.Client(base_url=url, timeout=60) as client:
        error = assert_error(client.post("/v1/predict/single", json=GUIDE_SINGLE), 403, "forbidden")
        assert "127.0.0.1" in error["message"]
        assert_error(client.get("/v1/healthz/detailed"), 403)
        assert_error(client.get("/openapi.json"), 403)
        # The probes stay open to the probing address (kubelet, compose health checks, Prometheus),
        # which is not in the list: liveness, readiness and metrics, as they are open to API keys.
        assert client.get("/v1/healthz").status_code == 200
        deadline = time.monotonic() + 30
        while client.get("/v1/readyz").status_code != 200:  # 503 while loading, never 403
            assert_error(client.get("/v1/readyz"), 503)
            assert time.monotonic() < deadline
            time.sleep(0.1)
        metrics = client.get("/v1/metrics")
        assert metrics.status_code == 200 and "kronos_model_ready" in metrics.text
        # 127.0.0.1 is a trusted proxy here, so the client it forwards for is the one checked.
        forwarded = {"X-Forwarded-For": "10.9.8.7"}
        assert client.post("/v1/predict/single", json=GUIDE_SINGLE, headers=forwarded).status_code == 200
        outside = {"X-Forwarded-For": "10.9.8.7, 192.0.2.50"}
        assert_error(client.post("/v1/predict/single", json=GUIDE_SINGLE, headers=outside), 403)


# --- timeout --------------------------------------------------------------------------------------


def test_request_timeout_is_504_and_the_server_keeps_serving(servers):
    url = servers["timeout"].url
    _wait_ready(url)
    with httpx.Client(base_url=url, timeout=60) as client:
        started = time.perf_counter()
        response = client.post("/v1/predict/single", json=LONG_FORECAST)
        elapsed = time.perf_counter() - started
        error = assert_error(response, 504, "timeout")
        assert "KRONOS_REQUEST_TIMEOUT_S" in error["message"]
        assert elapsed < 5
        health = client.get("/v1/healthz")
        assert health.status_code == 200
        assert 'kronos_rejections_total{reason="timeout"} 1.0' in client.get("/v1/metrics").text
