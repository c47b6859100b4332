"""``POST /v1/backtest`` and calibrated / P(up) predict answers, over HTTP against real servers and real candles."""

from __future__ import annotations

import re

import httpx
import numpy as np
import pytest
from backtesting.test import GOOG
from conftest import assert_error

from model.training.corpus import heldout_series

ROWS = 160
FRAME = GOOG.iloc[-ROWS:]
DATA = FRAME[["Open", "High", "Low", "Close", "Volume"]].to_numpy(float).tolist()
STAMPS = [t.isoformat() for t in FRAME.index]
CLOSES = FRAME["Close"].to_numpy(float)


def _post(client: httpx.Client, path: str, body: dict) -> dict:
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_windows_follow_the_contract_and_each_is_reproduced_by_predict_single(client):
    pred_len, windows, step, lookback = 5, 4, 3, 60
    settings = {"pred_len": pred_len, "sample_count": 8, "T": 1.0, "top_p": 0.9, "seed": 11}
    body = _post(
        client,
        "/v1/backtest",
        {"data": DATA, "timestamps": STAMPS, **settings, "windows": windows, "step": step, "lookback": lookback},
    )
    assert (body["pred_len"], body["step"], body["lookback"], body["sample_count"]) == (5, 3, 60, 8)
    origins = [w["origin"] for w in body["windows"]]
    assert origins == [ROWS - pred_len - j * step for j in range(windows)]
    assert [w["timestamp"] for w in body["windows"]] == [STAMPS[o] for o in origins]
    assert [w["seed"] for w in body["windows"]] == [11 + j for j in range(windows)]

    for window in body["windows"]:
        origin, start = window["origin"], max(0, window["origin"] - lookback)
        single = _post(
            client,
            "/v1/predict/single",
            {"data": DATA[start:origin], "timestamps": STAMPS[start:origin], **settings, "seed": window["seed"]},
        )
        closes = np.array([row["close"] for row in single["forecast"]])
        # the same forecast: its error against the window's true closes is the window's, up to the 7 significant
        # digits that predict's JSON keeps (float32 precision)
        mae = float(np.abs(closes - CLOSES[origin : origin + pred_len]).mean())
        assert mae == pytest.approx(window["mae"], rel=0, abs=1e-6 * np.abs(closes).max())
    assert body["metrics"]["mae"] == pytest.approx(np.mean([w["mae"] for w in body["windows"]]), rel=1e-12)

    # the baselines, by hand from the candles
    last = np.array([CLOSES[o - 1] for o in origins])
    truth = np.stack([CLOSES[o : o + pred_len] for o in origins])
    assert body["baselines"]["last_value"]["mae"] == pytest.approx(np.abs(truth - last[:, None]).mean(), rel=1e-12)
    slopes = np.array([(CLOSES[o - 1] - CLOSES[o - lookback]) / (lookback - 1) for o in origins])
    drift = last[:, None] + slopes[:, None] * np.arange(1, pred_len + 1)
    assert body["baselines"]["drift"]["mae"] == pytest.approx(np.abs(truth - drift).mean(), rel=1e-12)
    model_mae = body["metrics"]["mae"]
    skill = body["baselines"]["last_value"]["skill"]["mae"]
    assert skill == pytest.approx(1 - model_mae / body["baselines"]["last_value"]["mae"])

    # the shape the page and other clients rely on
    metrics = body["metrics"]
    assert set(metrics) >= {"mae", "rmse", "mape", "direction_accuracy", "crps", "coverage", "per_horizon"}
    assert metrics["coverage"] == [
        {"lower": 0.1, "upper": 0.9, "nominal": 0.8, "observed": metrics["coverage"][0]["observed"]}
    ]
    assert [h["step"] for h in metrics["per_horizon"]] == [1, 2, 3, 4, 5]
    assert 0 <= metrics["brier"] <= 1 and sum(b["count"] for b in metrics["reliability"]) == windows * pred_len
    assert body["baselines"]["last_value"]["direction_accuracy"] is None  # persistence predicts no move


