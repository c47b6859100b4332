"""The forecast page at ``/``, used as a person would: Debian's chromium, driven by playwright, against a
real server on a loopback port with the bundled model.

Every test records the page's requests and console; a test fails on a request to another origin, a
script error, or (where nothing should fail) a console error, which is also how a Content-Security-
Policy violation shows. Screenshots of each state go to ``test-artifacts/page/``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from backtesting.test import EURUSD, GOOG
from conftest import ROOT

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # a skip (or, in CI, a failure) says so below
    expect = sync_playwright = None

REQUIRE_TOOLS = os.environ.get("KRONOS_TEST_REQUIRE_TOOLS") == "1"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "test-artifacts" / "page"
FORECAST_TIMEOUT_MS = 120_000
API_KEY = "page-test-key-1"

# Pixels of the forecast's own colours (its candle borders and the band's edges, #2962ff): none on the
# example chart, many once a forecast is drawn. History candles are teal and red, volume grey.
COUNT_PIXELS = """(kind) => {
  let count = 0;
  for (const canvas of document.querySelectorAll('#chart canvas')) {
    if (!canvas.width || !canvas.height) continue;
    const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    for (let i = 0; i < data.length; i += 4) {
      const [r, g, b, a] = [data[i], data[i + 1], data[i + 2], data[i + 3]];
      if (a < 200) continue;
      if (kind === 'forecast' ? b > 180 && r < 150 && b - r > 80 : r < 80 && g > 140 && b > 120 && b < 190) count++;
    }
  }
  return count;
}"""


def _missing(message: str) -> None:
    if REQUIRE_TOOLS:
        pytest.fail(f"{message} (KRONOS_TEST_REQUIRE_TOOLS=1: the page tests may not skip)")
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if sync_playwright is None:
        _missing("playwright is not installed (pip install -e '.[dev]')")
    if not Path(CHROMIUM).exists():
        _missing("chromium is not installed (apt-get install chromium)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@dataclass
class Visit:
    """A page of the browser with what it did recorded."""

    page: object
    origin: str
    requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def goto(self) -> Visit:
        self.page.goto(self.origin + "/")
        self.page.wait_for_selector("body[data-ready=true]", timeout=30_000)
        self.wait_for_pixels("history", 500)
        return self

    def wait_for_pixels(self, kind: str, more_than: int, timeout_s: float = 10.0) -> int:
        """Wait until the chart has more than ``more_than`` pixels of ``kind`` (it draws on the next frame).

        Polled from here with ``evaluate``: playwright's ``wait_for_function`` evaluates a string in the
        page, which the page's CSP (no 'unsafe-eval') rightly refuses."""
        deadline = time.monotonic() + timeout_s
        while (count := self.pixels(kind)) <= more_than:
            assert time.monotonic() < deadline, f"the chart shows {count} {kind} pixels, expected over {more_than}"
            time.sleep(0.1)
        return count

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    def pixels(self, kind: str) -> int:
        return self.page.evaluate(COUNT_PIXELS, kind)

    def forecast(self, press=None):
        """Start a forecast (by clicking, or ``press()``) and return the /v1/predict/single response."""
        with self.page.expect_response("**/v1/predict/single", timeout=FORECAST_TIMEOUT_MS) as answer:
            press() if press else self.page.click("#forecast")
        response = answer.value
        self.page.wait_for_selector("#result:not([hidden]), #message:not([hidden])", timeout=10_000)
        return response

    def assert_clean(self, console: bool = True) -> None:
        foreign = [url for url in self.requests if not url.startswith((self.origin + "/", "data:", "blob:"))]
        assert not foreign, f"requests left the page's origin: {foreign}"
        assert not self.page_errors, self.page_errors
        if console:
            assert not self.console_errors, self.console_errors


