"""Forecasts right in every detail, over real HTTP with real candles: trading calendars, valid
candles in the mean, the paths' bands and the close band, no invented volumes, seeds that survive a
JavaScript client, float32-sized numbers, and the smaller points (docs served locally, failed
authentication rate limited)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from conftest import assert_error

from tests.sessions import five_minute_sessions

PRICES = ["open", "high", "low", "close"]


def _real(name: str) -> pd.DataFrame:
    import backtesting.test

    frame = getattr(backtesting.test, name).copy()
    frame.columns = [c.lower() for c in frame.columns]
    return frame


def _body(frame: pd.DataFrame, columns: list[str], **extra) -> dict:
    return {
        "data": frame[columns].to_numpy().tolist(),
        "timestamps": [t.isoformat() for t in frame.index],
        **extra,
    }


def _valid(row: dict) -> bool:
    return row["low"] <= min(row["open"], row["close"]) <= max(row["open"], row["close"]) <= row["high"]


def _stamps(result: dict) -> pd.DatetimeIndex:
    return pd.DatetimeIndex([row["timestamp"] for row in result["forecast"]])


def _all_candles_valid(result: dict) -> None:
    assert all(_valid(row) for row in result["forecast"])
    for band in result["quantiles"] or []:
        assert all(_valid(row) for row in band["forecast"]), band["level"]
    closes = [band["close"] for band in result["close_quantiles"] or []]
    for lower, upper in zip(closes, closes[1:]):
        assert all(a <= b for a, b in zip(lower, upper))


def _seven_digits(value: float) -> bool:
    return float(f"{value:.7g}") == value


def test_goog_daily_ohlc_forecast(client):
    goog = _real("GOOG").iloc[-200:]  # ends Friday 2013-03-01
    body = _body(goog, PRICES, pred_len=10, sample_count=8, seed=5, quantiles=[0.1, 0.5, 0.9])
    response = client.post("/v1/predict/single", json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    stamps = _stamps(result)
    assert stamps[0] == pd.Timestamp("2013-03-04")  # Monday, not Saturday
    assert set(stamps.day_of_week) <= {0, 1, 2, 3, 4}
    _all_candles_valid(result)
    assert [band["level"] for band in result["close_quantiles"]] == [0.1, 0.5, 0.9]
    # No volume in, no volume out: null, not noise around an invented zero.
    for row in result["forecast"] + [r for band in result["quantiles"] for r in band["forecast"]]:
        assert row["volume"] is None and row["amount"] is None
        assert all(_seven_digits(row[c]) for c in PRICES)
    if result["repaired_candles"]:
        assert any("repaired" in note for note in result["notes"])
    assert '"volume":null' in response.text.replace(" ", "")


def test_eurusd_hourly_with_volume_skips_the_weekend(client):
    eurusd = _real("EURUSD").iloc[-200:]
    body = _body(eurusd, [*PRICES, "volume"], pred_len=72, sample_count=4, seed=8)
    result = client.post("/v1/predict/single", json=body).json()
    stamps = _stamps(result)
    assert 5 not in set(stamps.day_of_week)  # never a Saturday
    seen = set(zip(eurusd.index.day_of_week, eurusd.index.hour))
    assert set(zip(stamps.day_of_week, stamps.hour)) <= seen
    _all_candles_valid(result)
    assert all(isinstance(row["volume"], float) and row["amount"] is None for row in result["forecast"])


def test_five_minute_sessions_and_an_exchange_calendar(client):
    bars = five_minute_sessions().iloc[-300:]
    body = _body(bars, PRICES, pred_len=100, sample_count=2, seed=2, quantiles=[0.25, 0.75])
    inferred = client.post("/v1/predict/single", json=body).json()
    stamps = _stamps(inferred)
    times = stamps - stamps.normalize()
    assert times.min() == pd.Timedelta("09:00:00") and times.max() == pd.Timedelta("15:55:00")
    assert set(stamps.day_of_week) <= {0, 1, 2, 3, 4}
    _all_candles_valid(inferred)
    exchange = client.post("/v1/predict/single", json={**body, "calendar": "XNYS"}).json()
    stamps = _stamps(exchange)
    assert (stamps - stamps.normalize()).min() == pd.Timedelta("09:30:00")
    # freq still wins over the inferred calendar, and a bad calendar is named.
    hourly = client.post("/v1/predict/single", json={**body, "freq": "h", "pred_len": 30}).json()
    assert _stamps(hourly)[-1] == bars.index[-1] + pd.Timedelta(hours=30)
    error = assert_error(client.post("/v1/predict/single", json={**body, "calendar": "MOON"}), 422)
    assert error["message"].startswith("calendar: 'MOON'")
    batch = {"batch": [body, {**body, "calendar": "MOON"}]}
    assert assert_error(client.post("/v1/predict/batch", json=batch), 422)["message"].startswith("batch[1].calendar")


def test_a_seed_read_as_a_javascript_number_reproduces_the_forecast(client):
    goog = _real("GOOG").iloc[-100:]
    body = _body(goog, [*PRICES, "volume"], pred_len=5, sample_count=3)
    first = client.post("/v1/predict/single", json=body)
    as_javascript = json.loads(first.text, parse_int=float)  # every JSON number is a float64 in JavaScript
    seed = as_javascript["seed"]
    assert seed < 2**53 and isinstance(seed, float)
    again = client.post("/v1/predict/single", content=json.dumps({**body, "seed": int(seed)})).json()
    assert again["forecast"] == first.json()["forecast"]
    assert again["notes"] == first.json()["notes"]
    big = 8879943295187634257
    noted = client.post("/v1/predict/single", json={**body, "seed": big}).json()
    assert noted["seed"] == big and any("2^53" in note for note in noted["notes"])


def test_bands_need_sample_paths(client):
    body = {"data": [[10, 11, 9, 10.5], [10.5, 12, 10, 11]], "pred_len": 3, "quantiles": [0.1, 0.9]}
    error = assert_error(client.post("/v1/predict/single", json=body), 422, "validation_error")
    assert error["message"].startswith("quantiles:") and "sample_count" in error["message"]
    assert client.post("/v1/predict/single", json={**body, "sample_count": 2}).status_code == 200


def test_invalid_input_candles_are_named_or_repaired_on_request(client):
    rows = _real("GOOG").iloc[-30:][PRICES].to_numpy().tolist()
    rows[3] = [62.40, 61.64, 60.0, 61.0]  # open above high
    body = {"data": rows, "pred_len": 2}
    error = assert_error(client.post("/v1/predict/single", json=body), 422, "validation_error")
    assert error["message"].startswith("data[3]: not a valid candle: high 61.64 is below max(open, close) 62.4")
    assert error["details"][0]["field"] == "data[3]"
    repaired = client.post("/v1/predict/single", json={**body, "repair_input": True}).json()
    assert any(note.startswith("1 input candle(s) repaired") for note in repaired["notes"])
    legacy = {
        "candles": [dict(zip(PRICES, row)) for row in rows[:5]],
        "timestamps": [f"2024-03-0{i + 4}T00:00:00" for i in range(5)],
        "prediction_timestamps": ["2024-03-11T00:00:00"],
    }
    error = assert_error(client.post("/v1/predict/single", json=legacy), 422)
    assert error["message"].startswith("candles[3]: not a valid candle")
    answer = client.post("/v1/predict/single", json={**legacy, "overrides": {"repair_input": True}}).json()
    assert answer["prediction"][0]["volume"] is None and _valid(answer["prediction"][0])


def test_docs_are_served_without_a_cdn(client):
    page = client.get("/docs")
    assert page.status_code == 200
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
    assert "/docs/assets/swagger-ui-bundle.js" in assets and "/docs/assets/swagger-ui.css" in assets
    assert "cdn" not in page.text.lower()
    redoc = client.get("/redoc")
    assert "/docs/assets/redoc.standalone.js" in redoc.text and "cdn" not in redoc.text.lower()
    script = client.get("/docs/assets/swagger-ui-bundle.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert len(script.content) > 100_000
    assert client.get("/docs/assets/redoc.standalone.js").status_code == 200
    assert_error(client.get("/docs/assets/..%2Fconsts.py"), 404)
    metrics = client.get("/v1/metrics").text
    assert 'route="/docs/assets/{name}"' in metrics
    assert re.search(r'route="/docs",status="200"', metrics)


@pytest.fixture(scope="module")
def guarded(start_servers):
    return start_servers(ready=False, keyed={"KRONOS_API_KEYS": "the-key", "KRONOS_RATE_LIMIT_PER_MINUTE": "3"})[
        "keyed"
    ]


def test_failed_authentication_counts_against_the_rate_limit(guarded):
    with httpx.Client(base_url=guarded.url, timeout=30) as http:
        guesses = [http.post("/v1/predict/single", json={}, headers={"X-API-Key": f"guess-{i}"}) for i in range(3)]
        assert [g.status_code for g in guesses] == [401, 401, 401]
        limited = assert_error(http.post("/v1/predict/single", json={}, headers={"X-API-Key": "guess-4"}), 429)
        assert "KRONOS_RATE_LIMIT_PER_MINUTE" in limited["message"]
        assert int(http.post("/v1/predict/single", json={}).headers["Retry-After"]) >= 1
        # The holder of a key has its own budget.
        assert http.post("/v1/predict/single", json={}, headers={"X-API-Key": "the-key"}).status_code in (422, 503)


def test_float32_digits_keep_order():
    from services.kronos_fastapi.responses import float32_digits

    values = np.array([104.99999237060547, 105.00000762939453, 1e-12, -3.7e-06, 123456789.0])
    assert float32_digits(values) == [105.0, 105.0, 1e-12, -3.7e-06, 123456800.0]
    ordered = np.sort(np.random.default_rng(0).normal(100, 1e-3, size=1000))
    rounded = float32_digits(ordered)
    assert rounded == sorted(rounded)
    rng = np.random.default_rng(1)
    spread = rng.normal(size=20_000) * 10.0 ** rng.integers(-30, 30, size=20_000)
    assert float32_digits(spread) == [float(f"{v:.7g}") for v in spread]  # the vectorised path is exact


def test_the_readme_batch_example_is_a_real_forecast(client):
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    bodies = re.findall(
        r"predict/batch \\\n  -H \"Content-Type: application/json\" \\\n  -d '(\{.*?\})'\n", readme, re.S
    )
    real = json.loads(bodies[-1])
    goog = _real("GOOG").iloc[-6:]
    assert real["batch"][0]["data"] == goog[PRICES].to_numpy().tolist()  # the real candles, as printed
    response = client.post("/v1/predict/batch", json=real)
    assert response.status_code == 200, response.text
    first, second = response.json()["results"]
    assert _stamps(first)[0] == pd.Timestamp("2013-03-04") and set(_stamps(first).day_of_week) <= {0, 1, 2, 3, 4}
    _all_candles_valid(first)
    _all_candles_valid(second)
    assert first["forecast"][0]["volume"] is None and isinstance(second["forecast"][0]["volume"], float)


def test_a_rolling_window_is_opt_in_said_and_reproducible(client):
    """window="rolling" changes nothing while the rows and pred_len fit the model's context; past it
    the answer is its own (the oldest keys/values dropped, not the window recomputed); a note says so,
    and the answer repeats with its seed. Anything else is a 422 naming the field."""
    goog = _real("GOOG")
    fits = _body(goog.iloc[-400:], PRICES, pred_len=20, seed=3)  # 420 tokens of 512
    # The window slides from the first step; 8 paths, so some sampled token surely differs.
    slides = _body(goog.iloc[-600:], PRICES, pred_len=30, seed=3, sample_count=8)
    answers = {}
    for name, body in (("fits", fits), ("slides", slides)):
        for window in ("exact", "rolling"):
            response = client.post("/v1/predict/single", json={**body, "window": window})
            assert response.status_code == 200, response.text
            answers[name, window] = response.json()
    assert answers["fits", "rolling"]["forecast"] == answers["fits", "exact"]["forecast"]
    assert answers["slides", "rolling"]["forecast"] != answers["slides", "exact"]["forecast"]
    for name in ("fits", "slides"):
        assert any(note.startswith("window: rolling:") for note in answers[name, "rolling"]["notes"])
    assert not any("rolling" in note for note in answers["fits", "exact"]["notes"])
    # the exact forecast that slides is told so, with rolling as one way out (tests/service/test_window_cliff.py)
    assert [n for n in answers["slides", "exact"]["notes"] if "rolling" in n][0].startswith("the window slides:")
    _all_candles_valid(answers["slides", "rolling"])
    again = client.post("/v1/predict/single", json={**slides, "window": "rolling"}).json()
    assert again["forecast"] == answers["slides", "rolling"]["forecast"]
    error = assert_error(client.post("/v1/predict/single", json={**fits, "window": "sliding"}), 422)
    assert "window" in error["message"]
