"""The house's rooms (ARCHITECTURE.md): the import contracts in pyproject.toml hold, a forbidden import or an
import circle breaks them, and no module grows past 400 lines."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 400
LINT = [
    sys.executable,
    "-c",
    "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())",
]


def lint(root: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` on the packages under ``root`` (they shadow the installed ones)."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([*LINT, "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=120)


def test_the_import_contracts_hold():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.fixture
def copy_of_the_house(tmp_path):
    for package in ("model", "services"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__", "bundled"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


@pytest.mark.parametrize(
    ("module", "planted", "broken"),
    [
        ("model/nn/layers.py", "import model.decoding.sampling", "nn imports neither decoding"),
        ("model/series/candles.py", "import fastapi", "model never imports the service or a web stack"),
        ("model/checkpoints/hub.py", "import model.nn.config", "model's rooms are layered"),
        ("model/decoding/sampling.py", "import model.decoding.pipeline", "no import circle"),
        ("services/kronos_fastapi/routes/predict.py", "import model.nn.predictor", "routes do not reach into"),
    ],
)
def test_a_planted_import_breaks_its_contract(copy_of_the_house, module, planted, broken):
    path = copy_of_the_house / module
    path.write_text(path.read_text() + f"\n{planted}  # planted by the test\n")
    result = lint(copy_of_the_house)
    assert result.returncode != 0
    broken_lines = [line for line in result.stdout.splitlines() if "BROKEN" in line or broken in line]
    assert any(broken in line for line in broken_lines), result.stdout


def test_no_module_past_400_lines():
    long = {}
    for package in ("model", "services"):
        for path in (ROOT / package).rglob("*"):
            if path.suffix in (".py", ".js") and "vendor" not in path.parts:
                lines = len(path.read_text().splitlines())
                if lines > MAX_LINES:
                    long[str(path.relative_to(ROOT))] = lines
    assert not long, f"modules over {MAX_LINES} lines (split them where they hold two things): {long}"