def _heldout(name: str) -> tuple[list, list, np.ndarray]:
    """The last ROWS candles of an instrument the bundled model never trained on (SP500, NASDAQ)."""
    (series,) = heldout_series((name,))
    candles, stamps = series.candles[-ROWS:, :5].astype(float), series.timestamps[-ROWS:]
    return candles.tolist(), [t.isoformat() for t in stamps], candles[:, 3]


@pytest.mark.parametrize("instrument", ["GOOG", "SP500"])
def test_a_default_backtest_window_is_reproduced_by_predict_with_its_rows_and_seed(client, instrument):
    """No T / top_p given: the windows sample by the one rule (20 paths: the band defaults), echoed in
    ``sampling``; a predict of a window's rows with the same fields and its seed reproduces it, and so
    does one with nothing but the rows, pred_len and the echoed settings. On GOOG and on held-out SP500
    candles (where the outside check found every window's MAE differing before the one rule)."""
    data, stamps, closes_true = (DATA, STAMPS, CLOSES) if instrument == "GOOG" else _heldout(instrument)
    pred_len, lookback = 4, 48
    request = {"data": data, "timestamps": stamps, "pred_len": pred_len, "seed": 5}
    body = _post(client, "/v1/backtest", {**request, "windows": 3, "lookback": lookback})
    sampling = body["sampling"]
    assert sampling == {"temperature": 1.1, "top_k": 0, "top_p": 0.95, "sample_count": 20, "seed": 5}
    echoed = {k: sampling[k] for k in ("top_k", "top_p", "sample_count")} | {"T": sampling["temperature"]}
    for window in body["windows"]:
        origin, start = window["origin"], max(0, window["origin"] - lookback)
        rows = {"data": data[start:origin], "timestamps": stamps[start:origin], "pred_len": pred_len}
        same_fields = _post(client, "/v1/predict/single", {**rows, "sample_count": 20, "seed": window["seed"]})
        from_echo = _post(client, "/v1/predict/single", {**rows, **echoed, "seed": window["seed"]})
        assert same_fields["forecast"] == from_echo["forecast"]
        assert same_fields["sampling"] == {**sampling, "seed": window["seed"]} == from_echo["sampling"]
        closes = np.array([row["close"] for row in same_fields["forecast"]])
        mae = float(np.abs(closes - closes_true[origin : origin + pred_len]).mean())
        assert mae == pytest.approx(window["mae"], rel=0, abs=1e-6 * np.abs(closes).max())


def test_every_answer_echoes_its_sampling_and_the_echo_reproduces_it(client):
    body = _post(client, "/v1/predict/single", {"data": DATA[:60], "pred_len": 3, "sample_count": 4})
    sampling = body["sampling"]
    assert sampling == {"temperature": 1.1, "top_k": 0, "top_p": 0.95, "sample_count": 4, "seed": body["seed"]}
    again = {k: sampling[k] for k in ("top_k", "top_p", "sample_count", "seed")} | {"T": sampling["temperature"]}
    repeated = _post(client, "/v1/predict/single", {"data": DATA[:60], "pred_len": 3, **again})
    assert repeated["forecast"] == body["forecast"]
    point = _post(client, "/v1/predict/single", {"data": DATA[:60], "pred_len": 3, "seed": 1})["sampling"]
    assert point == {"temperature": 1.0, "top_k": 0, "top_p": 0.9, "sample_count": 1, "seed": 1}
    batch = _post(client, "/v1/predict/batch", {"batch": [{"data": DATA[:20], "sample_count": 2, "seed": 3}]})
    assert batch["results"][0]["sampling"]["temperature"] == 1.1


def test_without_timestamps_a_window_is_reproduced_on_the_fixed_calendar(client):
    body = _post(client, "/v1/backtest", {"data": DATA[:40], "pred_len": 3, "windows": 2, "sample_count": 4})
    window = body["windows"][1]
    assert window["origin"] == 40 - 3 - 3 and window["timestamp"] is None
    single = _post(
        client,
        "/v1/predict/single",
        {"data": DATA[: window["origin"]], "pred_len": 3, "sample_count": 4, "seed": window["seed"]},
    )
    closes = np.array([row["close"] for row in single["forecast"]])
    mae = float(np.abs(closes - CLOSES[window["origin"] : window["origin"] + 3]).mean())
    assert mae == pytest.approx(window["mae"], rel=0, abs=1e-6 * np.abs(closes).max())


