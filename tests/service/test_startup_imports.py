"""``kronos-serve --help`` and settings errors answer before torch (seconds to import) is loaded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Runs the entry point in-process, then reports whether torch was imported on the way.
PROBE = """
import sys
from services.kronos_fastapi.__main__ import main
try:
    code = main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
print("torch loaded:", "torch" in sys.modules, "code:", code)
"""


def _probe(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KRONOS_")}
    clean["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), clean.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**clean, **env},
    )


def test_help_does_not_import_torch():
    out = _probe("--help")
    assert "usage: kronos-serve" in out.stdout
    assert "torch loaded: False code: 0" in out.stdout


def test_a_bad_setting_is_reported_before_torch_loads():
    out = _probe(KRONOS_PORT="eighty")
    assert "KRONOS_PORT" in out.stderr
    assert "torch loaded: False code: 2" in out.stdout
    out = _probe("--device", "tpu")
    assert "tpu" in out.stderr and "torch loaded: False code: 2" in out.stdout
