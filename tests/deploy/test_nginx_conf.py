"""nginx.conf on its own: it loads (as the official image runs it), it agrees with the service's
limits, and, in front of two recording backends, it forwards what the instances need and retries
a refused request with the same body."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import deploy_support
import httpx
import pytest
from deploy_support import REPO, Nginx, free_port, nginx_argv, render_nginx_conf

from services.kronos_fastapi.settings import Settings

CONF = (REPO / "nginx.conf").read_text()


def directive(name: str) -> str:
    """The value of a directive that appears once in nginx.conf."""
    values = re.findall(rf"^\s*{name}\s+([^;]+);", CONF, flags=re.MULTILINE)
    assert len(values) == 1, (name, values)
    return values[0].strip()


def seconds(value: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(ms|s|m)?", value).groups()
    return int(number) * {"ms": 0.001, "s": 1, "m": 60, None: 1}[unit]


def test_nginx_t_accepts_the_config_as_the_image_runs_it(nginx_bin, tmp_path):
    # The official image starts `nginx -g 'daemon off;'`: the file must not set daemon (or pid,
    # user, log paths) itself, which nginx_argv's -g would then duplicate.
    (tmp_path / "nginx.conf").write_text(render_nginx_conf(free_port(), free_port(), free_port()))
    result = subprocess.run(nginx_argv(nginx_bin, tmp_path, "-t"), capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_body_limit_matches_the_service_default():
    # nginx's "m" is MiB, as is KRONOS_MAX_REQUEST_SIZE_MB (the code default, not this shell's).
    default_mib = Settings.model_fields["max_request_size_mb"].default
    # The http block's limit, first; /v1/jobs has its own (tests/deploy/test_jobs_deploy.py).
    limits = re.findall(r"^\s*client_max_body_size\s+([^;]+);", CONF, flags=re.MULTILINE)
    assert limits[0] == f"{int(default_mib)}m" and len(limits) == 2
    assert f'"limit_bytes":{int(default_mib * 1024 * 1024)}' in CONF  # what the 413 body states


def test_read_timeout_lets_the_service_answer_its_own_504_first():
    request_timeout = Settings.model_fields["request_timeout_s"].default
    assert seconds(directive("proxy_read_timeout")) > request_timeout
    # Room to raise KRONOS_REQUEST_TIMEOUT_S to 300 s without touching nginx (documented).
    assert seconds(directive("proxy_read_timeout")) > 300


def location(path: str) -> str:
    """The body of ``location <path> { ... }`` (no nested blocks in ours)."""
    found = re.search(rf"location {re.escape(path)} {{([^}}]*)}}", CONF)
    assert found, path
    return found.group(1)


def test_a_job_post_is_never_replayed_on_another_instance():
    # /v1/jobs creates state: a POST sent once is not resent (an instance that committed the job and then
    # died would leave it created twice); connection errors before sending still fail over.
    (conditions,) = re.findall(r"proxy_next_upstream\s+([^;]+);", location("/v1/jobs"))
    assert "non_idempotent" not in conditions.split() and "error" in conditions.split()


def test_failover_conditions():
    outside_jobs = CONF.replace(location("/v1/jobs"), "")
    (conditions,) = re.findall(r"^\s*proxy_next_upstream\s+([^;]+);", outside_jobs, flags=re.MULTILINE)
    conditions = conditions.split()
    assert {"error", "timeout", "http_502", "http_503", "non_idempotent"} <= set(conditions)
    # The instance's own 504 (KRONOS_REQUEST_TIMEOUT_S) is an answer, not a reason to run it twice.
    assert "http_504" not in conditions
    assert directive("proxy_next_upstream_tries") == "0"  # every address of both instances
    # ... but only in a request's first seconds: one that ran for minutes is never replayed.
    assert seconds(directive("proxy_next_upstream_timeout")) <= 10
    assert "proxy_request_buffering off" not in CONF  # the body must be kept to be resent


class Recorder:
    """A stand-in backend that records each request and answers a fixed status."""

    def __init__(self, name: str, status: int = 200):
        self.name = name
        self.status = status
        self.instance_header: str | None = None  # X-Kronos-Instance to send, as the service does
        self.requests: list[dict] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                recorder.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                payload = json.dumps({"instance": recorder.name}).encode()
                self.send_response(recorder.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                if recorder.instance_header:
                    self.send_header("X-Kronos-Instance", recorder.instance_header)
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _answer

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recorders() -> Iterator[tuple[Recorder, Recorder]]:
    cpu, gpu = Recorder("cpu"), Recorder("gpu")
    try:
        yield cpu, gpu
    finally:
        cpu.close()
        gpu.close()


@pytest.fixture
def recorded_lb(nginx_bin, recorders, tmp_path) -> Iterator[httpx.Client]:
    cpu, gpu = recorders
    lb = Nginx(nginx_bin, tmp_path / "nginx", cpu.port, gpu.port)
    try:
        with httpx.Client(base_url=lb.url, timeout=10.0) as client:
            yield client
    finally:
        lb.stop()


def test_forwarded_headers_reach_the_instance(recorded_lb, recorders):
    cpu, _ = recorders
    recorded_lb.post(
        "/v1/predict/single",
        json={"data": [[1, 2, 0.5, 1.5]]},
        headers={"X-Forwarded-For": "203.0.113.7", "X-Request-ID": "abc-123"},
    )
    seen = cpu.requests[-1]["headers"]
    # nginx appends the peer it saw; the instance trusts the chain only from KRONOS_TRUSTED_PROXIES.
    assert seen["X-Forwarded-For"] == "203.0.113.7, 127.0.0.1"
    assert seen["X-Real-IP"] == "127.0.0.1"
    assert seen["X-Request-ID"] == "abc-123"
    assert seen["X-Forwarded-Proto"] == "http"
    assert seen["Host"].startswith("127.0.0.1:")


def test_not_ready_instance_is_skipped_with_the_same_body(recorded_lb, recorders):
    cpu, gpu = recorders
    gpu.status = 503
    body = json.dumps({"batch": [{"data": [[1, 2, 0.5, 1.5]], "pred_len": 3}]}).encode()
    response = recorded_lb.post("/v1/predict/batch", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 200
    assert response.headers["X-Backend-Used"] == "cpu"
    assert response.headers["X-Backend-Failover-From"] == "gpu"
    assert gpu.requests[-1]["body"] == body == cpu.requests[-1]["body"]


def test_other_statuses_are_answers_not_failover(recorded_lb, recorders):
    cpu, gpu = recorders
    for status in (422, 429, 500, 504):
        gpu.status = status
        before = len(cpu.requests)
        response = recorded_lb.post("/v1/predict/batch", json={"batch": []})
        assert response.status_code == status
        assert response.headers["X-Backend-Used"] == "gpu"
        assert len(cpu.requests) == before


@pytest.mark.parametrize("path", ["/v1/metrics", "/cpu/v1/metrics", "/gpu/v1/readyz", "/gpu/v1/healthz/detailed"])
def test_metrics_and_per_instance_paths_need_the_api_key(recorded_lb, recorders, path):
    """Through the balancer these are no probes: an instance checks the caller's key first (GET
    /v1/models with the caller's headers), and its 401 or 403 comes back as JSON from nginx."""
    cpu, gpu = recorders
    for status, error_type in ((401, "unauthorized"), (403, "forbidden")):
        cpu.status = gpu.status = status
        response = recorded_lb.get(path, headers={"X-API-Key": "wrong"})
        assert response.status_code == status
        assert response.json()["error"]["type"] == error_type
        assert response.headers["X-Backend-Used"] == "none"
        check = cpu.requests[-1]
        assert check["path"] == "/v1/models" and check["headers"]["X-API-Key"] == "wrong"
        assert check["headers"]["X-Forwarded-For"] == "127.0.0.1"  # the allow-list sees the caller
    cpu.status = gpu.status = 200
    response = recorded_lb.get(path, headers={"X-API-Key": "right"})
    assert response.status_code == 200
    assert response.headers["X-Backend-Used"] == ("gpu" if path.startswith("/gpu") else "cpu")
    # The API's own 401 is the instance's answer, passed on as it is (not nginx's).
    cpu.status = 401
    response = recorded_lb.post("/v1/predict/single", json={"data": [[1, 2, 0.5, 1.5]]})
    assert response.status_code == 401 and response.json() == {"instance": "cpu"}


