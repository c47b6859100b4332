"""What ``kronos-serve`` prints: that it listens only once the port is bound, so a port already taken
reads as uvicorn's bind error and exit status 3, not as "listening on" followed by an error."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from conftest import ROOT


def test_listening_is_said_once_bound(server):
    assert f"Kronos service listening on http://127.0.0.1:{server.port}" in server.stdout()


def test_a_taken_port_is_an_error_without_a_listening_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = {k: v for k, v in os.environ.items() if not k.startswith("KRONOS_")}
        env.update(
            {
                "KRONOS_HOST": "127.0.0.1",
                "KRONOS_PORT": str(taken.getsockname()[1]),
                "KRONOS_JOBS_ENABLED": "false",
                "PYTHONPATH": str(ROOT),
            }
        )
        result = subprocess.run(
            [sys.executable, "-m", "services.kronos_fastapi"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 3, result.stdout + result.stderr
    assert "listening on" not in result.stdout and "starting on" not in result.stdout
    assert "address already in use" in (result.stdout + result.stderr).lower()
