"""Start-up and shutdown of the real process: bad settings stop it with the variable's name, the
model loads in the background, and SIGTERM drains in-flight requests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

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


def test_required_keys_missing_refuse_to_start(tmp_path):
    # A deployment whose keys come from a Secret sets KRONOS_REQUIRE_API_KEYS: an empty or missing
    # Secret then stops the process (the pod restarts, and says why) instead of serving an open API.
    result = _run_cli(tmp_path, KRONOS_REQUIRE_API_KEYS="true", KRONOS_API_KEYS=" , ")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "KRONOS_REQUIRE_API_KEYS is true but KRONOS_API_KEYS is empty" in result.stderr


def test_a_hung_model_load_ends_the_process_so_it_is_restarted(tmp_path):
    """A download that hangs would leave the instance unready for ever (nothing restarts a live
    process): past KRONOS_MODEL_LOAD_TIMEOUT_S it exits with status 75, saying why."""
    started = time.monotonic()
    process = subprocess.run(
        [sys.executable, FAULTY],
        cwd=tmp_path,
        env={**ENV, "KRONOS_PORT": "0", "KRONOS_MODEL_LOAD_TIMEOUT_S": "1", "FAULTY_LOAD_HANG_S": "60"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert process.returncode == 75, process.stderr[-2000:]
    assert "took longer than 1 s (KRONOS_MODEL_LOAD_TIMEOUT_S)" in process.stderr
    assert time.monotonic() - started < 30  # not the 60 s hang


def test_help_lists_the_flags(tmp_path):
    result = _run_cli(tmp_path, "--help")
    assert result.returncode == 0
    for flag in ("--host", "--port", "--device", "--model"):
        assert flag in result.stdout


FAULTY = str(Path(__file__).with_name("faulty_server.py"))
# Seed 21 makes the faulty server sleep 0.05 s per decode step: 100 candles take at least 5 s.
SLOW = {"data": [[100, 101, 99, 100.5]] * 100, "pred_len": 100, "sample_count": 2, "seed": 21}


def _in_flight(server, count: int = 2) -> None:
    """Until ``count`` requests are in flight (the metrics request itself among them)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if f"kronos_http_requests_in_flight {count:.1f}" in httpx.get(server.url + "/v1/metrics").text:
            return
        time.sleep(0.02)
    raise AssertionError("the forecast never reached the server")


def test_sigterm_lets_a_long_forecast_finish_and_answers_past_the_drain_with_json(start_servers):
    """SIGTERM with a forecast of several seconds in flight: with the default drain (longer than the
    request timeout) it gets its 200; with a drain shorter than the forecast it gets the JSON 503
    envelope at the drain's end, never uvicorn's plain-text 500. Both processes then exit by themselves."""
    open_door = {"KRONOS_RATE_LIMIT_PER_MINUTE": "0", ".main": FAULTY}
    servers = start_servers(drain=open_door, short_drain={**open_door, "KRONOS_SHUTDOWN_TIMEOUT_S": "1"})
    results: dict = {}

    def run(name: str) -> None:
        started = time.monotonic()
        response = httpx.post(servers[name].url + "/v1/predict/single", json=SLOW, timeout=120)
        results[name] = (response, time.monotonic() - started)

    workers = [threading.Thread(target=run, args=(name,)) for name in servers]
    for worker in workers:
        worker.start()
    for name in servers:
        _in_flight(servers[name])
    signalled = time.monotonic()
    for server in servers.values():
        server.process.send_signal(signal.SIGTERM)
    for worker in workers:
        worker.join(timeout=120)

    finished, took = results["drain"]
    assert finished.status_code == 200, finished.text
    assert len(finished.json()["forecast"]) == 100
    assert took > 5  # it really was decoding when the signal came

    cut, _ = results["short_drain"]
    assert cut.status_code == 503 and cut.headers["content-type"] == "application/json", cut.text
    assert cut.json()["error"]["type"] == "model_not_ready"
    assert "shutting down" in cut.json()["error"]["message"]
    for server in servers.values():
        # uvicorn re-raises the signal once drained, so the exit says "ended by SIGTERM" (or 0).
        assert server.process.wait(timeout=30) in (0, -signal.SIGTERM)
        assert "Finished server process" in server.stderr()
    assert time.monotonic() - signalled < 30
    assert "drain time is over" in servers["short_drain"].stderr()
    # Once drained, the port is closed.
    try:
        httpx.post(servers["drain"].url + "/v1/predict/single", json=GUIDE_SINGLE, timeout=2)
        raise AssertionError("the server still answers after shutdown")
    except httpx.ConnectError:
        pass


def test_the_default_drain_outlasts_the_request_timeout():
    from services.kronos_fastapi.settings import Settings

    fields = Settings.model_fields
    assert fields["shutdown_timeout_s"].default > fields["request_timeout_s"].default


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
