"""The page's Jobs panel, used as a person would: Debian's chromium (test_page_browser.py's browser, visits and
checks) against real servers on loopback ports with the bundled model, one with jobs (its store in a
temporary folder, a low upload limit) and one with KRONOS_JOBS_ENABLED=false.

A universe CSV of real candles (GOOG, EURUSD and a slice of GOOG) is uploaded from the file input; the
panel follows the job to its end, and its download is the results CSV with every id's pred_len rows.
Bad uploads show the server's own message; the Cancel button stops a running job; without jobs there is
no panel. Screenshots go to ``test-artifacts/page/``.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pandas as pd
import pytest
from backtesting.test import EURUSD, GOOG
from test_page_browser import _visit as visits
from test_page_browser import browser, expect  # noqa: F401 — browser is a fixture used below

PRED_LEN = 5
UPLOAD_LIMIT_MB = 0.1  # KRONOS_JOBS_MAX_UPLOAD_MB of the jobs server: the universes below fit, the big file not
JOB_TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def servers(start_servers, tmp_path_factory):
    common = {"KRONOS_RATE_LIMIT_PER_MINUTE": "0"}
    return start_servers(
        jobs={
            **common,
            "KRONOS_JOBS_DIR": str(tmp_path_factory.mktemp("page-jobs-store")),
            "KRONOS_JOBS_MAX_UPLOAD_MB": str(UPLOAD_LIMIT_MB),
            "KRONOS_JOBS_MAX_IN_FLIGHT": "1",  # one item at a time: the cancel test's job runs for seconds
        },
        no_jobs={**common, "KRONOS_JOBS_ENABLED": "false"},
    )


@pytest.fixture
def visit(browser, servers):  # noqa: F811 — the imported fixture
    yield from visits(browser, servers["jobs"].url, 1280, 1000)


def _long(candles: pd.DataFrame, series_id: str) -> pd.DataFrame:
    """One id's rows in the long format: id, timestamps, open, high, low, close, volume."""
    rows = candles.rename(columns=str.lower)[["open", "high", "low", "close", "volume"]]
    return rows.rename_axis("timestamps").reset_index().assign(id=series_id)[["id", "timestamps", *rows.columns]]


def _universe(tmp_path: Path, name: str, parts: list[pd.DataFrame], drop: tuple[str, ...] = ()) -> Path:
    path = tmp_path / name
    pd.concat(parts).drop(columns=list(drop)).to_csv(path, index=False)
    return path


UNIVERSE = {"GOOG": GOOG.tail(120), "EURUSD": EURUSD.tail(120), "GOOG-2012": GOOG.iloc[1000:1120]}


def _submit(visit, path: Path, pred_len: int = PRED_LEN):
    """Choose ``path`` in the panel, submit, and return the POST /v1/jobs response."""
    page = visit.page
    page.set_input_files("#jobs-file", str(path))
    page.fill("#jobs-pred-len", str(pred_len))
    with page.expect_response(lambda r: r.url.endswith("/v1/jobs") and r.request.method == "POST") as answer:
        page.click("#jobs-submit")
    return answer.value


def _job_polls(visit, job_id: str) -> int:
    return sum(url.endswith(f"/v1/jobs/{job_id}") for url in visit.requests)


def test_a_universe_runs_as_a_job_and_its_results_download(visit, tmp_path, servers):
    path = _universe(tmp_path, "universe.csv", [_long(c, i) for i, c in UNIVERSE.items()])
    visit.goto()
    page = visit.page
    expect(page.locator("#jobs-panel")).to_be_visible()
    assert page.input_value("#jobs-id-column") == "id"
    assert "files up to 0.1 MiB" in page.inner_text("#jobs-limits")
    response = _submit(visit, path)
    assert response.status == 202, response.text()
    created = response.json()
    job_id = created["id"]
    # The form's fields reached the server as the job's shared settings (chromium does not show a
    # multipart body with a file to playwright, so the job says what it was sent).
    assert response.request.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert created["input"] == "csv" and created["counts"]["total"] == 3
    settings = created["settings"]
    assert (settings["id_column"], settings["timestamp_column"], settings["pred_len"]) == ("id", "timestamps", PRED_LEN)
    assert settings["rows"] == 360

    panel = page.locator("#jobs-panel")
    expect(panel).to_have_attribute("data-status", "succeeded", timeout=JOB_TIMEOUT_MS)
    assert panel.get_attribute("data-job-id") == job_id == page.inner_text("#jobs-id")
    counts = {name: panel.get_attribute(f"data-{name}") for name in ("total", "completed", "failed")}
    assert counts == {"total": "3", "completed": "3", "failed": "0"}
    assert (page.inner_text("#jobs-total"), page.inner_text("#jobs-completed")) == ("3", "3")
    assert page.inner_text("#jobs-status") == "succeeded"
    assert page.is_hidden("#jobs-cancel") and page.is_visible("#jobs-download")
    assert page.is_hidden("#jobs-error")
    # Polled about once a second, and not once more after the job finished.
    polls = _job_polls(visit, job_id)
    page.wait_for_timeout(1500)
    assert _job_polls(visit, job_id) == polls >= 1
    visit.shot("20-jobs-succeeded")

    with page.expect_download(timeout=10_000) as download:
        page.click("#jobs-download")
    assert download.value.suggested_filename == f"{job_id}-forecasts.csv"
    assert download.value.url.startswith("blob:")
    text = Path(download.value.path()).read_text()
    table = pd.read_csv(Path(download.value.path()))
    assert set(table["id"]) == set(UNIVERSE)
    assert table.groupby("id").size().to_dict() == {i: PRED_LEN for i in UNIVERSE}
    assert list(table.columns[:7]) == ["id", "timestamps", "step", "open", "high", "low", "close"]
    # the server's CSV, byte for byte (fetched through api.js, so with the tab's key when there is one)
    api = httpx.get(f"{servers['jobs'].url}/v1/jobs/{job_id}/results", params={"format": "csv"}, timeout=30)
    assert api.status_code == 200 and api.text == text
    last_goog = GOOG.index[-1]
    assert pd.Timestamp(table[table["id"] == "GOOG"]["timestamps"].iloc[0]) > last_goog
    visit.assert_clean()


