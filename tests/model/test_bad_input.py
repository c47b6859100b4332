"""Bad input to predict: each case is a ValueError whose message names the problem."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from model import DeviceError, DeviceUnavailableError, InputError, KronosPredictor

COLUMNS = ["open", "high", "low", "close", "volume", "amount"]


@pytest.fixture
def call(make_predictor, conformance_input, future_timestamps):
    predictor = make_predictor(max_context=64)

    def run(df=None, x_ts=None, y_ts=None, pred_len=16, **kwargs):
        df = conformance_input[COLUMNS] if df is None else df
        x_ts = conformance_input["timestamps"] if x_ts is None else x_ts
        y_ts = future_timestamps if y_ts is None else y_ts
        return predictor.predict(df, x_ts, y_ts, pred_len, **kwargs)

    return run


def _with(frame: pd.DataFrame, row: int, column: str, value) -> pd.DataFrame:
    frame = frame.copy()
    frame.loc[frame.index[row], column] = value
    return frame


@pytest.mark.parametrize(
    "kwargs_factory,message",
    [
        (lambda inp, fut: {"df": inp[["open", "high", "close"]]}, "missing price column(s) low"),
        (
            lambda inp, fut: {"df": _with(inp[COLUMNS], 5, "close", np.nan)},
            "column close has a NaN or infinite value at row 5",
        ),
        (
            lambda inp, fut: {"df": _with(inp[COLUMNS], 7, "volume", np.inf)},
            "column volume has a NaN or infinite value at row 7",
        ),
        (
            lambda inp, fut: {"df": inp[COLUMNS].iloc[:1], "x_ts": inp["timestamps"].iloc[:1]},
            "needs at least 2 rows",
        ),
        (lambda inp, fut: {"pred_len": 0, "y_ts": fut.iloc[:0]}, "pred_len must be a positive integer"),
        (lambda inp, fut: {"pred_len": -3}, "pred_len must be a positive integer"),
        (
            lambda inp, fut: {"pred_len": 16, "y_ts": fut.iloc[:10]},
            "y_timestamp must have pred_len = 16 entries, got 10",
        ),
        (lambda inp, fut: {"x_ts": inp["timestamps"].iloc[:-1]}, "x_timestamp: expected 80 timestamps, got 79"),
        (
            lambda inp, fut: {"x_ts": inp["timestamps"].iloc[::-1]},
            "x_timestamp: timestamps must be strictly increasing",
        ),
        (
            lambda inp, fut: {"y_ts": pd.Series(list(fut.iloc[:8]) * 2)},
            "y_timestamp: timestamps must be strictly increasing",
        ),
        (
            lambda inp, fut: {"y_ts": inp["timestamps"].iloc[:16]},
            "y_timestamp must start after the last input timestamp",
        ),
        (lambda inp, fut: {"x_ts": ["not a date"] * 80}, "x_timestamp: not parseable as timestamps"),
        (
            lambda inp, fut: {"pred_len": 65, "y_ts": pd.date_range(fut.iloc[0], periods=65, freq="5min")},
            "exceeds max_context 64",
        ),
        (lambda inp, fut: {"T": 0.0}, "T (temperature) must be a finite number > 0"),
        (lambda inp, fut: {"top_p": 1.5}, "top_p must be in (0, 1]"),
        (lambda inp, fut: {"top_k": -1}, "top_k must be an integer >= 0"),
        (lambda inp, fut: {"sample_count": 0}, "sample_count must be an integer >= 1"),
        (lambda inp, fut: {"df": [[1, 2, 3, 4]]}, "df must be a pandas DataFrame"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_bad_predict_input_is_a_clear_value_error(call, conformance_input, future_timestamps, kwargs_factory, message):
    with pytest.raises(ValueError) as info:
        call(**kwargs_factory(conformance_input, future_timestamps))
    assert isinstance(info.value, InputError)
    assert message in str(info.value)


def test_non_numeric_column(call, conformance_input):
    frame = conformance_input[COLUMNS].astype({"open": object})
    frame.loc[frame.index[3], "open"] = "abc"
    with pytest.raises(InputError, match="must be numeric"):
        call(df=frame)


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "tpu", "cuda0", ""])
def test_unknown_device_is_a_value_error(predictor_model, tokenizer, device):
    with pytest.raises(DeviceError, match="unknown device"):
        KronosPredictor(predictor_model, tokenizer, device=device)


def test_absent_cuda_device_is_reported(predictor_model, tokenizer):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(DeviceUnavailableError, match="'cuda:0' requested but CUDA is not available"):
        KronosPredictor(predictor_model, tokenizer, device="cuda:0")


def test_predict_batch_length_mismatch(make_predictor, conformance_input, future_timestamps):
    with pytest.raises(InputError, match="same length"):
        make_predictor().predict_batch(
            [conformance_input[COLUMNS]], [conformance_input["timestamps"]] * 2, [future_timestamps], 16
        )