def test_calibrated_coverage_is_reported_beside_the_raw_one(client):
    body = _post(
        client,
        "/v1/backtest",
        {"data": DATA, "pred_len": 5, "windows": 12, "sample_count": 8, "seed": 1, "lookback": 64, "calibrate": True},
    )
    (coverage,) = body["metrics"]["coverage"]
    # windows with at least 4 earlier ones can calibrate an 80% band: the 8 newest of 12
    assert coverage["calibrated_windows"] == 8
    assert 0 <= coverage["observed_calibrated"] <= 1
    assert all("observed_calibrated" in h["coverage"][0] for h in body["metrics"]["per_horizon"])


def test_predict_reports_p_up_from_the_paths(client):
    body = _post(
        client,
        "/v1/predict/single",
        {"data": DATA[:100], "pred_len": 6, "sample_count": 8, "seed": 2, "quantiles": [0.5]},
    )
    p_up, (median,) = body["p_up"], body["quantiles"]
    assert len(p_up) == 6 and all(0 <= p <= 1 and (p * 8).is_integer() for p in p_up)
    last = DATA[99][3]
    for p, row in zip(p_up, median["forecast"]):
        # a median above the last close means at least half the paths end above it, and below it at most half
        if row["close"] > last:
            assert p >= 0.5
        elif row["close"] < last:
            assert p <= 0.5
    assert _post(client, "/v1/predict/single", {"data": DATA[:100], "pred_len": 6})["p_up"] is None


