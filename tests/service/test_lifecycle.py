"""Start-up and shutdown of the real process: bad settings stop it with the variable's name, the
model loads in the background, and SIGTERM drains in-flight requests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import httpx
from conftest import GUIDE_SINGLE, ROOT

ENV = {k: v for k, v in os.environ.items() if not k.startswith("KRONOS_")}
ENV["PYTHONPATH"] = str(ROOT)


def _run_cli(tmp_path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "services.kronos_fastapi", *args],
        cwd=tmp_path,
        env={**ENV, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_bad_settings_fail_start_up_naming_the_variable(tmp_path):
    result = _run_cli(tmp_path, KRONOS_MAX_CONTEXT="lots")
    assert result.returncode == 2
    assert "KRONOS_MAX_CONTEXT" in result.stderr and "Traceback" not in result.stderr
    (tmp_path / ".env").write_text("KRONOS_RATE_LIMIT_PER_MINUTE=-1\n")
    result = _run_cli(tmp_path)
    assert result.returncode == 2 and "KRONOS_RATE_LIMIT_PER_MINUTE" in result.stderr


def test_help_lists_the_flags(tmp_path):
    result = _run_cli(tmp_path, "--help")
    assert result.returncode == 0
    for flag in ("--host", "--port", "--device", "--model"):
        assert flag in result.stdout


def test_sigterm_drains_in_flight_requests(start_servers):
    server = start_servers(drain={"KRONOS_RATE_LIMIT_PER_MINUTE": "0"})["drain"]
    long_body = {"data": [[100, 101, 99, 100.5]] * 100, "pred_len": 120, "sample_count": 4, "seed": 1}
    result: dict = {}

    def run() -> None:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            response = client.post("/v1/predict/single", json=long_body)
            result["status"] = response.status_code
            result["rows"] = len(response.json()["forecast"])

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if "kronos_http_requests_in_flight 2.0" in httpx.get(server.url + "/v1/metrics").text:
            break
        time.sleep(0.02)
    server.process.send_signal(signal.SIGTERM)
    worker.join(timeout=120)
    assert result == {"status": 200, "rows": 120}
    # uvicorn re-raises the signal once drained, so the exit says "ended by SIGTERM" (or 0).
    assert server.process.wait(timeout=30) in (0, -signal.SIGTERM)
    assert "Finished server process" in server.stderr()
    # Once drained, the port is closed.
    try:
        httpx.post(server.url + "/v1/predict/single", json=GUIDE_SINGLE, timeout=2)
        raise AssertionError("the server still answers after shutdown")
    except httpx.ConnectError:
        pass


def test_kronos_serve_console_script(tmp_path):
    """The README's run command is `kronos-serve`; present once the package is installed."""
    import shutil

    script = shutil.which("kronos-serve")
    if script is None:
        pyproject = (ROOT / "pyproject.toml").read_text()
        assert 'kronos-serve = "services.kronos_fastapi.__main__:main"' in pyproject
        return
    result = subprocess.run([script, "--help"], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "kronos-serve" in result.stdout
