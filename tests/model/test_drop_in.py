"""What scripts written for the reference rely on: torch.manual_seed governs an unseeded predict, the
bundled pair loads by name for both classes, and a model built under torch.inference_mode() forecasts."""

from __future__ import annotations

import inspect

import numpy as np
import pandas as pd
import pytest
import torch

from model import Kronos, KronosPredictor, KronosTokenizer, future_timestamps
from model.training.corpus import universe_frame

COLUMNS = ["open", "high", "low", "close", "volume"]


@pytest.fixture(scope="module")
def history():
    return universe_frame(1, 80)


def forecast(predictor, history, **kwargs):
    future = future_timestamps(history["timestamps"], 5)
    return predictor.predict(history[COLUMNS], history["timestamps"], future, pred_len=5, sample_count=2, **kwargs)


def test_torch_manual_seed_makes_an_unseeded_predict_reproducible(history):
    predictor = KronosPredictor(Kronos.from_pretrained("bundled"), KronosTokenizer.from_pretrained("bundled"))
    torch.manual_seed(0)
    first = forecast(predictor, history)
    torch.manual_seed(0)
    again = forecast(predictor, history)
    other = forecast(predictor, history)  # the generator moved on: another draw
    np.testing.assert_array_equal(first.to_numpy(), again.to_numpy())
    assert not np.array_equal(first.to_numpy(), other.to_numpy())
    torch.manual_seed(0)
    (batch,) = predictor.predict_batch(
        [history[COLUMNS]], [history["timestamps"]], [future_timestamps(history["timestamps"], 5)], 5, sample_count=2
    )
    np.testing.assert_array_equal(batch.to_numpy(), first.to_numpy())


def test_torch_manual_seed_makes_an_unseeded_predict_df_reproducible(history):
    predictor = KronosPredictor(Kronos.from_pretrained("bundled"), KronosTokenizer.from_pretrained("bundled"))
    table = history.assign(id="GOOG")
    torch.manual_seed(0)
    first = predictor.predict_df(table, pred_len=3, sample_count=2)
    torch.manual_seed(0)
    again = predictor.predict_df(table, pred_len=3, sample_count=2)
    other = predictor.predict_df(table, pred_len=3, sample_count=2)  # the generator moved on
    assert first.attrs["seed"] == again.attrs["seed"] != other.attrs["seed"]
    pd.testing.assert_frame_equal(first, again)


def test_the_bundled_pair_loads_by_name_for_both_classes():
    tokenizer = KronosTokenizer.from_pretrained("bundled")
    model = Kronos.from_pretrained("bundled")
    assert tokenizer.config.s1_bits == model.config.s1_bits
    assert tokenizer.checkpoint.folder.name == "tokenizer"


def test_a_model_built_under_inference_mode_forecasts(history):
    with torch.inference_mode():
        predictor = KronosPredictor(Kronos.from_pretrained("bundled"), KronosTokenizer.from_pretrained("bundled"))
        inside = forecast(predictor, history, seed=3)
    outside = forecast(
        KronosPredictor(Kronos.from_pretrained("bundled"), KronosTokenizer.from_pretrained("bundled")), history, seed=3
    )
    np.testing.assert_array_equal(inside.to_numpy(), outside.to_numpy())
    with torch.no_grad():
        np.testing.assert_array_equal(forecast(predictor, history, seed=3).to_numpy(), outside.to_numpy())


def test_verbose_defaults_to_true_as_upstream():
    for method in (KronosPredictor.predict, KronosPredictor.predict_batch):
        assert inspect.signature(method).parameters["verbose"].default is True
