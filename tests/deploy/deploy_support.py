"""What the deployment tests share: the repository's paths, tool look-up (skip here, fail in CI),
loopback ports, bounded waits, and real processes (service instances, nginx) that are always ended."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
BUNDLED_MODEL = REPO / "model" / "bundled" / "kronos-demo"

# CI sets this: a missing tool is then a failure, never a silent skip.
REQUIRE_TOOLS = os.environ.get("KRONOS_TEST_REQUIRE_TOOLS") == "1"

# Where nginx.conf names the instances and where it listens; the only text a test rewrites.
CPU_UPSTREAM = "kronos-api-cpu:8000"
GPU_UPSTREAM = "kronos-api-gpu:8000"
LB_LISTEN = "listen 8080;"


def missing_tool(message: str) -> None:
    if REQUIRE_TOOLS:
        pytest.fail(f"{message} (KRONOS_TEST_REQUIRE_TOOLS=1: deployment tests may not skip)")
    pytest.skip(message)


def require_tool(name: str) -> str:
    """The tool's path; skips the test when it is absent (fails under KRONOS_TEST_REQUIRE_TOOLS=1)."""
    # nginx lives in /usr/sbin, which is not on every user's PATH.
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        missing_tool(f"{name} is not installed")
    return path


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any KRONOS_* / NVIDIA_* a developer may have exported."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KRONOS_", "NVIDIA_"))}
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], bool], timeout_s: float, interval_s: float = 0.1) -> bool:
    """Poll ``condition`` until it holds; bounded both in time and in number of tries."""
    deadline = time.monotonic() + timeout_s
    for _ in range(int(timeout_s / interval_s) + 1):
        if condition():
            return True
        if time.monotonic() >= deadline:
            break
        time.sleep(interval_s)
    return condition()


class ManagedProcess:
    """A child process with its output in a file; ``stop`` always ends it (TERM, then KILL)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], cwd: Path, log_path: Path):
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: the process dies mid-whatever, as in a crash."""
        if self.alive:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.alive:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()

    def log_tail(self, chars: int = 3000) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]


class ServiceInstance:
    """One real Kronos service process (``python -m services.kronos_fastapi``) on a loopback port.

    ``name`` becomes KRONOS_INSTANCE_NAME, so the X-Kronos-Instance response header tells the
    instances apart even though both run on CPU here.
    """

    def __init__(self, name: str, workdir: Path, main: Path | None = None):
        self.name = name
        self.main = main  # a script to run instead (e.g. tests/service/faulty_server.py)
        self.port = 0  # chosen by start_on_a_free_port
        # The service reads .env from its working directory: an empty one keeps a developer's out.
        self.workdir = workdir / name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, **settings: str) -> None:
        defaults = {
            "PYTHONPATH": str(REPO),
            "KRONOS_INSTANCE_NAME": self.name,
            "KRONOS_MODEL_PATH": str(BUNDLED_MODEL),  # what the compose files mount at /models by default
            "KRONOS_RATE_LIMIT_PER_MINUTE": "0",
            "KRONOS_LOG_LEVEL": "WARNING",
        }
        env = clean_env(**{**defaults, **settings})
        program = [str(self.main)] if self.main else ["-m", "services.kronos_fastapi"]
        argv = [sys.executable, *program, "--host", "127.0.0.1", "--port", str(self.port)]
        self.process = ManagedProcess(self.name, argv, env, self.workdir, self.workdir / "service.log")

    def start_on_a_free_port(self, **settings: str) -> None:
        """``start`` on a fresh port, again on another if someone else took it meanwhile."""
        for _ in range(3):
            self.port = free_port()
            self.start(**settings)
            if wait_until(lambda: self._dead() or self._answers("healthz"), 60.0, 0.2) and not self._dead():
                return
            if "address already in use" not in self._log().lower():
                break
            self.stop()
        pytest.fail(f"{self.name} did not start:\n{self._log()}")

    def wait_serving(self, timeout_s: float = 60.0) -> None:
        """Until /v1/healthz answers (the model may still be loading)."""
        if not wait_until(lambda: self._dead() or self._answers("healthz"), timeout_s, 0.2):
            pytest.fail(f"{self.name} did not serve /v1/healthz in {timeout_s}s:\n{self._log()}")
        if self._dead():
            pytest.fail(f"{self.name} exited:\n{self._log()}")

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        if not wait_until(lambda: self._dead() or self._answers("readyz"), timeout_s, 0.2):
            pytest.fail(f"{self.name} not ready in {timeout_s}s:\n{self._log()}")
        if self._dead():
            pytest.fail(f"{self.name} exited:\n{self._log()}")

    def _answers(self, route: str) -> bool:
        """200 from /v1/<route>, and from this instance, not whatever else holds the port."""
        try:
            response = httpx.get(f"{self.url}/v1/{route}", timeout=2.0)
        except httpx.HTTPError:
            return False
        return response.status_code == 200 and response.headers.get("X-Kronos-Instance") == self.name

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.stop()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def _dead(self) -> bool:
        return self.process is None or not self.process.alive

    def _log(self) -> str:
        return self.process.log_tail() if self.process else "(never started)"


