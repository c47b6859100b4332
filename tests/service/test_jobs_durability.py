"""Jobs nothing loses, with real processes on SQLite: ``kill -9`` of the server while items run, then a
restart on the same KRONOS_JOBS_DIR finishes the job, every item exactly once and each the answer
/v1/predict/single gives it; a database of the first schema revision, opened by this service, keeps
its job and runs it."""

from __future__ import annotations

import json
import signal
import sqlite3
from datetime import datetime, timezone

import httpx
from conftest import ServerProcess
from jobs_support import csv_upload, result_lines, table_bodies, wait_for, wait_job, without_timing

from model.training.corpus import universe_frame
from services.kronos_fastapi.jobs.database import SQLITE_FILE, database_url, migrate, open_engine

ENV = {
    "KRONOS_RATE_LIMIT_PER_MINUTE": "0",
    "KRONOS_JOBS_LEASE_S": "2",  # a killed holder's items are taken over 2 s after its last renewal
    "KRONOS_JOBS_MAX_IN_FLIGHT": "2",  # slow enough to be killed mid-job
}


def _server(tmp_path, name: str, jobs_dir, **env) -> ServerProcess:
    return ServerProcess(tmp_path / name, {**ENV, "KRONOS_JOBS_DIR": str(jobs_dir), **env}).wait_started()


def test_kill_9_mid_job_then_a_restart_finishes_it_every_item_once(tmp_path):
    jobs_dir = tmp_path / "jobs"
    df = universe_frame(50, 80)
    first = _server(tmp_path, "first", jobs_dir, KRONOS_INSTANCE_NAME="first")
    try:
        with httpx.Client(base_url=first.url, timeout=60) as client:
            created = client.post("/v1/jobs", files=csv_upload(df), data={"pred_len": "20", "seed": "7"})
            assert created.status_code == 202, created.text
            job_id = created.json()["id"]

            def counts() -> dict:
                return client.get(f"/v1/jobs/{job_id}").json()["counts"]

            wait_for(lambda: counts()["completed"] >= 8, what="8 items done", every=0.02)
            so_far = result_lines(client, job_id)  # the results while it runs: what is done so far
            assert 8 <= len(so_far) < 50 and len({line["custom_id"] for line in so_far}) == len(so_far)
            # Kill the moment items are in flight (not between two claims).
            done = wait_for(lambda: (c := counts())["running"] > 0 and c, what="items in flight", every=0.005)
            assert done["completed"] < 50, done
    finally:
        first.stop(signal.SIGKILL)  # no shutdown code runs: its leases are left as they were
    killed_at = datetime.now(timezone.utc)
    database = sqlite3.connect(jobs_dir / SQLITE_FILE)
    before = dict(database.execute("SELECT custom_id, finished_at FROM job_items WHERE status = 'succeeded'"))
    assert (
        len(before) >= 8 and database.execute("SELECT count(*) FROM job_items WHERE status = 'running'").fetchone()[0]
    )

    second = _server(tmp_path, "second", jobs_dir, KRONOS_INSTANCE_NAME="second")
    try:
        with httpx.Client(base_url=second.url, timeout=60) as client:
            job = wait_job(client, job_id, timeout=120)
            assert job["status"] == "succeeded" and job["counts"]["completed"] == 50, job
            lines = result_lines(client, job_id)
            assert sorted(line["custom_id"] for line in lines) == sorted(df["id"].unique())  # each once
            for series_id, body in table_bodies(df, 7, pred_len=20).items():
                (line,) = [line for line in lines if line["custom_id"] == series_id]
                direct = client.post("/v1/predict/single", json=body).json()
                # the same answer, whichever instance computed it (before or after the kill)
                assert without_timing(line["response"], "instance") == without_timing(direct, "instance")
    finally:
        second.stop()
    # What was done before the kill was never computed again: same rows, same finishing times.
    after = dict(database.execute("SELECT custom_id, finished_at FROM job_items WHERE status = 'succeeded'"))
    assert {k: after[k] for k in before} == before
    retried = {row[0] for row in database.execute("SELECT custom_id FROM job_items WHERE attempts > 1")}
    assert retried and retried.isdisjoint(before)  # the items in flight at the kill ran again, no finished one
    owners = {row[0] for row in database.execute("SELECT DISTINCT lease_owner FROM job_items")}
    assert owners <= {None, "first", "second"}
    assert datetime.fromisoformat(job["finished_at"]) > killed_at
    database.close()


