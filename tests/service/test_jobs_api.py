"""/v1/jobs in-process, on SQLite: every input (JSON, JSONL, CSV, Parquet), each item's answer equal to
what its route answers, per-id seeds as predict_df's, the results formats, listing, cancel, delete,
owners, limits, retention, a store that cannot be reached, and the switch."""

from __future__ import annotations

import io
import json
import time
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from conftest import LiveApp, assert_error
from jobs_support import csv_upload, result_lines, table_bodies, wait_job, without_timing

from model.decoding.table import series_seed
from model.training.corpus import universe_frame
from services.kronos_fastapi import create_app, load_settings
from services.kronos_fastapi.jobs.store import utcnow

ROWS = [[100.0, 105.0, 98.0, 102.0], [102.0, 108.0, 101.0, 107.0], [107.0, 109.0, 104.0, 105.0]]


def _app(tmp_path_factory, name: str, **settings) -> LiveApp:
    folder = tmp_path_factory.mktemp(name)
    options = {"rate_limit_per_minute": 0, "jobs_dir": folder, "instance_name": f"jobs-{name}", **settings}
    app = create_app(load_settings(env_file=None, **options))
    live = LiveApp(app).wait_ready()
    live.app = app  # its job store, for the tests that move the clock
    return live


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    live = _app(tmp_path_factory, "api")
    yield live
    live.close()


def _done(app, response) -> dict:
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    return wait_job(app, job["id"])


def test_a_json_job_answers_each_item_as_its_route_does(app):
    items = [{"custom_id": f"s{i}", "data": ROWS, "pred_len": 4, "seed": i, "sample_count": 3} for i in range(4)]
    items.append({"custom_id": "banded", "body": {"data": ROWS, "pred_len": 3, "sample_count": 4, "quantiles": [0.2]}})
    items.append({"custom_id": "bad", "data": [[1, 2]]})
    items.append({"custom_id": "unknown-model", "data": ROWS, "model": "nope"})
    created = app.post("/v1/jobs", json={"kind": "forecast", "items": items})
    assert created.status_code == 202
    job = created.json()
    assert job["id"].startswith("job_") and len(job["id"]) >= 4 + 32  # 192 random bits
    assert job["counts"]["total"] == 7 and job["counts"]["failed"] == 2  # refused at once, the rest queued
    job = wait_job(app, job["id"])
    assert job["status"] == "succeeded" and job["counts"]["completed"] == 5 and job["counts"]["failed"] == 2
    assert job["started_at"] and job["finished_at"] and job["expires_at"] > job["finished_at"]
    lines = result_lines(app, job["id"])
    assert [line["custom_id"] for line in lines] == [item["custom_id"] for item in items]
    for item, line in zip(items, lines):
        body = item.get("body") or {k: v for k, v in item.items() if k != "custom_id"}
        if "response" in line and "seed" not in body:  # drawn, as predict draws one; reported
            body = {**body, "seed": line["response"]["seed"]}
        direct = app.post("/v1/predict/single", json=body)
        if direct.status_code == 200:
            assert without_timing(line["response"]) == without_timing(direct.json())
        else:
            assert line["error"] == direct.json()["error"]
    assert lines[-2]["error"]["type"] == "validation_error" and "data[0]" in lines[-2]["error"]["message"]


def test_a_backtest_job_and_its_windows_table(app):
    history = [[100 + i, 101 + i, 99 + i, 100.5 + i] for i in range(40)]
    items = [{"custom_id": "a", "data": history, "pred_len": 3, "windows": 3, "seed": 5}]
    job = _done(app, app.post("/v1/jobs", json={"kind": "backtest", "items": items}))
    assert job["kind"] == "backtest" and job["status"] == "succeeded"
    (line,) = result_lines(app, job["id"])
    body = {k: v for k, v in items[0].items() if k != "custom_id"}
    assert without_timing(line["response"]) == without_timing(app.post("/v1/backtest", json=body).json())
    windows = pd.read_csv(io.StringIO(app.get(f"/v1/jobs/{job['id']}/results?format=csv").text))
    assert list(windows.columns) == ["id", "window", "origin", "timestamp", "seed", "mae"] and len(windows) == 3
    assert_error(app.get(f"/v1/jobs/{job['id']}/results?format=csv&table=forecasts"), 422, "validation_error")


