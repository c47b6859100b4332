"""The built wheel carries the bundled checkpoint and the console scripts users run."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from model.checkpoints.bundled import BUNDLED_DIR

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_contains_bundled_model_and_entry_points(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("kronos_service-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    relative = BUNDLED_DIR.relative_to(ROOT).as_posix()
    for part in ("config.json", "model.safetensors", "tokenizer/config.json", "tokenizer/model.safetensors"):
        assert f"{relative}/{part}" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "kronos-forecast = model.cli:main" in scripts
    assert "kronos-fetch = model.checkpoints.fetch:main" in scripts
    assert not any(n.startswith("tests/") for n in names)
    # The forecast page's files (page, script, style, vendored chart library and its licence, example CSV).
    from services.kronos_fastapi.page import ASSETS

    for path in ASSETS.values():
        assert path.relative_to(ROOT).as_posix() in names
    # The job store's migrations, run at start-up from the installed package.
    from services.kronos_fastapi.jobs.database import MIGRATIONS

    for path in [MIGRATIONS / "env.py", *MIGRATIONS.glob("versions/v*.py")]:
        assert path.relative_to(ROOT).as_posix() in names
