"""Forecasts of real candles (GOOG daily, EURUSD hourly from the `backtesting` package)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from model import Kronos, KronosPredictor, KronosTokenizer
from model.checkpoints.bundled import bundled_model_path, bundled_tokenizer_path


@pytest.fixture(scope="module")
def bundled_predictor() -> KronosPredictor:
    model = Kronos.from_pretrained(bundled_model_path())
    tokenizer = KronosTokenizer.from_pretrained(bundled_tokenizer_path())
    return KronosPredictor(model, tokenizer, device="cpu", max_context=64)


def _future(index: pd.DatetimeIndex, n: int) -> pd.DatetimeIndex:
    step = index[-1] - index[-2]
    return pd.date_range(index[-1] + step, periods=n, freq=step)


@pytest.mark.parametrize("fixture,rows,pred_len", [("goog", 120, 10), ("eurusd", 90, 24)])
def test_forecast_is_finite_with_future_index(request, bundled_predictor, fixture, rows, pred_len):
    frame = request.getfixturevalue(fixture).iloc[-rows:]
    future = _future(frame.index, pred_len)
    out = bundled_predictor.predict(frame, frame.index.to_series(), future, pred_len, sample_count=2, seed=3)
    assert out.shape == (pred_len, 6)
    assert list(out.columns) == ["open", "high", "low", "close", "volume", "amount"]
    assert (out.index == future).all()
    assert np.isfinite(out.to_numpy()).all()


def test_variable_length_batch_equals_each_series_alone(bundled_predictor, goog, eurusd):
    # Different lengths (one longer than max_context, so it slides), pred_lens and frequencies.
    frames = [goog.iloc[-100:], eurusd.iloc[-40:], eurusd.iloc[-64:], goog.iloc[-7:]]
    pred_lens = [12, 30, 5, 20]
    futures = [_future(f.index, p) for f, p in zip(frames, pred_lens)]
    stamps = [f.index.to_series() for f in frames]
    batch = bundled_predictor.predict_batch(
        frames, stamps, futures, pred_lens, T=1.0, top_p=0.9, sample_count=3, seed=10
    )
    for i, (frame, future, pred_len) in enumerate(zip(frames, futures, pred_lens)):
        alone = bundled_predictor.predict(
            frame, stamps[i], future, pred_len, T=1.0, top_p=0.9, sample_count=3, seed=10 + i
        )
        assert batch[i].shape == (pred_len, 6)
        assert (batch[i].index == future).all()
        np.testing.assert_allclose(batch[i].to_numpy(), alone.to_numpy(), rtol=1e-5, atol=1e-6)