def render_nginx_conf(cpu_port: int, gpu_port: int, lb_port: int) -> str:
    """The project's nginx.conf with only the instance addresses and the listen port changed."""
    original = (REPO / "nginx.conf").read_text()
    for needle in (CPU_UPSTREAM, GPU_UPSTREAM, LB_LISTEN):
        assert needle in original, f"nginx.conf no longer contains {needle!r}; update tests/deploy"
    rendered = (
        original.replace(CPU_UPSTREAM, f"127.0.0.1:{cpu_port}")
        .replace(GPU_UPSTREAM, f"127.0.0.1:{gpu_port}")
        .replace(LB_LISTEN, f"listen 127.0.0.1:{lb_port};")
    )
    # Nothing else changed: undoing the three substitutions gives the file back.
    undone = rendered.replace(f"listen 127.0.0.1:{lb_port};", LB_LISTEN)
    undone = re.sub(rf"127\.0\.0\.1:{cpu_port}(?!\d)", CPU_UPSTREAM, undone)
    undone = re.sub(rf"127\.0\.0\.1:{gpu_port}(?!\d)", GPU_UPSTREAM, undone)
    assert undone == original
    return rendered


def nginx_argv(nginx: str, prefix: Path, *extra: str) -> list[str]:
    """Debian's nginx on a private prefix: config, pid and error log all under ``prefix``."""
    return [
        nginx,
        "-p", str(prefix),
        "-c", str(prefix / "nginx.conf"),
        "-e", str(prefix / "error.log"),
        "-g", f"daemon off; pid {prefix / 'nginx.pid'};",
        *extra,
    ]  # fmt: skip


def check_nginx_can_run() -> None:
    """Debian's nginx keeps request bodies in /var/lib/nginx, fixed at build time: only root (CI)
    or a user who may write there can run it."""
    if os.geteuid() != 0 and not os.access("/var/lib/nginx", os.W_OK):
        missing_tool("nginx needs root here (its temp paths under /var/lib/nginx are compiled in)")


class Nginx:
    """A real nginx in the foreground with the rendered project config; access log in a file."""

    def __init__(self, nginx: str, prefix: Path, cpu_port: int, gpu_port: int):
        self.prefix = prefix
        prefix.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # again on another port if someone else took this one meanwhile
            self.port = free_port()
            (prefix / "nginx.conf").write_text(render_nginx_conf(cpu_port, gpu_port, self.port))
            tested = subprocess.run(nginx_argv(nginx, prefix, "-t"), capture_output=True, text=True, timeout=30)
            assert tested.returncode == 0, f"nginx -t failed:\n{tested.stderr}"
            self.process = ManagedProcess(
                "nginx", nginx_argv(nginx, prefix), clean_env(), prefix, prefix / "access.log"
            )
            if wait_until(lambda: not self.process.alive or self._answers(), 10.0) and self.process.alive:
                return
            self.process.stop()
            if "Address already in use" not in self.error_log():
                break
        pytest.fail(f"nginx did not start:\n{self.error_log()}")

    def _answers(self) -> bool:
        """Any answer that carries X-Backend-Used: this nginx, not whatever else holds the port."""
        try:
            return "X-Backend-Used" in httpx.get(f"{self.url}/v1/healthz", timeout=5.0).headers
        except httpx.HTTPError:
            return False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def error_log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def access_log_lines(self) -> list[str]:
        return self.process.log_tail(200_000).splitlines()

    def stop(self) -> None:
        self.process.stop()