def test_a_table_upload_forecasts_each_id_with_its_series_seed_as_predict_df_does(app, predictor):
    df = universe_frame(4, 60)
    bad = df["id"] == df["id"].iloc[-1]
    df.loc[bad[bad].index[3], "close"] = np.nan  # this id fails alone, with its row named
    shared = {"pred_len": "4", "sample_count": "3", "quantiles": "0.1,0.9", "seed": "42", "T": "1.0", "top_p": "0.9"}
    job = _done(app, app.post("/v1/jobs", files=csv_upload(df), data=shared))
    assert job["input"] == "csv" and job["counts"] == {**job["counts"], "total": 4, "completed": 3, "failed": 1}
    assert job["settings"]["seed"] == 42 and job["settings"]["id_column"] == "id"
    lines = {line["custom_id"]: line for line in result_lines(app, job["id"])}
    assert "NaN" in lines[df["id"].iloc[-1]]["error"]["message"]
    # Each item is the predict route's answer for that id's rows with the seed series_seed(42, id) ...
    bodies = table_bodies(df[~bad], 42, pred_len=4, sample_count=3, quantiles=[0.1, 0.9], T=1.0, top_p=0.9)
    for series_id, body in bodies.items():
        assert lines[series_id]["response"]["seed"] == series_seed(42, series_id)
        assert without_timing(lines[series_id]["response"]) == without_timing(
            app.post("/v1/predict/single", json=body).json()
        )
    # ... and the table is predict_df's (clean candles, as the service sends them), to 7 digits.
    table = pd.read_parquet(io.BytesIO(app.get(f"/v1/jobs/{job['id']}/results?format=parquet").content))
    expected = predictor.predict_df(
        df[~bad], pred_len=4, sample_count=3, quantiles=[0.1, 0.9], seed=42, clean=True, T=1.0, top_p=0.9
    )
    assert list(table.columns) == list(expected.columns)
    assert (table["id"] == expected["id"]).all() and (table["timestamps"] == expected["timestamps"]).all()
    numbers = [c for c in expected.columns if c not in ("id", "timestamps", "step")]
    np.testing.assert_allclose(table[numbers].to_numpy(float), expected[numbers].to_numpy(float), rtol=2e-6)
    errors = pd.read_csv(io.StringIO(app.get(f"/v1/jobs/{job['id']}/results?format=csv&table=errors").text))
    assert list(errors["id"]) == [df["id"].iloc[-1]] and errors["type"].iloc[0] == "validation_error"


def test_parquet_and_jsonl_uploads(app):
    df = universe_frame(2, 40)
    buffer = io.BytesIO()
    df.rename(columns={"id": "symbol", "timestamps": "date"}).to_parquet(buffer)
    fields = {"id_column": "symbol", "timestamp_column": "date", "pred_len": "3"}
    job = _done(app, app.post("/v1/jobs", files={"file": ("u.parquet", buffer.getvalue())}, data=fields))
    assert job["input"] == "parquet" and job["counts"]["completed"] == 2
    seed = job["settings"]["seed"]  # drawn and kept: a restart or a rerun gives the same numbers
    assert isinstance(seed, int) and 0 <= seed < 2**53
    table = pd.read_csv(io.StringIO(app.get(f"/v1/jobs/{job['id']}/results?format=csv").text))
    assert list(table.columns) == ["id", "timestamps", "step", "open", "high", "low", "close", "volume"]
    lines = [json.dumps({"custom_id": f"l{i}", "body": {"data": ROWS, "pred_len": 2, "seed": i}}) for i in range(3)]
    upload = {"file": ("items.jsonl", ("\n".join(lines) + "\n").encode(), "application/octet-stream")}
    job = _done(app, app.post("/v1/jobs", files=upload))
    assert job["input"] == "jsonl" and job["counts"]["completed"] == 3
    assert [line["custom_id"] for line in result_lines(app, job["id"])] == ["l0", "l1", "l2"]


def test_what_cannot_be_read_is_refused_at_once_naming_why(app):
    def refused(status, error_type, **request):
        return assert_error(app.post("/v1/jobs", **request), status, error_type)["message"]

    assert "malformed JSON" in refused(400, "invalid_json", content=b"{", headers={"content-type": "application/json"})
    assert "items" in refused(422, "validation_error", json={"items": []})
    assert "custom_id" in refused(422, "validation_error", json={"items": [{"data": ROWS}]})
    assert "used twice" in refused(422, "validation_error", json={"items": [{"custom_id": "a"}, {"custom_id": "a"}]})
    assert "kind" in refused(422, "validation_error", json={"kind": "train", "items": [{"custom_id": "a"}]})
    assert "unknown model" in refused(422, "validation_error", json={"model": "x", "items": [{"custom_id": "a"}]})
    as_csv = {"content": b"a,b", "headers": {"content-type": "text/csv"}}
    assert "Content-Type" in refused(415, "unsupported_media_type", **as_csv)
    assert "format" in refused(415, "unsupported_media_type", files={"file": ("x.bin", b"\x00\x01")})
    assert "CSV" in refused(422, "validation_error", files={"file": ("x.csv", b'"\n\x00')}, data={"pred_len": "3"})
    missing = refused(422, "validation_error", files={"file": ("x.csv", b"id,timestamps,open\na,2024-01-01,1\n")})
    assert "missing column" in missing and "close" in missing
    df = universe_frame(2, 30)
    assert "pred_len" in refused(422, "validation_error", files=csv_upload(df), data={"pred_len": "many"})
    assert "KRONOS_MAX_PRED_LEN" in refused(422, "validation_error", files=csv_upload(df), data={"pred_len": "9999"})
    assert "pred_lenn" in refused(422, "validation_error", files=csv_upload(df), data={"pred_lenn": "3"})
    assert "line 1" in refused(422, "validation_error", files={"file": ("a.jsonl", b"{\n")})


