"""What the job tests share: waiting for a job, reading its results, a universe's item bodies as the
service builds them from a table, and a throw-away Postgres cluster on loopback."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from model.decoding.table import series_seed

FINISHED = ("succeeded", "failed", "cancelled", "expired")


def wait_job(client, job_id: str, statuses=FINISHED, timeout: float = 90.0, headers: dict | None = None) -> dict:
    """The job once its status is one of ``statuses`` (fails after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/jobs/{job_id}", headers=headers or {}).json()
        if job.get("status") in statuses:
            return job
        assert time.monotonic() < deadline, f"job never reached {statuses}: {job}"
        time.sleep(0.05)


def wait_for(condition, timeout: float = 60.0, what: str = "the condition", every: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} never held in {timeout}s"
        time.sleep(every)


def result_lines(client, job_id: str, headers: dict | None = None) -> list[dict]:
    response = client.get(f"/v1/jobs/{job_id}/results", headers=headers or {})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in response.text.splitlines() if line]


def without_timing(body: dict, *also: str) -> dict:
    """A response without what differs between two calls of the same forecast (and the keys ``also``)."""
    return {k: v for k, v in body.items() if k not in ("elapsed_ms", *also)}


def table_bodies(df: pd.DataFrame, seed: int, **shared: Any) -> dict[str, dict]:
    """Each id's /v1/predict/single body as a table job builds it: rows by time, open..volume, ISO
    timestamps, the shared settings and the seed series_seed(seed, id)."""
    bodies = {}
    for series_id, rows in df.groupby("id", sort=True):
        rows = rows.sort_values("timestamps", kind="stable")
        columns = [c for c in ("open", "high", "low", "close", "volume") if c in rows]
        bodies[str(series_id)] = {
            **shared,
            "data": rows[columns].astype(float).to_numpy().tolist(),
            "timestamps": [pd.Timestamp(t).isoformat() for t in rows["timestamps"]],
            "seed": series_seed(seed, series_id),
        }
    return bodies


def csv_upload(df: pd.DataFrame) -> dict:
    return {"file": ("universe.csv", df.to_csv(index=False).encode(), "text/csv")}


# --- a throw-away Postgres ------------------------------------------------------------------------


def postgres_bin() -> Path | None:
    """The folder of initdb and pg_ctl: on PATH, else Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(folder, "initdb").exists():
            return Path(folder)
    return None


class Postgres:
    """A cluster in a temporary folder on 127.0.0.1:``port``, trust authentication, run as the postgres
    user when the tests run as root (Postgres refuses root)."""

    def __init__(self, folder: Path, port: int) -> None:
        self.bin = postgres_bin()
        if self.bin is None:
            why = "PostgreSQL is not installed (initdb, pg_ctl; Debian: apt-get install postgresql)"
            if os.environ.get("KRONOS_TEST_REQUIRE_TOOLS") == "1":  # CI (.ci/run): required, never skipped
                pytest.fail(why)
            pytest.skip(why)
        self.folder, self.port = folder, port
        self.data = folder / "data"
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        folder.mkdir(parents=True, exist_ok=True)
        if self.as_user:
            shutil.chown(folder, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def _run(self, tool: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [*self.as_user, str(self.bin / tool), *args], capture_output=True, text=True, timeout=timeout
        )
        assert result.returncode == 0, f"{tool} failed: {result.stdout}\n{result.stderr}"
        return result

    def start(self) -> Postgres:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.folder / "postgres.log"), "-w", "start")
        return self

    def stop(self) -> None:
        subprocess.run(
            [*self.as_user, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            timeout=60,
        )
