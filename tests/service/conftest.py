"""Fixtures for the service tests: real uvicorn servers on loopback ports, and in-process apps.

A server is ``python -m services.kronos_fastapi`` in a subprocess, in its own working directory
(so no stray ``.env`` leaks in), with only the ``KRONOS_*`` variables a test gives it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60.0

# Guide payloads, exactly as the deployment guide's curl calls send them.
GUIDE_SINGLE = {"data": [[100.0, 105.0, 98.0, 102.0], [102.0, 108.0, 101.0, 107.0]], "pred_len": 10}
GUIDE_SINGLE_ONE_ROW = {"data": [[100, 105, 98, 102]], "pred_len": 10}
GUIDE_BATCH = {
    "batch": [
        {"data": [[100, 105, 98, 102]], "pred_len": 10},
        {"data": [[200, 205, 198, 202]], "pred_len": 10},
    ]
}
GUIDE_BATCH_ONE = {"batch": [{"data": [[100, 105, 98, 102]], "pred_len": 10}]}


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """As in the servers (OMP_NUM_THREADS=1): on 2 busy cores, two torch threads run 10-100x slower.
    A module that runs the model in-process uses it: ``pytestmark = pytest.mark.usefixtures(...)``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def predictor():
    """The bundled demo model as a ``KronosPredictor``, in this process (one per module)."""
    from model import Kronos, KronosPredictor, KronosTokenizer
    from model.checkpoints.bundled import bundled_model_path

    path = bundled_model_path()
    return KronosPredictor(Kronos.from_pretrained(path), KronosTokenizer.from_pretrained(path / "tokenizer"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PortTaken(Exception):
    """Another process took the free port between our probe and the server's bind."""


class ServerProcess:
    """One real service process on 127.0.0.1: ``python -m services.kronos_fastapi``, or the script
    ``main`` (a wrapper that changes something first, e.g. a model that fails on cue)."""

    def __init__(
        self,
        workdir: Path,
        env: dict[str, str] | None = None,
        dotenv: str | None = None,
        main: str | None = None,
    ):
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        if dotenv is not None:
            (workdir / ".env").write_text(dotenv)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.stdout_path = workdir / "stdout.log"
        self.stderr_path = workdir / "stderr.log"
        base = {k: v for k, v in os.environ.items() if not k.startswith("KRONOS_")}
        base["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), base.get("PYTHONPATH")]))
        base.update({"KRONOS_PORT": str(self.port), "KRONOS_HOST": "127.0.0.1", "OMP_NUM_THREADS": "1"})
        base.update(env or {})
        self._logs = [open(self.stdout_path, "w"), open(self.stderr_path, "w")]  # noqa: SIM115 — closed in stop()
        self.main = main
        self.process = subprocess.Popen(
            [sys.executable, main] if main else [sys.executable, "-m", "services.kronos_fastapi"],
            cwd=workdir,
            env=base,
            stdout=self._logs[0],
            stderr=self._logs[1],
        )

    def wait_started(self, ready: bool = True) -> ServerProcess:
        """Wait for liveness (and readiness when asked); fail with the server's log if it never comes."""
        deadline = time.monotonic() + START_TIMEOUT_S
        path = "/v1/readyz" if ready else "/v1/healthz"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                if "address already in use" in self.stderr().lower():
                    raise PortTaken(self.port)
                pytest.fail(f"server exited with {self.process.returncode}:\n{self.stderr()[-3000:]}")
            try:
                if httpx.get(self.url + path, timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        pytest.fail(
            f"server at {self.url} not {'ready' if ready else 'live'} in {START_TIMEOUT_S}s:\n{self.stderr()[-3000:]}"
        )

    def stdout(self) -> str:
        return self.stdout_path.read_text()

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        for log in self._logs:
            log.close()
        return self.process.returncode


@pytest.fixture(scope="session")
def start_servers(tmp_path_factory) -> Iterator:
    """``start_servers(name=env, ...)`` starts several servers at once (they boot in parallel) and
    returns them started; every one is stopped at the end of the session. Besides ``KRONOS_*``
    variables, ``env`` may hold ``.env`` (the file's text) and ``.main`` (a script to run instead)."""
    started: list[ServerProcess] = []

    def start(ready: bool = True, **configs: dict) -> dict[str, ServerProcess]:
        servers = {}
        for name, config in configs.items():
            config = dict(config)
            dotenv = config.pop(".env", None)
            main = config.pop(".main", None)
            server = ServerProcess(tmp_path_factory.mktemp(name), config, dotenv, main)
            started.append(server)
            servers[name] = server
        for name, server in servers.items():
            for _ in range(3):
                try:
                    server.wait_started(ready=ready)
                    break
                except PortTaken:
                    server.stop()
                    env = {k: v for k, v in configs[name].items() if k not in (".env", ".main")}
                    server = ServerProcess(server.workdir, env, main=server.main)
                    started.append(server)
                    servers[name] = server
            else:
                pytest.fail(f"no free port for server {name} after 3 tries")
        return servers

    yield start
    for server in started:
        server.stop(signal.SIGKILL if server.process.poll() is None else signal.SIGTERM, timeout=10)


@pytest.fixture(scope="session")
def server(start_servers) -> ServerProcess:
    """The shared server: the bundled model on cpu, default settings but no rate limit."""
    return start_servers(default={"KRONOS_RATE_LIMIT_PER_MINUTE": "0", "KRONOS_INSTANCE_NAME": "test-default"})[
        "default"
    ]


@pytest.fixture
def client(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as http:
        yield http


def assert_error(response: httpx.Response, status: int, error_type: str | None = None) -> dict:
    """The response has ``status`` and the one error shape; returns the ``error`` object."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"type", "message", "details"}, error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], list), error  # the same shape whatever the error
    if error_type is not None:
        assert error["type"] == error_type, error
    return error


class LiveApp:
    """An app in-process with its lifespan running (model loading and all) on an event loop in a
    background thread, called synchronously through httpx's ASGI transport as ``client``."""

    def __init__(self, app: Any, client: tuple[str, int] = ("127.0.0.1", 50000)):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.lifespan = app.router.lifespan_context(app)
        self._run(self.lifespan.__aenter__())
        transport = httpx.ASGITransport(app=app, client=client)
        self.http = httpx.AsyncClient(transport=transport, base_url="http://in-process")

    def _run(self, coroutine: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self._run(self.http.request(method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def options(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("OPTIONS", url, **kwargs)

    def wait_ready(self, timeout: float = 30) -> LiveApp:
        deadline = time.monotonic() + timeout
        while self.get("/v1/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the in-process app never became ready"
            time.sleep(0.05)
        return self

    def close(self) -> None:
        try:
            self._run(self.http.aclose())
            self._run(self.lifespan.__aexit__(None, None, None))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            self.loop.close()

    def __enter__(self) -> LiveApp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