def test_a_newer_service_opens_a_first_revision_database_and_keeps_its_job(tmp_path):
    jobs_dir = tmp_path / "old-jobs"
    engine = open_engine(database_url(None, jobs_dir))
    assert migrate(engine, "0001") == "0001"
    body = {"data": [[100.0, 105.0, 98.0, 102.0], [102.0, 108.0, 101.0, 107.0]], "pred_len": 3, "seed": 11}
    now = "2026-01-01 00:00:00.000000"
    with engine.begin() as connection:  # rows as the service of revision 0001 wrote them
        connection.exec_driver_sql(
            "INSERT INTO jobs (id, owner, kind, status, model, input, settings, total, created_at) "
            f"VALUES ('job_old', '', 'forecast', 'queued', NULL, 'json', '{{}}', 2, '{now}')"
        )
        for idx in range(2):
            connection.exec_driver_sql(
                "INSERT INTO job_items (job_id, idx, custom_id, model, status, request) VALUES "
                f"('job_old', {idx}, 'old-{idx}', 'kronos-demo', 'queued', '{json.dumps(body)}')"
            )
    engine.dispose()
    server = _server(tmp_path, "newer", jobs_dir)
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            assert client.get("/v1/readyz").json()["jobs"]["schema_revision"] == "0002"
            job = wait_job(client, "job_old", timeout=60)
            assert job["status"] == "succeeded" and job["counts"]["completed"] == 2
            lines = result_lines(client, "job_old")
            assert [line["custom_id"] for line in lines] == ["old-0", "old-1"]
            direct = client.post("/v1/predict/single", json=body).json()
            assert without_timing(lines[0]["response"]) == without_timing(direct)
    finally:
        server.stop()


def test_a_graceful_stop_gives_the_items_in_flight_back_at_once(tmp_path):
    jobs_dir = tmp_path / "jobs"
    df = universe_frame(20, 80)
    server = _server(tmp_path, "graceful", jobs_dir, KRONOS_JOBS_LEASE_S="600")  # no waiting for a lease
    with httpx.Client(base_url=server.url, timeout=60) as client:
        job_id = client.post("/v1/jobs", files=csv_upload(df), data={"pred_len": "20", "seed": "1"}).json()["id"]
        wait_for(lambda: client.get(f"/v1/jobs/{job_id}").json()["counts"]["completed"] >= 3, what="3 items done")
    assert server.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
    database = sqlite3.connect(jobs_dir / SQLITE_FILE)
    statuses = dict(database.execute("SELECT status, count(*) FROM job_items GROUP BY status"))
    assert "running" not in statuses and statuses.get("queued", 0) > 0, statuses  # given back, not held
    assert database.execute("SELECT max(attempts) FROM job_items WHERE status = 'queued'").fetchone()[0] == 0
    again = _server(tmp_path, "again", jobs_dir, KRONOS_JOBS_LEASE_S="600")
    try:
        with httpx.Client(base_url=again.url, timeout=60) as client:
            job = wait_job(client, job_id, timeout=60)  # at once: no lease of 600 s to wait out
            assert job["status"] == "succeeded" and job["counts"]["completed"] == 20
    finally:
        again.stop()
    assert database.execute("SELECT max(attempts) FROM job_items").fetchone()[0] == 1  # no stop counted as a crash
    database.close()