def test_a_bad_upload_shows_the_servers_message(visit, tmp_path):
    visit.goto()
    page = visit.page
    error = page.locator("#jobs-error")
    page.click("#jobs-submit")  # no file yet: the page says so, nothing is sent
    expect(error).to_have_text("Choose a universe CSV file first.")
    # A table without close: the server's 422 names the column.
    no_close = _universe(tmp_path, "no-close.csv", [_long(UNIVERSE["GOOG"], "GOOG")], drop=("close",))
    response = _submit(visit, no_close)
    assert response.status == 422
    message = response.json()["error"]["message"]
    assert "missing column(s) close" in message
    expect(error).to_contain_text("The server refused the request's contents (HTTP 422")
    assert message in error.inner_text()
    assert page.get_attribute("#jobs-panel", "data-status") is None  # no job to follow
    visit.shot("21-jobs-missing-column")
    # An id column that is not there: the form's setting reaches the server.
    page.fill("#jobs-id-column", "ticker")
    universe = _universe(tmp_path, "universe.csv", [_long(UNIVERSE["GOOG"], "GOOG")])
    response = _submit(visit, universe)
    assert response.status == 422 and "missing column(s) ticker" in response.json()["error"]["message"]
    expect(error).to_contain_text("missing column(s) ticker")
    # A file over KRONOS_JOBS_MAX_UPLOAD_MB: 413, in words.
    page.fill("#jobs-id-column", "id")
    big = _universe(tmp_path, "big.csv", [_long(GOOG, f"G{i}") for i in range(3)])
    assert big.stat().st_size > UPLOAD_LIMIT_MB * 1024 * 1024
    response = _submit(visit, big)
    assert response.status == 413
    message = response.json()["error"]["message"]
    assert "KRONOS_JOBS_MAX_UPLOAD_MB" in message
    expect(error).to_contain_text("The request is too large for the server (HTTP 413")
    assert message in error.inner_text()
    visit.shot("22-jobs-too-large")
    # A good upload afterwards clears the message.
    response = _submit(visit, universe)
    assert response.status == 202, response.text()
    expect(error).to_be_hidden()
    expect(page.locator("#jobs-panel")).to_have_attribute("data-status", "succeeded", timeout=JOB_TIMEOUT_MS)
    visit.assert_clean(console=False)  # the browser logs the 413 and 422s itself


def test_cancel_stops_a_running_job(visit, tmp_path, servers):
    # 40 ids with 200 candles each, one at a time: seconds of work, cancelled after its first status
    parts = [_long(GOOG.iloc[i * 10 : i * 10 + 30], f"S{i:02d}") for i in range(40)]
    path = _universe(tmp_path, "many.csv", parts)
    visit.goto()
    page = visit.page
    response = _submit(visit, path, pred_len=200)
    assert response.status == 202, response.text()
    job_id = response.json()["id"]
    expect(page.locator("#jobs-cancel")).to_be_visible()
    with page.expect_response(f"**/v1/jobs/{job_id}/cancel") as answer:
        page.click("#jobs-cancel")
    assert answer.value.status == 200, answer.value.text()
    panel = page.locator("#jobs-panel")
    expect(panel).to_have_attribute("data-status", "cancelled", timeout=JOB_TIMEOUT_MS)
    assert int(panel.get_attribute("data-completed")) < 40 == int(panel.get_attribute("data-total"))
    assert page.is_hidden("#jobs-cancel") and page.is_visible("#jobs-download")
    assert "Cancelled" in page.inner_text("#jobs-note")
    job = httpx.get(f"{servers['jobs'].url}/v1/jobs/{job_id}", timeout=30).json()
    assert job["status"] == "cancelled" and job["counts"]["cancelled"] > 0
    visit.shot("23-jobs-cancelled")
    visit.assert_clean()


def test_no_panel_when_the_server_has_no_jobs(browser, servers):  # noqa: F811 — the imported fixture
    config = httpx.get(servers["no_jobs"].url + "/ui/config.json", timeout=10).json()
    assert config["jobs"] is False and config["jobs_max_upload_bytes"] is None
    assert httpx.get(servers["jobs"].url + "/ui/config.json", timeout=10).json()["jobs_max_upload_bytes"] == int(
        UPLOAD_LIMIT_MB * 1024 * 1024
    )
    for visit in visits(browser, servers["no_jobs"].url):
        visit.goto()
        assert visit.page.is_hidden("#jobs-panel")
        assert visit.page.is_visible("#backtest-panel")  # the rest of the page is there
        assert not any("/v1/jobs" in url for url in visit.requests)
        visit.assert_clean()


def test_the_panel_fits_a_phone(browser, servers):  # noqa: F811 — the imported fixture
    for visit in visits(browser, servers["jobs"].url, 390, 844):
        visit.goto()
        page = visit.page
        page.locator("#jobs-panel").scroll_into_view_if_needed()
        expect(page.locator("#jobs-submit")).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, "no sideways scrolling on a phone"
        visit.shot("24-jobs-phone")
        visit.assert_clean()