def test_a_bad_jsonl_line_fails_that_item_only(app):
    good = [json.dumps({"custom_id": f"g{i}", "body": {"data": ROWS, "pred_len": 2, "seed": i}}) for i in range(2)]
    bad_body = json.dumps({"custom_id": "short", "body": {"data": ROWS, "pred_len": 0}})
    text = "\n".join([good[0], "{not json", bad_body, good[1]]) + "\n"
    job = _done(app, app.post("/v1/jobs", files={"file": ("items.jsonl", text.encode())}))
    assert (job["counts"]["total"], job["counts"]["completed"], job["counts"]["failed"]) == (4, 2, 2)
    lines = {line["custom_id"]: line for line in result_lines(app, job["id"])}
    assert set(lines) == {"g0", "g1", "short", "line-2"}
    assert "response" in lines["g0"] and "response" in lines["g1"]
    assert "malformed JSON" in lines["line-2"]["error"]["message"]
    assert "pred_len" in lines["short"]["error"]["message"]


def test_listing_pages_newest_first_and_filters_by_status(app):
    ids = [
        app.post("/v1/jobs", json={"items": [{"custom_id": "x", "data": ROWS, "pred_len": 1}]}).json()["id"]
        for _ in range(3)
    ]
    for job_id in ids:
        wait_job(app, job_id)
    first = app.get("/v1/jobs?limit=2").json()
    assert [j["id"] for j in first["jobs"]] == ids[::-1][:2] and first["has_more"]
    second = app.get(f"/v1/jobs?limit=2&after={first['next_after']}").json()
    assert second["jobs"][0]["id"] == ids[0]
    assert all(j["status"] == "succeeded" for j in app.get("/v1/jobs?status=succeeded&limit=100").json()["jobs"])
    assert_error(app.get("/v1/jobs?status=nope"), 422, "validation_error")
    assert_error(app.get("/v1/jobs?after=job_unknown"), 422, "validation_error")
    assert app.request("DELETE", f"/v1/jobs/{ids[0]}").status_code == 204
    assert_error(app.get(f"/v1/jobs/{ids[0]}"), 404, "not_found")
    assert_error(app.get(f"/v1/jobs/{ids[0]}/results"), 404, "not_found")
    assert_error(app.request("DELETE", f"/v1/jobs/{ids[0]}"), 404, "not_found")