def _visit(browser, origin: str, width: int = 1280, height: int = 800) -> Iterator[Visit]:
    context = browser.new_context(viewport={"width": width, "height": height}, accept_downloads=True)
    page = context.new_page()
    visit = Visit(page, origin)
    page.on("request", lambda request: visit.requests.append(request.url))
    page.on("console", lambda message: message.type == "error" and visit.console_errors.append(message.text))
    page.on("pageerror", lambda error: visit.page_errors.append(str(error)))
    try:
        yield visit
    finally:
        context.close()


@pytest.fixture
def visit(browser, server) -> Iterator[Visit]:
    yield from _visit(browser, server.url)


@pytest.fixture(scope="module")
def keyed_server(start_servers):
    return start_servers(keyed={"KRONOS_API_KEYS": API_KEY, "KRONOS_RATE_LIMIT_PER_MINUTE": "0"})["keyed"]


def _sent(response) -> dict:
    return json.loads(response.request.post_data)


def test_page_loads_with_the_example_charted(visit):
    visit.goto()
    assert "GOOG daily: 300 candles" in visit.page.inner_text("#series-name")
    chart = visit.page.locator("#chart")
    assert (chart.get_attribute("data-price-precision"), chart.get_attribute("data-time-visible")) == ("2", "false")
    assert visit.pixels("history") > 500
    assert visit.pixels("forecast") < 50  # a few anti-aliased edges at most
    assert visit.page.is_hidden("#message")
    # What this server lacks is not offered (no key needed); what it has is (sample paths, return_paths).
    assert visit.page.is_hidden("#api-key")
    assert visit.page.is_visible("#show-paths") and not visit.page.is_checked("#show-paths")
    assert visit.page.is_hidden("#legend-paths")  # until paths are drawn
    # The models it serves (GET /v1/models) are offered, its default chosen.
    expect(visit.page.locator("#model")).to_be_visible()
    assert visit.page.locator("#model option").all_inner_texts() == ["kronos-demo"]
    assert visit.page.input_value("#model") == "kronos-demo"
    # Lightweight Charts' licence: TradingView credited with a link (the link is not followed).
    footer = visit.page.locator("footer")
    assert "TradingView Lightweight Charts" in footer.inner_text()
    assert footer.locator("a[href='https://www.tradingview.com/']").count() == 1
    visit.shot("01-loaded")
    visit.assert_clean()


def test_forecast_draws_the_forecast_and_its_band(visit):
    visit.goto()
    before = visit.page.locator("#chart").screenshot()
    response = visit.forecast()
    assert response.status == 200, response.text()
    visit.wait_for_pixels("forecast", 300)
    assert visit.page.locator("#chart").screenshot() != before

    sent = _sent(response)
    assert len(sent["data"]) == 300 and sent["data"][-1] == [797.8, 807.14, 796.15, 806.19, 2175400]
    assert sent["timestamps"][-1] == "2013-03-01T00:00:00"
    assert (sent["pred_len"], sent["sample_count"], sent["quantiles"]) == (30, 8, [0.1, 0.5, 0.9])
    # The seed shown is the response's, digit for digit (it may be above 2^53).
    seed = re.search(r'"seed":\s*(\d+)', response.text()).group(1)
    assert visit.page.inner_text("#result-seed") == seed
    body = response.json()
    assert visit.page.inner_text("#result-model") == body["model"]
    assert "s on the server" in visit.page.inner_text("#result-elapsed")
    visit.shot("02-forecast")

    with visit.page.expect_download() as download:
        visit.page.click("#download-csv")
    lines = Path(download.value.path()).read_text().splitlines()
    assert lines[0].startswith("step,timestamp,open,high,low,close,volume")
    assert lines[0].endswith(",close_q0.1,close_q0.9")  # as kronos-forecast and predict_df name them
    assert len(lines) == 31
    first = dict(zip(lines[0].split(","), lines[1].split(",")))
    assert float(first["close"]) == pytest.approx(body["forecast"][0]["close"])
    with visit.page.expect_download() as download:
        visit.page.click("#download-json")
    assert Path(download.value.path()).read_text() == response.text()
    visit.assert_clean()


