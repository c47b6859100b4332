"""One rule decides the sampling settings (``model/decoding/defaults.py``): a value the request gives
is kept; otherwise T 1.1 / top_p 0.95 with several sample paths, T 1.0 / top_p 0.9 with one. Every
way in (predict, batch items, backtest windows, calibrated predict, the CLI, the page) follows it, and
every answer echoes what it used."""

from __future__ import annotations

import json

from model.decoding.defaults import BAND, PLAIN, effective_sampling
from services.kronos_fastapi.backtesting import parse_backtest
from services.kronos_fastapi.band_defaults import QUANTILE_TEMPERATURE, QUANTILE_TOP_P
from services.kronos_fastapi.forecasting import parse_batch, parse_single
from services.kronos_fastapi.settings import load_settings

SETTINGS = load_settings(env_file=None)
ROWS = [[100, 105, 98, 102], [102, 108, 101, 107], [107, 109, 104, 105]]


def _series(body: dict):
    return parse_single(json.dumps(body).encode(), SETTINGS).items[0].series


def _pair(s) -> tuple[float, float]:
    return s.temperature, s.top_p


def test_several_paths_get_the_band_defaults_with_or_without_quantiles():
    band = (QUANTILE_TEMPERATURE, QUANTILE_TOP_P)
    assert band == (BAND["temperature"], BAND["top_p"]) == (1.1, 0.95)
    assert _pair(_series({"data": ROWS, "pred_len": 2, "sample_count": 8, "quantiles": [0.1, 0.5, 0.9]})) == band
    assert _pair(_series({"data": ROWS, "pred_len": 2, "sample_count": 8})) == band
    batch = parse_batch(
        json.dumps({"batch": [{"data": ROWS, "quantiles": [0.1, 0.9], "sample_count": 2}, {"data": ROWS}]}).encode(),
        SETTINGS,
    )
    assert [_pair(item.series) for item in batch.items] == [band, (1.0, 0.9)]


def test_one_path_keeps_upstreams_defaults():
    assert _pair(_series({"data": ROWS, "pred_len": 2})) == (PLAIN["temperature"], PLAIN["top_p"]) == (1.0, 0.9)


def test_values_the_request_gives_are_kept():
    assert _pair(_series({"data": ROWS, "sample_count": 2, "T": 0.7, "top_p": 0.5})) == (0.7, 0.5)
    assert _pair(_series({"data": ROWS, "sample_count": 2, "T": 0.7})) == (0.7, QUANTILE_TOP_P)
    assert _pair(_series({"data": ROWS, "sample_count": 2, "top_p": 0.5})) == (QUANTILE_TEMPERATURE, 0.5)
    # the defaults' own values, sent, are kept too (so an echoed setting always reproduces)
    assert _pair(_series({"data": ROWS, "sample_count": 2, "T": 1.0, "top_p": 0.9})) == (1.0, 0.9)


def test_backtest_windows_and_the_original_shape():
    data = [[100 + i, 102 + i, 99 + i, 101 + i] for i in range(40)]
    backtest = parse_backtest(json.dumps({"data": data, "pred_len": 3, "windows": 2}).encode(), SETTINGS)
    assert backtest.sampling == effective_sampling(sample_count=20)
    assert [_pair(s) for s in backtest.series] == [(1.1, 0.95)] * 2 and backtest.series[0].sample_count == 20
    one = parse_backtest(json.dumps({"data": data, "pred_len": 3, "sample_count": 1}).encode(), SETTINGS)
    assert _pair(one.series[0]) == (1.0, 0.9)
    legacy = {
        "candles": [dict(zip(("open", "high", "low", "close"), r)) for r in ROWS],
        "timestamps": ["2024-01-01", "2024-01-02", "2024-01-03"],
        "prediction_timestamps": ["2024-01-04"],
        "overrides": {"sample_count": 4},
    }
    assert _pair(parse_single(json.dumps(legacy).encode(), SETTINGS).items[0].series) == (1.0, 0.9)


def test_the_cli_and_the_api_give_the_same_forecast_for_the_same_seed(client, tmp_path):
    """kronos-forecast and /v1/predict/single share the rule: the same rows, paths and seed, the same numbers."""
    import subprocess
    import sys
    from io import StringIO
    from pathlib import Path

    import numpy as np
    import pandas as pd
    from backtesting.test import GOOG

    frame = GOOG.iloc[-80:][["Open", "High", "Low", "Close"]]
    path = tmp_path / "goog.csv"
    frame.to_csv(path, index_label="Date")
    cli = subprocess.run(
        [sys.executable, "-m", "model", str(path), "--pred-len", "4", "--sample-count", "4", "--seed", "9"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert cli.returncode == 0, cli.stderr
    assert "T 1.1, top_p 0.95, top_k 0, 4 sample paths, seed 9" in cli.stderr
    body = {
        "data": frame.to_numpy(float).tolist(),
        "timestamps": [t.isoformat() for t in frame.index],
        "pred_len": 4,
        "sample_count": 4,
        "seed": 9,
    }
    answer = client.post("/v1/predict/single", json=body).json()
    ours = pd.read_csv(StringIO(cli.stdout))
    api = np.array([[r[c] for c in ("open", "high", "low", "close")] for r in answer["forecast"]])
    np.testing.assert_allclose(ours[["open", "high", "low", "close"]].to_numpy(), api, rtol=2e-6)
    assert answer["sampling"] == {"temperature": 1.1, "top_k": 0, "top_p": 0.95, "sample_count": 4, "seed": 9}