def test_cancel_stops_what_runs_and_keeps_what_is_done(app):
    long = [[100 + i % 7, 102 + i % 7, 99 + i % 7, 101 + i % 7] for i in range(200)]
    items = [{"custom_id": f"c{i}", "data": long, "pred_len": 200, "seed": i} for i in range(40)]
    job = app.post("/v1/jobs", json={"items": items}).json()
    wait_job(app, job["id"], statuses=("running",))
    cancelled = app.post(f"/v1/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] in ("cancelling", "cancelled")
    job = wait_job(app, job["id"], timeout=30)
    assert job["status"] == "cancelled"
    counts = job["counts"]
    assert counts["cancelled"] > 0 and counts["completed"] + counts["cancelled"] + counts["failed"] == 40
    assert len(result_lines(app, job["id"])) == counts["completed"]  # what was done stays
    assert app.post(f"/v1/jobs/{job['id']}/cancel").json()["status"] == "cancelled"  # again: no change
    done = _done(app, app.post("/v1/jobs", json={"items": [{"custom_id": "x", "data": ROWS, "pred_len": 1}]}))
    assert_error(app.post(f"/v1/jobs/{done['id']}/cancel"), 409, "conflict")


def test_retention_expires_results_then_deletes_the_job(app):
    job = _done(app, app.post("/v1/jobs", json={"items": [{"custom_id": "x", "data": ROWS, "pred_len": 1}]}))
    store = app.app.state.jobs.store
    later = utcnow() + timedelta(hours=168, minutes=1)
    assert store.sweep(now=later)["expired"] >= 1
    expired = app.get(f"/v1/jobs/{job['id']}").json()
    assert expired["status"] == "expired" and expired["counts"]["completed"] == 1  # the counts are kept
    assert "KRONOS_JOBS_RETENTION_HOURS" in assert_error(app.get(f"/v1/jobs/{job['id']}/results"), 410)["message"]
    assert store.sweep(now=later + timedelta(hours=169))["deleted"] >= 1
    assert_error(app.get(f"/v1/jobs/{job['id']}"), 404, "not_found")


def test_metrics_and_readiness_report_the_jobs(app):
    _done(app, app.post("/v1/jobs", json={"items": [{"custom_id": "x", "data": ROWS, "pred_len": 1}]}))
    ready = app.get("/v1/readyz").json()["jobs"]
    assert ready["enabled"] and ready["database"] == "sqlite" and ready["reachable"]
    assert ready["schema_revision"] == "0002"
    time.sleep(0.1)
    text = app.get("/v1/metrics").text
    for name in ("kronos_jobs{", "kronos_jobs_backlog_items", "kronos_job_items_total{", "kronos_jobs_store_up 1.0"):
        assert name in text
    assert 'kronos_job_item_duration_seconds_count{model="' in text
    assert 'kronos_job_items_total{model="' in text and 'outcome="succeeded"' in text


def test_limits_name_their_setting_and_keys_own_their_jobs(tmp_path_factory):
    live = _app(
        tmp_path_factory,
        "limits",
        api_keys=["key-a", "key-b"],
        jobs_max_items=3,
        jobs_max_upload_mb=0.01,
        jobs_max_open_per_key=1,
    )
    a, b = {"X-API-Key": "key-a"}, {"X-API-Key": "key-b"}
    try:
        many = {"items": [{"custom_id": str(i), "data": ROWS} for i in range(4)]}
        assert "KRONOS_JOBS_MAX_ITEMS" in assert_error(live.post("/v1/jobs", json=many, headers=a), 422)["message"]
        big = {"file": ("u.csv", b"x" * 20_000, "text/csv")}
        too_big = assert_error(live.post("/v1/jobs", files=big, headers=a), 413, "payload_too_large")
        assert "KRONOS_JOBS_MAX_UPLOAD_MB" in too_big["message"]
        slow = [[100 + i % 7, 102 + i % 7, 99 + i % 7, 101 + i % 7] for i in range(100)]
        one = {"items": [{"custom_id": str(i), "data": slow, "pred_len": 200} for i in range(3)]}
        job = live.post("/v1/jobs", json=one, headers=a).json()
        second = assert_error(live.post("/v1/jobs", json=one, headers=a), 429, "too_many_jobs")
        assert "KRONOS_JOBS_MAX_OPEN_PER_KEY" in second["message"]
        assert live.post("/v1/jobs", json=one, headers=b).status_code == 202  # another key's own limit
        assert_error(live.get(f"/v1/jobs/{job['id']}", headers=b), 404, "not_found")  # not b's job
        assert_error(live.get(f"/v1/jobs/{job['id']}/results", headers=b), 404, "not_found")
        assert_error(live.post(f"/v1/jobs/{job['id']}/cancel", headers=b), 404, "not_found")
        assert job["id"] not in {j["id"] for j in live.get("/v1/jobs", headers=b).json()["jobs"]}
        assert live.get(f"/v1/jobs/{job['id']}", headers=a).status_code == 200
        assert_error(live.get(f"/v1/jobs/{job['id']}"), 401, "unauthorized")
        live.post(f"/v1/jobs/{job['id']}/cancel", headers=a)
    finally:
        live.close()


def test_an_unreachable_store_is_a_503_while_predict_serves(tmp_path_factory):
    from conftest import free_port

    url = f"postgresql://kronos:secret@127.0.0.1:{free_port()}/kronos"  # nothing listens there
    live = _app(tmp_path_factory, "nostore", jobs_database_url=url)
    try:
        error = assert_error(live.post("/v1/jobs", json={"items": [{"custom_id": "a"}]}), 503, "job_store_unavailable")
        assert "postgresql+psycopg://kronos:***@127.0.0.1" in error["message"] and "secret" not in error["message"]
        assert live.post("/v1/predict/single", json={"data": ROWS, "pred_len": 2}).status_code == 200
        ready = live.get("/v1/readyz")
        assert ready.status_code == 200 and ready.json()["jobs"]["reachable"] is False
        assert "secret" not in ready.text
    finally:
        live.close()


def test_jobs_can_be_switched_off(tmp_path_factory):
    live = _app(tmp_path_factory, "off", jobs_enabled=False)
    try:
        assert_error(live.post("/v1/jobs", json={"items": [{"custom_id": "a"}]}), 404, "not_found")
        assert live.get("/v1/readyz").json()["jobs"] == {"enabled": False}
        assert "kronos_jobs" not in live.get("/v1/metrics").text
    finally:
        live.close()