def test_the_sample_paths_toggle_draws_every_path(visit):
    visit.goto()
    visit.page.fill("#pred-len", "10")
    visit.page.fill("#sample-count", "6")
    response = visit.forecast()
    assert response.status == 200, response.text()
    assert "return_paths" not in _sent(response) and "paths" not in response.json()
    assert visit.page.get_attribute("#chart", "data-paths") == "0"
    visit.page.check("#show-paths")
    response = visit.forecast()
    assert response.status == 200, response.text()
    assert _sent(response)["return_paths"] is True
    assert len(response.json()["paths"]) == 6
    # One thin line series per path, over the forecast; the legend names them.
    assert visit.page.get_attribute("#chart", "data-paths") == "6"
    assert visit.page.is_visible("#legend-paths")
    visit.wait_for_pixels("forecast", 100)
    visit.shot("02b-sample-paths")
    # The backtest sends the form's settings but never return_paths (not a backtest field).
    visit.page.fill("#bt-windows", "2")
    with visit.page.expect_response("**/v1/backtest", timeout=FORECAST_TIMEOUT_MS) as answer:
        visit.page.click("#backtest")
    assert answer.value.status == 200, answer.value.text()
    assert "return_paths" not in json.loads(answer.value.request.post_data)
    visit.page.uncheck("#show-paths")
    visit.forecast()
    assert visit.page.get_attribute("#chart", "data-paths") == "0"
    assert visit.page.is_hidden("#legend-paths")
    visit.assert_clean()


def test_a_seed_typed_in_the_page_reproduces_the_forecast(visit, client):
    visit.goto()
    visit.page.fill("#pred-len", "8")
    visit.page.fill("#sample-count", "2")
    visit.page.fill("#seed", "9007199254740993")  # 2^53 + 1: a JavaScript number cannot hold it
    response = visit.forecast()
    assert response.status == 200, response.text()
    assert '"seed":9007199254740993' in response.request.post_data
    assert visit.page.inner_text("#result-seed") == "9007199254740993"
    again = client.post(
        "/v1/predict/single", content=response.request.post_data, headers={"Content-Type": "application/json"}
    )
    assert again.json()["forecast"] == response.json()["forecast"]
    visit.assert_clean()


def test_the_csv_chosen_in_the_file_input_is_what_gets_sent(visit, tmp_path):
    candles = EURUSD.tail(120)
    path = tmp_path / "eurusd.csv"
    # Header names in any case, as the Python API takes them; hourly rows.
    with path.open("w") as out:
        out.write("Timestamp,Open,High,Low,Close,Volume\n")
        for ts, row in candles.iterrows():
            out.write(f"{ts:%Y-%m-%d %H:%M:%S},{row.Open},{row.High},{row.Low},{row.Close},{row.Volume:g}\n")
    visit.goto()
    visit.page.set_input_files("#csv-file", str(path))
    expect(visit.page.locator("#series-name")).to_contain_text("eurusd.csv: 120 candles")
    assert "120 candles" in visit.page.inner_text("#series-name")
    # prices to a precision that fits them (1.2345, not 1.23); hourly axis labels carry the time of day
    chart = visit.page.locator("#chart")
    assert (chart.get_attribute("data-price-precision"), chart.get_attribute("data-time-visible")) == ("4", "true")
    visit.page.fill("#pred-len", "12")
    response = visit.forecast()
    assert response.status == 200, response.text()
    sent = _sent(response)
    expected = candles[["Open", "High", "Low", "Close", "Volume"]].to_numpy().tolist()
    assert sent["data"] == expected
    assert sent["timestamps"] == [f"{ts:%Y-%m-%dT%H:%M:%S}" for ts in candles.index]
    assert sent["pred_len"] == 12
    assert response.json()["forecast"][0]["timestamp"] > sent["timestamps"][-1]
    visit.wait_for_pixels("forecast", 100)
    visit.shot("03-csv-file-forecast")
    visit.assert_clean()