def test_predict_calibrated_on_its_own_last_windows(client):
    k, pred_len = 6, 4
    request = {"data": DATA, "pred_len": pred_len, "sample_count": 8, "seed": 40, "quantiles": [0.1, 0.5, 0.9]}
    body = _post(client, "/v1/predict/single", {**request, "calibration": {"windows": k}})
    calibration = body["calibration"]
    assert (calibration["windows"], calibration["column"]) == (k, "close")
    (band,) = calibration["bands"]
    assert (band["lower"], band["upper"], band["nominal"]) == (0.1, 0.9, 0.8)
    raw_low, _, raw_high = body["quantiles"]
    for row, low, high in zip(band["forecast"], raw_low["forecast"], raw_high["forecast"]):
        assert row["lower"] <= row["upper"]
        # one margin per step, applied to both edges
        # (every value is sent with 7 significant digits, so the two margins agree to that precision)
        assert row["lower"] - low["close"] == pytest.approx(high["close"] - row["upper"], abs=2e-6 * high["close"])
    # the forecast itself is the uncalibrated request's
    plain = _post(client, "/v1/predict/single", request)
    assert plain["forecast"] == body["forecast"] and plain.get("calibration") is None
    # its windows are the backtest's (seeds seed + 1 + j): the raw coverage it reports is the backtest's
    backtest = _post(
        client, "/v1/backtest", {**request, "seed": 41, "windows": k, "lookback": 512, "quantiles": [0.1, 0.9]}
    )
    assert band["observed"] == backtest["metrics"]["coverage"][0]["observed"]


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"data": DATA[:20], "pred_len": 5, "windows": 4}, "data", "need at least 22 rows"),
        ({"data": DATA, "pred_len": 5, "windows": 11, "sample_count": 30}, "windows", "KRONOS_MAX_BACKTEST_PATHS"),
        ({"data": DATA, "pred_len": 1, "windows": 65, "sample_count": 1}, "windows", "KRONOS_MAX_BATCH_ITEMS"),
        ({"data": DATA, "pred_len": 5, "sample_count": 1, "quantiles": [0.1, 0.9]}, "quantiles", "sample_count >= 2"),
        ({"data": DATA, "pred_len": 5, "quantiles": [0.5], "calibrate": True}, "calibrate", "symmetric pair"),
        ({"data": DATA, "pred_len": 5, "calibration": {"windows": 3}}, "calibration", "calibrate"),
        ({"data": DATA, "pred_len": 5, "step": 0}, "step", "greater than or equal to 1"),
        ({"data": DATA, "pred_len": 5, "lookback": 1}, "lookback", "greater than or equal to 2"),
        ({"data": DATA, "pred_len": 5, "windows": 0}, "windows", "greater than or equal to 1"),
        ({"data": DATA, "pred_len": 5, "windos": 3}, "windos", "Extra inputs"),
        ({"data": DATA, "pred_len": 5, "window": 3}, "window", "'exact' or 'rolling'"),
        ({"data": DATA, "pred_len": 5, "windows": "3"}, "windows", "integer"),
    ],
)
def test_bad_backtests_are_422_naming_the_field(client, body, field, words):
    error = assert_error(client.post("/v1/backtest", json=body), 422, "validation_error")
    assert error["message"].startswith(field), error
    assert words in error["message"], error


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        (
            {"data": DATA, "pred_len": 5, "sample_count": 4, "quantiles": [0.1, 0.9], "calibration": {"windows": 3}},
            "calibration.windows",
            "needs at least 4",
        ),
        (
            {
                "data": DATA[:20],
                "pred_len": 5,
                "sample_count": 4,
                "quantiles": [0.1, 0.9],
                "calibration": {"windows": 4},
            },
            "calibration.windows",
            "need at least 22 rows",
        ),
        ({"data": DATA, "pred_len": 5, "sample_count": 4, "calibration": {"windows": 4}}, "calibration", "symmetric"),
        ({"data": DATA, "pred_len": 5, "calibration": {"windows": 0}}, "calibration.windows", "greater than"),
    ],
)
def test_bad_calibrated_predicts_are_422(client, body, field, words):
    error = assert_error(client.post("/v1/predict/single", json=body), 422, "validation_error")
    assert error["message"].startswith(field + ":"), error
    assert words in error["message"], error
    batch = {"batch": [{"data": DATA[:30], "pred_len": 2, "calibration": {"windows": 4}}]}
    error = assert_error(client.post("/v1/predict/batch", json=batch), 422, "validation_error")
    assert error["message"].startswith("batch[0].calibration:")


def test_backtest_windows_go_through_the_batcher_and_its_timeout(client, start_servers):
    def counted() -> float:
        text = client.get("/v1/metrics").text
        found = re.search(
            r'^kronos_predicted_series_total\{[^}]*endpoint="backtest"[^}]*\} (\S+)$', text, flags=re.MULTILINE
        )
        return float(found.group(1)) if found else 0.0

    before = counted()
    _post(client, "/v1/backtest", {"data": DATA[:60], "pred_len": 4, "windows": 3, "sample_count": 2})
    assert counted() == before + 3

    slow = start_servers(backtest_timeout={"KRONOS_REQUEST_TIMEOUT_S": "0.05", "KRONOS_RATE_LIMIT_PER_MINUTE": "0"})[
        "backtest_timeout"
    ]
    response = httpx.post(
        slow.url + "/v1/backtest",
        json={"data": DATA, "pred_len": 100, "windows": 2, "step": 20, "sample_count": 8},
        timeout=60,
    )
    assert "KRONOS_REQUEST_TIMEOUT_S" in assert_error(response, 504, "timeout")["message"]
    assert httpx.get(slow.url + "/v1/readyz", timeout=10).status_code == 200  # nothing is wedged


def test_openapi_documents_the_backtest(client):
    schema = client.get("/openapi.json").json()
    route = schema["paths"]["/v1/backtest"]["post"]
    assert {"200", "422", "503", "504"} <= set(route["responses"])
    fields = schema["components"]["schemas"]["BacktestRequest"]["properties"]
    assert {"data", "pred_len", "windows", "step", "lookback", "calibrate", "seed", "quantiles"} <= set(fields)
    assert "calibration" not in fields
    assert "p_up" in schema["components"]["schemas"]["SingleResponse"]["properties"]
