"""End to end through a real nginx running the project's nginx.conf, in front of two real service
instances: default routing, the X-Kronos-Device override, X-Backend-Used, the body limit, metrics
per instance, and failover when the "gpu" instance dies or is not ready, then recovery."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
from deploy_support import REPO, Nginx, ServiceInstance, wait_until
from prometheus_client.parser import text_string_to_metric_families

# The deployment guide's requests, as written there.
GUIDE_SINGLE = {"data": [[100.0, 105.0, 98.0, 102.0], [102.0, 108.0, 101.0, 107.0]], "pred_len": 10}
LB_SINGLE = {"data": [[100, 105, 98, 102]], "pred_len": 10}
LB_BATCH = {
    "batch": [
        {"data": [[100, 105, 98, 102]], "pred_len": 10},
        {"data": [[200, 205, 198, 202]], "pred_len": 10},
    ]
}
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def lb(balancer) -> httpx.Client:
    with httpx.Client(base_url=balancer.url, timeout=60.0) as client:
        yield client


def send(lb: httpx.Client, method: str, path: str, **kwargs) -> httpx.Response:
    """Every response through the balancer must say which backend answered."""
    response = lb.request(method, path, **kwargs)
    assert response.headers.get("X-Backend-Used") in {"cpu", "gpu", "none"}, (path, dict(response.headers))
    return response


def answered_by(response: httpx.Response) -> tuple[str, str | None]:
    """(X-Backend-Used, the instance that really answered according to the instance itself)."""
    return response.headers["X-Backend-Used"], response.headers.get("X-Kronos-Instance")


def test_guide_single_request_goes_to_cpu(lb):
    response = send(lb, "POST", "/v1/predict/single", json=GUIDE_SINGLE)
    assert response.status_code == 200, response.text
    assert answered_by(response) == ("cpu", "kronos-api-cpu")
    assert len(response.json()["forecast"]) == 10
    assert "X-Backend-Failover-From" not in response.headers


def test_batch_goes_to_gpu(lb):
    response = send(lb, "POST", "/v1/predict/batch", json=LB_BATCH)
    assert response.status_code == 200, response.text
    assert answered_by(response) == ("gpu", "kronos-api-gpu")
    assert [len(result["forecast"]) for result in response.json()["results"]] == [10, 10]


@pytest.mark.parametrize(
    ("path", "body", "header", "expected"),
    [
        ("/v1/predict/batch", LB_BATCH, "cpu", "cpu"),
        ("/v1/predict/single", LB_SINGLE, "gpu", "gpu"),
        ("/v1/predict/single", LB_SINGLE, "GPU", "gpu"),
        ("/v1/predict/batch", LB_BATCH, "Cpu", "cpu"),
        ("/v1/predict/single", LB_SINGLE, "cuda:0", "gpu"),  # the device name the service reports
        ("/v1/predict/single", LB_SINGLE, "", "cpu"),  # empty = absent: default routing
    ],
)
def test_device_header_overrides_routing(lb, path, body, header, expected):
    response = send(lb, "POST", path, json=body, headers={"X-Kronos-Device": header})
    assert response.status_code == 200, response.text
    assert answered_by(response) == (expected, f"kronos-api-{expected}")


@pytest.mark.parametrize("header", ["tpu", "cpu,gpu", "gpu0", "auto"])
def test_unknown_device_header_is_rejected_by_the_balancer(lb, header):
    response = send(lb, "POST", "/v1/predict/single", json=LB_SINGLE, headers={"X-Kronos-Device": header})
    assert response.status_code == 400
    assert answered_by(response) == ("none", None)  # no instance saw it
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["type"] == "invalid_device_header"
    assert isinstance(response.json()["error"]["details"], list)  # the service's shape, also from nginx


@pytest.mark.parametrize("path", ["/v1/healthz", "/v1/readyz", "/v1/healthz/detailed", "/v1/metrics"])
def test_health_ready_and_metrics_go_to_cpu(lb, path):
    response = send(lb, "GET", path)
    assert response.status_code == 200, response.text
    assert answered_by(response) == ("cpu", "kronos-api-cpu")


def test_readyz_reports_the_device(lb):
    assert send(lb, "GET", "/v1/readyz").json()["device"] == "cpu"


@pytest.mark.parametrize("instance", ["cpu", "gpu"])
def test_per_instance_metrics_for_prometheus(lb, instance):
    response = send(lb, "GET", f"/{instance}/v1/metrics")
    assert response.status_code == 200
    assert answered_by(response) == (instance, f"kronos-api-{instance}")
    names = {family.name for family in text_string_to_metric_families(response.text)}
    assert "kronos_http_requests" in names


def test_unknown_path_is_answered_by_an_instance(lb):
    response = send(lb, "GET", "/v1/no-such-route")
    assert response.status_code == 404
    assert answered_by(response) == ("cpu", "kronos-api-cpu")


def test_request_id_is_passed_and_echoed(lb, balancer):
    given = send(lb, "GET", "/v1/healthz", headers={"X-Request-ID": "deploy-test-42"})
    assert given.headers["X-Request-ID"] == "deploy-test-42"
    # Without one, nginx makes one, logs it and hands it to the instance, which echoes it.
    made = send(lb, "GET", "/v1/healthz")
    request_id = made.headers["X-Request-ID"]

    def logged_lines() -> list[dict]:
        return [json.loads(line) for line in balancer.access_log_lines() if request_id in line]

    # nginx writes the access-log line in its log phase, after the response has left: on a loaded
    # machine the client can read the response before the line is written, so wait for it (bounded).
    assert wait_until(lambda: bool(logged_lines()), timeout_s=10.0), "no access-log line for " + request_id
    logged = logged_lines()
    assert [entry["request_id"] for entry in logged] == [request_id]
    assert logged[0]["backend_used"] == "cpu"


def test_oversize_body_gets_413_from_nginx(lb):
    too_big = b"x" * (10 * MIB + 1)
    response = send(lb, "POST", "/v1/predict/single", content=too_big, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert answered_by(response) == ("none", None)
    assert response.json()["error"]["type"] == "payload_too_large"
    assert isinstance(response.json()["error"]["details"], list)  # the service's shape, also from nginx


def test_oversize_chunked_body_gets_413_from_nginx(lb):
    def chunks():
        for _ in range(11):
            yield b" " * MIB

    response = send(lb, "POST", "/v1/predict/single", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert answered_by(response) == ("none", None)


def test_body_under_the_limit_reaches_the_instance(lb):
    # 5 MiB of padding around a valid request: nginx lets it through, the instance answers.
    body = b'{"data": [[100, 105, 98, 102]], "pred_len": 10}' + b" " * (5 * MIB)
    response = send(lb, "POST", "/v1/predict/single", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    assert answered_by(response) == ("cpu", "kronos-api-cpu")


def in_flight(instance) -> float:
    text = httpx.get(f"{instance.url}/v1/metrics", timeout=5.0).text
    for family in text_string_to_metric_families(text):
        if family.name == "kronos_http_requests_in_flight":
            return family.samples[0].value
    return 0.0


def test_failover_when_gpu_dies_and_recovery(lb, instances):
    """Kill the gpu instance in the middle of a batch: nginx resends it to cpu. Then it is down,
    then up but not ready (503), then back: batches go to cpu, cpu, and gpu again."""
    gpu = instances.gpu
    try:
        # 1. Killed mid-request: the batch in flight is answered by cpu.
        slow_batch = {"batch": [{"data": [[100, 105, 98, 102]] * 16, "pred_len": 40} for _ in range(2)]}
        result: dict[str, httpx.Response] = {}
        worker = threading.Thread(
            target=lambda: result.update(r=send(lb, "POST", "/v1/predict/batch", json=slow_batch, timeout=120.0))
        )
        worker.start()
        # The metrics request itself is one in flight; a second one is our batch.
        assert wait_until(lambda: in_flight(gpu) >= 2, 10.0, 0.02), "the batch never reached the gpu instance"
        gpu.kill()
        worker.join(timeout=120.0)
        assert not worker.is_alive()
        response = result["r"]
        assert response.status_code == 200, response.text
        assert answered_by(response) == ("cpu", "kronos-api-cpu")
        assert response.headers["X-Backend-Failover-From"] == "gpu"

        # 2. Down: batches and even the explicit gpu override are served by cpu, and say so.
        for path, body, headers in [
            ("/v1/predict/batch", LB_BATCH, {}),
            ("/v1/predict/single", LB_SINGLE, {"X-Kronos-Device": "gpu"}),
        ]:
            response = send(lb, "POST", path, json=body, headers=headers)
            assert response.status_code == 200, response.text
            assert answered_by(response) == ("cpu", "kronos-api-cpu")
            assert response.headers["X-Backend-Failover-From"] == "gpu"
        # The gpu's own metrics path never falls back to the other instance's numbers.
        response = send(lb, "GET", "/gpu/v1/metrics")
        assert response.status_code == 502
        assert answered_by(response) == ("none", None)

        # 3. Up but not ready (a GPU that is not there, fallback refused): 503 -> cpu answers.
        gpu.start(KRONOS_DEVICE="cuda:99")
        gpu.wait_serving()
        assert httpx.get(f"{gpu.url}/v1/readyz", timeout=5.0).status_code == 503
        response = send(lb, "POST", "/v1/predict/batch", json=LB_BATCH)
        assert response.status_code == 200, response.text
        assert answered_by(response) == ("cpu", "kronos-api-cpu")
        assert response.headers["X-Backend-Failover-From"] == "gpu"
        gpu.kill()
    finally:
        # 4. Back: the next batch goes to gpu again, with no failover mark.
        if gpu.process is not None and gpu.process.alive:
            gpu.kill()
        gpu.start(KRONOS_DEVICE="cpu")
        gpu.wait_ready()
    started = time.monotonic()
    response = send(lb, "POST", "/v1/predict/batch", json=LB_BATCH)
    assert response.status_code == 200, response.text
    assert answered_by(response) == ("gpu", "kronos-api-gpu")
    assert "X-Backend-Failover-From" not in response.headers
    assert time.monotonic() - started < 10.0


FAULTY_SERVER = REPO / "tests" / "service" / "faulty_server.py"


def test_a_broken_model_thread_sends_the_traffic_to_the_other_pool(nginx_bin, tmp_path):
    """The cpu instance's device goes bad (every model call fails; faulty_server.py): its first
    forecasts fail (500 is an answer, not a reason to fail over), then readyz turns 503 "broken" and
    forecasts get 503 at once, which nginx passes on to the gpu instance, and says so."""
    flag = tmp_path / "device-gone"
    cpu = ServiceInstance("kronos-api-cpu", tmp_path, main=FAULTY_SERVER)
    gpu = ServiceInstance("kronos-api-gpu", tmp_path)
    lb = None
    try:
        cpu.start_on_a_free_port(KRONOS_DEVICE="cpu", FAULTY_BROKEN_FLAG=str(flag))
        gpu.start_on_a_free_port(KRONOS_DEVICE="cpu")
        cpu.wait_ready()
        gpu.wait_ready()
        lb = Nginx(nginx_bin, tmp_path / "nginx", cpu.port, gpu.port)
        with httpx.Client(base_url=lb.url, timeout=60.0) as client:
            assert answered_by(send(client, "POST", "/v1/predict/single", json=LB_SINGLE)) == ("cpu", "kronos-api-cpu")
            flag.touch()
            for _ in range(3):  # KRONOS_MODEL_FAILURE_LIMIT (3): until then each failure is the answer
                response = send(client, "POST", "/v1/predict/single", json=LB_SINGLE)
                assert response.status_code == 500 and answered_by(response) == ("cpu", "kronos-api-cpu")
            ready = send(client, "GET", "/cpu/v1/readyz")
            assert ready.status_code == 503 and ready.json()["status"] == "broken", ready.text
            assert "injected device failure" in ready.json()["reason"]
            for path, body in (("/v1/predict/single", LB_SINGLE), ("/v1/predict/batch", LB_BATCH)):
                response = send(client, "POST", path, json=body, headers={"X-Kronos-Device": "cpu"})
                assert response.status_code == 200, response.text
                assert answered_by(response) == ("gpu", "kronos-api-gpu")
                assert response.headers["X-Backend-Failover-From"] == "cpu"
    finally:
        if lb is not None:
            lb.stop()
        cpu.stop()
        gpu.stop()