@pytest.mark.parametrize(
    ("csv", "expected"),
    [
        ("date,open,high,low,close\n2024-01-01,1,2,0.5,1.5\n2024-01-02,1,abc,0.5,1.5\n", "Line 3, column high"),
        ("date,open,high,low\n2024-01-01,1,2,0.5\n", "no close column"),
        ("date,open,high,low,close\n2024-01-02,1,2,0.5,1.5\n2024-01-01,1,2,0.5,1.5\n", "Line 3, column date"),
        ("date,open,high,low,close\n2024-01-01,1,2,0.5,1.5\n2024-01-02,1,2,3,1.5\n", "Line 3, column high"),
    ],
    ids=["not-a-number", "missing-column", "time-goes-back", "high-below-low"],
)
def test_a_bad_csv_shows_a_message_naming_row_and_column(visit, csv, expected, request):
    visit.goto()
    visit.page.fill("#csv-text", csv)
    visit.page.click("#use-pasted")
    message = visit.page.locator("#message")
    message.wait_for(state="visible")
    assert expected in message.inner_text()
    assert "GOOG daily" in visit.page.inner_text("#series-name"), "a bad file must not replace the series"
    visit.shot(f"04-bad-csv-{request.node.callspec.id}")
    assert not any("/v1/predict" in url for url in visit.requests)
    visit.assert_clean()


def test_a_server_error_is_shown_in_words(visit):
    visit.goto()
    visit.page.fill("#pred-len", "100000")  # over the server's limit: the page's own check says so first
    visit.page.click("#forecast")
    assert "Candles to forecast must be a whole number from 1 to 512" in visit.page.inner_text("#message")
    visit.page.fill("#pred-len", "5")
    rows = [[100 + i % 7, 102 + i % 7, 99 + i % 7, 101 + i % 7] for i in range(2049)]
    text = "".join(",".join(map(str, row)) + "\n" for row in rows)
    visit.page.fill("#csv-text", "open,high,low,close\n" + text)  # one row over KRONOS_MAX_ROWS
    visit.page.click("#use-pasted")
    # the page sends what the model can use, and never more than the server takes
    assert visit.page.inner_text("#rows-note").startswith("The last 507 of 2049 rows are sent: with 5 candles")
    visit.page.fill("#history-rows", "2049")
    visit.page.click("#forecast")
    assert "History rows sent must be a whole number from 2 to 2048" in visit.page.inner_text("#message")
    assert not any("/v1/predict" in url for url in visit.requests)
    visit.page.fill("#history-rows", "")

    def oversized(route) -> None:  # a request the page would not send, so the server's own 422 comes back
        route.continue_(post_data=json.dumps({**json.loads(route.request.post_data), "data": rows}))

    visit.page.route("**/v1/predict/single", oversized)
    response = visit.forecast()
    assert response.status == 422
    error = response.json()["error"]
    text = visit.page.inner_text("#message")
    assert text.startswith("The server refused the request's contents (HTTP 422, validation_error): ")
    assert error["message"] in text
    visit.shot("05-server-error")
    visit.assert_clean(console=False)  # the browser logs the 422 itself


