"""Several replicas, one Postgres (started on loopback in a temporary folder): two kronos-serve
processes share a 100-item job, one is killed with SIGKILL mid-job and the other finishes it, no item
lost or answered twice; either replica answers for the job; a database that goes away is a 503 on the
job routes while predict keeps serving, and the jobs come back with it."""

from __future__ import annotations

import shutil
import signal
import tempfile
from pathlib import Path

import httpx
import psycopg
import pytest
from conftest import ServerProcess, assert_error, free_port
from jobs_support import Postgres, csv_upload, result_lines, table_bodies, wait_for, wait_job, without_timing

from model.training.corpus import universe_frame


@pytest.fixture
def postgres():
    folder = Path(tempfile.mkdtemp(prefix="kronos-pg-"))  # outside pytest's root-only folders: postgres reads it
    cluster = Postgres(folder, free_port()).start()
    yield cluster
    cluster.stop()
    shutil.rmtree(folder, ignore_errors=True)


def _replica(tmp_path, name: str, url: str) -> ServerProcess:
    env = {
        "KRONOS_RATE_LIMIT_PER_MINUTE": "0",
        "KRONOS_INSTANCE_NAME": name,
        "KRONOS_JOBS_DATABASE_URL": url,
        "KRONOS_JOBS_LEASE_S": "3",
        "KRONOS_JOBS_MAX_IN_FLIGHT": "2",
    }
    return ServerProcess(tmp_path / name, env)


def _items(url: str) -> list[tuple]:
    with psycopg.connect(url) as connection:
        return connection.execute("SELECT custom_id, status, lease_owner, attempts FROM job_items").fetchall()


def test_two_replicas_share_a_job_and_one_finishes_what_a_killed_one_held(tmp_path, postgres):
    a, b = _replica(tmp_path, "replica-a", postgres.url), _replica(tmp_path, "replica-b", postgres.url)
    a.wait_started(), b.wait_started()
    df = universe_frame(100, 60)
    with httpx.Client(base_url=a.url, timeout=60) as to_a, httpx.Client(base_url=b.url, timeout=60) as to_b:
        try:
            created = to_a.post("/v1/jobs", files=csv_upload(df), data={"pred_len": "12", "seed": "3"})
            assert created.status_code == 202, created.text
            job_id = created.json()["id"]
            # Both replicas work on it: each has answered items or holds some.
            wait_for(
                lambda: (
                    {"replica-a", "replica-b"} <= {owner for _, status, owner, _ in _items(postgres.url)}
                    and to_b.get(f"/v1/jobs/{job_id}").json()["counts"]["completed"] >= 20
                ),
                what="both replicas working, 20 items done",
                every=0.05,
            )
            assert to_a.get(f"/v1/jobs/{job_id}").json()["id"] == to_b.get(f"/v1/jobs/{job_id}").json()["id"]
        finally:
            a.stop(signal.SIGKILL)
        # What the dead replica held: frozen until its leases (3 s) run out.
        held = {row[0] for row in _items(postgres.url) if row[1] == "running" and row[2] == "replica-a"}
        job = wait_job(to_b, job_id, timeout=120)
        assert job["status"] == "succeeded" and job["counts"]["completed"] == 100, job
        lines = result_lines(to_b, job_id)
        assert sorted(line["custom_id"] for line in lines) == sorted(df["id"].unique())  # none lost, none twice
        rows = _items(postgres.url)
        assert all(status == "succeeded" for _, status, _, _ in rows)
        by_id = {custom_id: (owner, attempts) for custom_id, _, owner, attempts in rows}
        for custom_id in held:  # what the killed replica held, the other one took over and answered
            assert by_id[custom_id][0] == "replica-b" and by_id[custom_id][1] >= 2, by_id[custom_id]
        bodies = table_bodies(df, 3, pred_len=12)
        for line in lines[::10]:
            direct = to_b.post("/v1/predict/single", json=bodies[line["custom_id"]]).json()
            assert without_timing(line["response"], "instance") == without_timing(direct, "instance")

        # The database goes away: the job routes say so, predict keeps serving, readiness stays.
        postgres.stop()
        gone = assert_error(to_b.get(f"/v1/jobs/{job_id}"), 503, "job_store_unavailable")
        assert "postgresql+psycopg://postgres@127.0.0.1" in gone["message"]
        predict = to_b.post("/v1/predict/single", json={"data": [[1.0, 1.1, 0.9, 1.0]] * 3, "pred_len": 2})
        assert predict.status_code == 200
        ready = to_b.get("/v1/readyz")
        assert ready.status_code == 200 and ready.json()["jobs"]["reachable"] is False
        postgres.start()
        back = wait_for(lambda: (r := to_b.get(f"/v1/jobs/{job_id}")).status_code == 200 and r, what="jobs back")
        assert back.json()["status"] == "succeeded"
        assert wait_for(lambda: to_b.get("/v1/readyz").json()["jobs"]["reachable"], what="readyz says reachable")
    b.stop()