def test_both_down_is_a_json_502_from_nginx(nginx_bin, tmp_path):
    lb = Nginx(nginx_bin, tmp_path / "nginx", free_port(), free_port())
    try:
        for method, path in [("POST", "/v1/predict/single"), ("POST", "/v1/predict/batch"), ("GET", "/cpu/v1/metrics")]:
            response = httpx.request(method, lb.url + path, json={}, timeout=10.0)
            assert response.status_code == 502
            assert response.headers["X-Backend-Used"] == "none"
            assert response.json()["error"]["type"] == "backend_unavailable"
            assert response.headers["X-Request-ID"]
    finally:
        lb.stop()


class SilentBackend:
    """A port that never answers: its listen queue is full, so a connection attempt gets no reply at
    all (as a stopped container's address on a compose network), rather than a refusal."""

    def __init__(self):
        self.server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(0)
        self.port = self.server.getsockname()[1]
        self.fillers = []
        for _ in range(3):  # fill the accept queue; nothing is ever accepted
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", self.port))
            self.fillers.append(filler)
        time.sleep(0.2)

    def silent(self) -> bool:
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        probe.settimeout(0.5)
        try:
            probe.connect(("127.0.0.1", self.port))
            return False
        except TimeoutError:
            return True
        except OSError:
            return False
        finally:
            probe.close()

    def close(self) -> None:
        for filler in self.fillers:
            filler.close()
        self.server.close()