def test_an_api_key_typed_in_the_page_is_used_and_a_wrong_one_is_named(browser, keyed_server):
    for visit in _visit(browser, keyed_server.url):
        visit.goto()  # the page's own files need no key
        assert visit.page.is_visible("#api-key")
        visit.page.fill("#pred-len", "5")
        response = visit.forecast()
        assert response.status == 401
        assert "needs a valid API key (HTTP 401, unauthorized): missing API key" in visit.page.inner_text("#message")
        visit.page.fill("#api-key", "not-the-key")
        response = visit.forecast()
        assert response.status == 401
        message = visit.page.inner_text("#message")
        assert "The server needs a valid API key (HTTP 401, unauthorized): invalid API key" in message
        assert message.endswith("'X-API-Key: <key>'. Type the key in the API key field.")
        visit.shot("06-wrong-api-key")
        visit.page.fill("#api-key", API_KEY)
        response = visit.forecast()
        assert response.status == 200, response.text()
        assert response.request.headers["x-api-key"] == API_KEY
        assert visit.page.is_hidden("#message")
        assert API_KEY not in visit.page.url
        assert visit.page.evaluate("Object.keys(localStorage).length + Object.keys(sessionStorage).length") == 0
        visit.shot("07-api-key-forecast")
        visit.assert_clean(console=False)  # the browser logs the two 401s itself


def test_keyboard_alone_reaches_every_control_and_forecasts(visit):
    visit.goto()
    page = visit.page
    focused = []
    for _ in range(60):
        page.keyboard.press("Tab")
        current = page.evaluate("document.activeElement.id || document.activeElement.tagName")
        focused.append(current)
        if current == "pred-len":
            page.keyboard.press("Control+A")
            page.keyboard.type("6")
        if current == "forecast":
            break
    assert focused[-1] == "forecast", focused
    for control in ("csv-file", "csv-text", "use-pasted", "pred-len", "sample-count", "band", "seed"):
        assert control in focused
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none", "the focused control must be visible"
    visit.shot("08-keyboard-focus")
    response = visit.forecast(press=lambda: page.keyboard.press("Enter"))
    assert response.status == 200
    assert _sent(response)["pred_len"] == 6
    visit.assert_clean()


def test_usable_at_1280x800_and_at_phone_width(browser, server):
    for visit in _visit(browser, server.url, 1280, 800):
        visit.goto()
        box = visit.page.locator("#forecast").bounding_box()
        assert box["y"] + box["height"] <= 800, "Forecast must be on the first screen at 1280x800"
        assert visit.page.locator("#chart").bounding_box()["width"] >= 700
    for visit in _visit(browser, server.url, 390, 844):
        visit.goto()
        page = visit.page
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, "no sideways scrolling on a phone"
        assert page.locator("#chart").bounding_box()["width"] >= 300
        assert visit.forecast().status == 200
        visit.wait_for_pixels("forecast", 100)
        visit.shot("09-phone")
        visit.assert_clean()


def test_backtest_is_said_unavailable_when_the_server_has_no_route(visit):
    # A server without the route (an older one, or one behind a proxy that hides it) says so in its config...
    visit.page.route("**/ui/config.json", _config_without_backtest)
    visit.goto()
    assert "Backtest is unavailable on this server" in visit.page.inner_text("#backtest-message")
    # ... and one whose config claims the route but answers 404 gets the same sentence.
    visit.page.unroute("**/ui/config.json")
    visit.page.route(
        "**/v1/backtest",
        lambda route: route.fulfill(
            status=404,
            content_type="application/json",
            body=json.dumps({"error": {"type": "not_found", "message": "Not Found", "details": []}}),
        ),
    )
    visit.goto()
    with visit.page.expect_response("**/v1/backtest") as answer:
        visit.page.click("#backtest")
    assert answer.value.status == 404
    expect(visit.page.locator("#backtest-message")).to_contain_text("Backtest is unavailable on this server")
    visit.assert_clean(console=False)  # the browser logs the 404 itself


def _config_without_backtest(route) -> None:
    config = route.fetch().json()
    route.fulfill(json={**config, "backtest": False})


