"""What the client's tests share (a module of its own name: ``from conftest import`` would find another
directory's conftest when several test folders run together): the real ``kronos-serve`` processes on loopback
(the service tests' ``ServerProcess``, bundled model on cpu), the client from ``clients/python/src``, the
fresh virtual environment.

Two servers, started together once per session:

- ``main``: an API key, no rate limit, ``KRONOS_MAX_BATCH_ITEMS=4`` (so ``forecast_many`` has to learn the
  limit and chunk), jobs in its own working directory;
- ``tight``: a queue of one series (``KRONOS_MAX_QUEUE=1``, so ``KRONOS_MAX_BATCH_ITEMS=1``) and 60 requests
  a minute per key, keys ``load`` and ``limited`` (separate rate-limit buckets).
"""

from __future__ import annotations

import atexit
import importlib.util
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "clients" / "python"
sys.path.insert(0, str(CLIENT / "src"))  # the client as its users import it; it never imports model or services


def _service_helpers():
    """tests/service/conftest.py's ServerProcess and PortTaken, loaded under a name of their own."""
    spec = importlib.util.spec_from_file_location("kronos_service_test_servers", ROOT / "tests/service/conftest.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


_helpers = _service_helpers()
ServerProcess, PortTaken = _helpers.ServerProcess, _helpers.PortTaken

API_KEY = "client-test-key"
MAIN = {
    "KRONOS_API_KEYS": API_KEY,
    "KRONOS_RATE_LIMIT_PER_MINUTE": "0",
    "KRONOS_MAX_BATCH_ITEMS": "4",
    "KRONOS_INSTANCE_NAME": "client-main",
}
TIGHT = {
    "KRONOS_API_KEYS": "load,limited",
    "KRONOS_MAX_QUEUE": "1",
    "KRONOS_MAX_BATCH_ITEMS": "1",
    "KRONOS_RATE_LIMIT_PER_MINUTE": "60",
    "KRONOS_JOBS_ENABLED": "false",
    "KRONOS_INSTANCE_NAME": "client-tight",
}


class Servers:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.started: list = []

    def start(self, **configs: dict[str, str]) -> dict:
        servers = {name: self._new(name, env) for name, env in configs.items()}
        for name, env in configs.items():
            for _ in range(3):
                try:
                    servers[name].wait_started(ready=True)
                    break
                except PortTaken:
                    servers[name].stop()
                    servers[name] = self._new(name, env)
            else:
                pytest.fail(f"no free port for server {name} after 3 tries")
        return servers

    def _new(self, name: str, env: dict[str, str]):
        server = ServerProcess(self.tmp / name, dict(env))
        self.started.append(server)
        return server

    def stop(self) -> None:
        for server in self.started:
            server.stop(signal.SIGTERM, timeout=10)


def jobs_available(server) -> tuple[bool, str]:
    """Whether the server serves /v1/jobs (its OpenAPI lists it), and why not."""
    import httpx

    paths = httpx.get(server.url + "/openapi.json", headers={"X-API-Key": API_KEY}, timeout=10).json()["paths"]
    if "/v1/jobs" in paths:
        return True, ""
    return False, "this checkout's service has no /v1/jobs yet (issue 25): the client's job calls are untested"


# --- the fresh virtual environment (built in the background while the other tests run) ----------

VENV_TIMEOUT_S = 240


class VenvBuild:
    """``python -m venv`` (with pip) and ``pip install -c constraints.txt clients/python``, in a thread of its own."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="kronos-client-venv-"))
        self.python = self.root / "venv" / "bin" / "python"
        self.log = ""
        self.error: str | None = None
        self.seconds: float | None = None
        self.thread = threading.Thread(target=self._build, name="client-venv", daemon=True)
        self.thread.start()
        atexit.register(self.remove)  # also when the session ends without pytest_sessionfinish

    def _run(self, *command: str) -> bool:
        done = subprocess.run(command, capture_output=True, text=True, timeout=VENV_TIMEOUT_S)
        self.log += done.stdout + done.stderr
        if done.returncode != 0:
            self.error = f"{' '.join(command)} failed ({done.returncode}):\n{self.log[-3000:]}"
        return done.returncode == 0

    def _build(self) -> None:
        started = time.monotonic()
        # a copy of clients/python without build leftovers (a stale build/lib would go into the wheel), so the
        # test also leaves nothing in the checkout
        source = self.root / "kronos-client"
        try:
            shutil.copytree(CLIENT, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".*"))
            if self._run(sys.executable, "-m", "venv", str(self.root / "venv")):
                # at the versions the project pins (constraints.txt), so the test runs what CI locked
                constraints = str(ROOT / "constraints.txt")
                self._run(
                    str(self.python), "-m", "pip", "install", "--disable-pip-version-check", "-q", "-c", constraints,
                    str(source),
                )  # fmt: skip
        except (OSError, subprocess.SubprocessError) as exc:
            self.error = f"{type(exc).__name__}: {exc}\n{self.log[-3000:]}"
        self.seconds = time.monotonic() - started

    def wait(self) -> VenvBuild:
        self.thread.join(2 * VENV_TIMEOUT_S + 30)
        if self.thread.is_alive():
            pytest.fail(f"building the client's virtual environment took over {2 * VENV_TIMEOUT_S + 30}s")
        return self

    def remove(self) -> None:
        self.thread.join(2 * VENV_TIMEOUT_S + 30)
        shutil.rmtree(self.root, ignore_errors=True)
