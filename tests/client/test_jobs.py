"""Jobs through the client against a real server: submit → wait → results → cancel, the context manager,
uploads, listing, deleting, and ``forecast_many`` through a job giving the batch path's numbers.

Skipped, with the reason, only while the checkout's service has no ``/v1/jobs`` (its OpenAPI lists none).
"""

from __future__ import annotations

import pandas as pd
import pytest
from client_support import jobs_available
from kronos_client import Client, IncompatibleServer, Job, NotFound

JOB_WAIT_S = 180  # every wait on a job is bounded: a stuck job fails the test, never hangs CI


@pytest.fixture(scope="module", autouse=True)
def _needs_jobs(main_server):
    available, reason = jobs_available(main_server)
    if not available:
        pytest.skip(reason)


def test_submit_wait_results(kronos, universe, capsys):
    job = kronos.submit_job(universe, pred_len=4, sample_count=4, quantiles=(0.1, 0.9), seed=21)
    assert isinstance(job, Job) and job.id and job.seed == 21
    assert job.status()["status"] in ("queued", "running", "succeeded")
    final = job.wait(progress=True, timeout=JOB_WAIT_S)
    assert final["status"] == "succeeded" and final["counts"]["completed"] == 10 and final["counts"]["total"] == 10
    assert "10/10" in capsys.readouterr().err  # the bar (tqdm's, or the plain line) counted the items
    frame = job.results()
    batch = kronos.forecast_many(universe, 4, sample_count=4, quantiles=(0.1, 0.9), seed=21, via="batch")
    pd.testing.assert_frame_equal(frame, batch)  # the same numbers as the batch route: per-id seeds
    records = job.results(format="jsonl")
    assert sorted(r["custom_id"] for r in records) == sorted(universe["id"].unique())
    assert all("response" in r for r in records)
    table = job.results(format="csv")
    assert list(table["id"].unique()) == sorted(universe["id"].unique()) and len(table) == 40


def test_forecast_many_through_a_job_is_the_batch_path(kronos, universe):
    via_job = kronos.forecast_many(universe, 3, seed=4, via="job")
    via_batch = kronos.forecast_many(universe, 3, seed=4, via="batch")
    pd.testing.assert_frame_equal(via_job, via_batch)
    auto = kronos.forecast_many(universe, 3, seed=4, job_threshold=5)  # 10 series > 5: a job, by itself
    pd.testing.assert_frame_equal(auto, via_batch)


@pytest.mark.parametrize("upload", ["csv", "parquet", "jsonl"])
def test_uploads_give_the_same_results(kronos, universe, upload):
    job = kronos.submit_job(universe, pred_len=3, sample_count=2, seed=8, upload=upload)
    job.wait(progress=False, timeout=JOB_WAIT_S)
    frame = job.results()
    expected = kronos.forecast_many(universe, 3, sample_count=2, seed=8)
    pd.testing.assert_frame_equal(frame[expected.columns], expected, check_dtype=False)


def test_a_bad_item_fails_alone(kronos, universe):
    broken = universe.copy()
    row = broken.index[broken["id"] == "GOOG-2"][0]
    broken.loc[row, "high"] = broken.loc[row, "low"] / 2
    job = kronos.submit_job(broken, pred_len=3, seed=1)
    final = job.wait(progress=False, timeout=JOB_WAIT_S)
    assert final["counts"]["failed"] == 1 and final["counts"]["completed"] == 9
    frame = job.results()
    assert set(frame.attrs["errors"]) == {"GOOG-2"} and "GOOG-2" not in set(frame["id"])


def test_cancel_keeps_what_is_done(kronos, goog):
    frames = {f"long-{i}": goog for i in range(12)}
    job = kronos.submit_job(frames, pred_len=200, sample_count=8, seed=3)
    with pytest.raises(TimeoutError, match=job.id):
        job.wait(progress=False, timeout=0.3)  # the job goes on; the wait ends
    info = job.cancel()
    assert info["status"] in ("cancelling", "cancelled")
    final = job.wait(progress=False, timeout=JOB_WAIT_S)
    assert final["status"] == "cancelled"
    assert final["counts"]["completed"] < 12
    assert len(job.results(format="jsonl")) == final["counts"]["completed"] + final["counts"]["failed"]


def test_the_with_block_cancels_the_job_when_it_raises(kronos, goog):
    frames = {f"slow-{i}": goog for i in range(12)}
    with pytest.raises(KeyError):
        with kronos.submit_job(frames, pred_len=200, sample_count=8, seed=3) as job:
            raise KeyError("the notebook cell failed")
    assert job.status()["status"] in ("cancelling", "cancelled")
    with kronos.submit_job({"one": goog}, pred_len=2, seed=3) as done:  # no error: left as it is
        pass
    assert done.wait(progress=False, timeout=JOB_WAIT_S)["status"] == "succeeded"


def test_list_get_delete_and_other_keys(kronos, main_server, goog):
    job = kronos.submit_job({"a": goog}, pred_len=2, seed=1)
    job.wait(progress=False, timeout=JOB_WAIT_S)
    listed = kronos.jobs(limit=50)
    assert job.id in [j["id"] for j in listed["jobs"]]
    again = kronos.job(job.id)
    assert again.status()["id"] == job.id and again.results()["id"].tolist() == ["a", "a"]
    job.delete()
    with pytest.raises(NotFound):
        job.status()
    with pytest.raises(NotFound):
        kronos.job("job_" + "0" * 48)


def test_a_server_without_jobs_is_told_apart(tight_server, goog):
    """The tight server runs with KRONOS_JOBS_ENABLED=false: the call says so before sending anything."""
    with Client(tight_server.url, api_key="load") as kronos:
        with pytest.raises(IncompatibleServer, match="/v1/jobs"):
            kronos.submit_job({"a": goog}, pred_len=2)