def test_backtest_panel_shows_the_servers_backtest(visit):
    """The panel against the real /v1/backtest: metrics beside the baselines, skill, coverage with the
    calibrated column, and every window with its exact seed, as the server answered them."""
    visit.goto()
    visit.page.fill("#pred-len", "5")
    visit.page.fill("#sample-count", "4")
    visit.page.fill("#bt-windows", "6")
    visit.page.check("#bt-calibrate")
    with visit.page.expect_response("**/v1/backtest", timeout=FORECAST_TIMEOUT_MS) as answer:
        visit.page.click("#backtest")
    assert answer.value.status == 200, answer.value.text()
    sent, body = json.loads(answer.value.request.post_data), answer.value.json()
    assert (sent["windows"], sent["calibrate"], sent["pred_len"], len(sent["data"])) == (6, True, 5, 300)
    visit.page.locator("#backtest-result").wait_for(state="visible")
    metrics = visit.page.inner_text("#bt-metrics")
    assert "last value" in metrics and "drift" in metrics
    mae_row = next(line for line in metrics.splitlines() if line.startswith("MAE"))
    assert len(mae_row.split("\t")) == 4  # Kronos, last value, drift
    assert "skill" in visit.page.inner_text("#backtest-message").lower()
    if body["metrics"]["coverage"]:
        assert "%" in visit.page.inner_text("#bt-coverage")
    windows = visit.page.inner_text("#bt-windows-table")
    assert all(str(window["seed"]) in windows for window in body["windows"])
    visit.shot("10-backtest")
    visit.assert_clean()


def test_the_page_samples_by_the_servers_defaults_and_its_backtest_is_the_apis(visit, client):
    """T and top_p left empty get the server's one set of defaults (from /ui/config.json, shown as the
    fields' placeholders); the page's backtest scores what the API's does with the same settings."""
    visit.goto()
    page = visit.page
    assert (page.get_attribute("#temperature", "placeholder"), page.get_attribute("#top-p", "placeholder")) == (
        "1.1",
        "0.95",
    )  # 8 paths by default
    page.fill("#sample-count", "1")
    assert page.get_attribute("#temperature", "placeholder") == "1"
    page.fill("#sample-count", "4")
    page.fill("#pred-len", "5")
    page.fill("#seed", "3")
    page.fill("#bt-windows", "6")
    with page.expect_response("**/v1/backtest", timeout=FORECAST_TIMEOUT_MS) as answer:
        page.click("#backtest")
    sent, body = json.loads(answer.value.request.post_data), answer.value.json()
    assert "T" not in sent and "top_p" not in sent
    assert body["sampling"] == {"temperature": 1.1, "top_k": 0, "top_p": 0.95, "sample_count": 4, "seed": 3}
    api = client.post(
        "/v1/backtest",
        json={k: sent[k] for k in ("data", "timestamps", "pred_len", "sample_count", "windows")} | {"seed": 3},
    ).json()
    assert api["metrics"]["coverage"] == body["metrics"]["coverage"] and api["windows"] == body["windows"]
    response = visit.forecast()
    assert response.status == 200, response.text()
    assert "Sampled at T 1.1, top_p 0.95, top_k 0." in page.inner_text("#result-note")
    visit.assert_clean()