def test_silent_instance_fails_over_after_the_connect_timeout(nginx_bin, recorders, tmp_path):
    cpu, _ = recorders
    silent = SilentBackend()
    lb = Nginx(nginx_bin, tmp_path / "nginx", cpu.port, silent.port)
    try:
        assert silent.silent(), "the stand-in did not stay silent"
        started = time.monotonic()
        response = httpx.post(f"{lb.url}/v1/predict/batch", json={"batch": []}, timeout=30.0)
        elapsed = time.monotonic() - started
        assert response.status_code == 200, response.text
        assert response.headers["X-Backend-Used"] == "cpu"
        assert response.headers["X-Backend-Failover-From"] == "gpu"
        assert response.json() == {"instance": "cpu"}
        # One connect timeout on the silent address, then the other instance.
        assert seconds(directive("proxy_connect_timeout")) <= elapsed < 3 * seconds(directive("proxy_connect_timeout"))
    finally:
        lb.stop()
        silent.close()


def test_backend_used_follows_the_instance_that_names_itself(recorded_lb, recorders):
    # An instance names itself in X-Kronos-Instance; that wins over counting attempts (which is
    # wrong when one name resolves to several addresses).
    cpu, gpu = recorders
    gpu.instance_header = "kronos-api-cpu"  # a gpu upstream that says it is the cpu instance
    response = recorded_lb.post("/v1/predict/batch", json={"batch": []})
    assert response.status_code == 200
    assert response.json() == {"instance": "gpu"}  # the gpu upstream answered, first try
    assert response.headers["X-Backend-Used"] == "cpu"  # but what it says it is decides
    assert response.headers["X-Backend-Failover-From"] == "gpu"


@pytest.mark.parametrize("addresses", [2, 3])
def test_silent_instance_with_several_addresses_fails_over(nginx_bin, recorders, tmp_path, monkeypatch, addresses):
    # A name that resolves to N addresses becomes N servers in its upstream block (nginx resolves it
    # at start-up): Podman's DNS gave a stopped container's address twice, which with two tries
    # sent both to the silent address and never reached the other instance (504).
    cpu, _ = recorders
    silent = SilentBackend()

    def render(cpu_port: int, gpu_port: int, lb_port: int) -> str:
        text = render_nginx_conf(cpu_port, gpu_port, lb_port)
        for params in ("max_fails=0;", "max_fails=0 backup;", ";"):
            line = f"server 127.0.0.1:{gpu_port} {params}".replace(" ;", ";")
            text = text.replace(line, " ".join([line] * addresses))
        return text

    monkeypatch.setattr(deploy_support, "render_nginx_conf", render)
    lb = Nginx(nginx_bin, tmp_path / "nginx", cpu.port, silent.port)
    try:
        servers = CONF.count("server kronos-api-gpu:8000")  # one per upstream block that has the instance
        assert (lb.prefix / "nginx.conf").read_text().count(f"server 127.0.0.1:{silent.port}") == servers * addresses
        for path, headers in [("/v1/predict/batch", {}), ("/v1/predict/single", {"X-Kronos-Device": "gpu"})]:
            response = httpx.post(lb.url + path, json={"batch": []}, headers=headers, timeout=30.0)
            assert response.status_code == 200, response.text
            assert response.headers["X-Backend-Used"] == "cpu"
            assert response.headers["X-Backend-Failover-From"] == "gpu"
            assert response.json() == {"instance": "cpu"}
    finally:
        lb.stop()
        silent.close()