def test_the_page_sends_the_rows_the_model_can_use_and_never_more_than_the_server_takes(visit, tmp_path):
    """A long file is charted whole; a forecast sends its last max_context - pred_len rows by default (so the
    window never slides), the number typed in the visible control otherwise; a backtest every row the
    server takes (KRONOS_MAX_ROWS, from /ui/config.json); old backtest results go with a new file."""
    path = tmp_path / "goog-all.csv"
    with path.open("w") as out:
        out.write("Date,Open,High,Low,Close\n")
        for ts, row in GOOG.iterrows():
            out.write(f"{ts:%Y-%m-%d},{row.Open},{row.High},{row.Low},{row.Close}\n")
    visit.goto()
    page = visit.page
    page.fill("#pred-len", "5")
    page.fill("#sample-count", "2")
    page.fill("#bt-windows", "2")
    with page.expect_response("**/v1/backtest", timeout=FORECAST_TIMEOUT_MS):
        page.click("#backtest")
    page.locator("#backtest-result").wait_for(state="visible")
    page.set_input_files("#csv-file", str(path))
    expect(page.locator("#series-name")).to_contain_text(f"goog-all.csv: {len(GOOG)} candles")
    assert page.is_hidden("#backtest-result") and page.is_hidden("#backtest-message")
    assert page.inner_text("#rows-note").startswith(f"The last 507 of {len(GOOG)} rows are sent")
    response = visit.forecast()
    assert response.status == 200, response.text()
    sent = _sent(response)
    assert len(sent["data"]) == 507 == len(sent["timestamps"]) and sent["timestamps"][-1] == "2013-03-01T00:00:00"
    assert not any(n.startswith("the window slides") for n in response.json()["notes"])
    page.fill("#history-rows", "300")
    assert page.inner_text("#rows-note") == f"The last 300 of {len(GOOG)} rows are sent."
    assert len(_sent(visit.forecast())["data"]) == 300
    with page.expect_response("**/v1/backtest", timeout=FORECAST_TIMEOUT_MS) as answer:
        page.click("#backtest")
    assert answer.value.status == 200, answer.value.text()
    assert len(json.loads(answer.value.request.post_data)["data"]) == 2048  # KRONOS_MAX_ROWS
    body = answer.value.json()
    assert body["lookback"] == 507 and body["notes"] == []
    page.locator("#backtest-result").wait_for(state="visible")
    offset = len(GOOG) - 2048
    assert str(body["windows"][0]["origin"] + offset) in page.inner_text("#bt-windows-table")
    visit.assert_clean()


def test_redoc_asks_no_other_host(visit):
    """ReDoc's page, script and all, comes from this server: offline it still renders the API."""
    visit.page.goto(visit.origin + "/redoc")
    expect(visit.page.get_by_text("Kronos forecasting service").first).to_be_visible(timeout=20_000)
    expect(visit.page.get_by_text("backtest").first).to_be_visible()
    visit.page.wait_for_timeout(500)  # the sidebar's logo comes last
    visit.shot("11-redoc")
    visit.assert_clean()


README = ROOT / "README.md"
SCREENSHOT = ROOT / "docs" / "page.png"
CAPTION = re.compile(r"model `([^`]+)`, 30 candles from\s+16 sample paths, seed 42\.")


def test_the_readme_screenshot_is_of_the_bundled_model(browser, server, client):
    """The README's screenshot is taken here, by the same forecast as its caption says; the test fails when
    the caption names another model than the one served (retake: KRONOS_UPDATE_SCREENSHOT=1)."""
    (served,) = client.get("/v1/models").json()["models"]
    for visit in _visit(browser, server.url, 1280, 800):
        visit.goto()
        visit.page.fill("#pred-len", "30")
        visit.page.fill("#sample-count", "16")
        visit.page.fill("#seed", "42")
        response = visit.forecast()
        assert response.status == 200, response.text()
        visit.wait_for_pixels("forecast", 300)
        assert visit.page.inner_text("#result-model") == served["version"]
        shot = ARTIFACTS / "readme-page.png"
        visit.page.screenshot(path=str(shot))
        visit.assert_clean()
    text = README.read_text()
    if os.environ.get("KRONOS_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(shot, SCREENSHOT)
        text = CAPTION.sub(f"model `{served['version']}`, 30 candles from\n16 sample paths, seed 42.", text, count=1)
        text = text.replace("model `MODEL`, 30 candles", f"model `{served['version']}`, 30 candles", 1)
        README.write_text(text)
    caption = CAPTION.search(text)
    assert caption, "README.md has no caption under docs/page.png naming its model"
    assert caption[1] == served["version"], (
        f"docs/page.png shows {caption[1]}, the bundled model is {served['version']}: retake it with "
        "KRONOS_UPDATE_SCREENSHOT=1 pytest tests/service/test_page_browser.py -k readme"
    )
