"""Our implementation against the reference's conformance vectors (tests/data/conformance/README.md).

Tolerances from that README: ids exact; logits and hidden states within 1e-4 absolute;
predictions within 1e-4 relative. Every predict case runs through both decoding paths.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from model.decoding.forecast import SeriesInput

COLUMNS = ["open", "high", "low", "close", "volume", "amount"]
PATHS = [pytest.param(False, id="recompute"), pytest.param(True, id="fast")]


def assert_rel_close(actual: np.ndarray, expected: np.ndarray) -> None:
    # Relative to each column's scale, so near-zero entries (volume without volume) don't divide by ~0.
    scale = np.maximum(np.abs(expected).max(axis=-2, keepdims=True), 1e-12)
    assert np.max(np.abs(actual - expected) / scale) < 1e-4


def test_tokenizer_encode_ids_are_exact(tokenizer, expected):
    s1, s2 = tokenizer.encode(torch.from_numpy(expected["x_norm"]).unsqueeze(0))
    np.testing.assert_array_equal(s1[0].numpy(), expected["s1_ids"])
    np.testing.assert_array_equal(s2[0].numpy(), expected["s2_ids"])


def test_tokenizer_decode(tokenizer, expected):
    with torch.inference_mode():
        out = tokenizer.decode(torch.from_numpy(expected["s1_ids"])[None], torch.from_numpy(expected["s2_ids"])[None])
    np.testing.assert_allclose(out[0].numpy(), expected["tokenizer_decode"], atol=1e-4, rtol=0)


def test_predictor_trunk_s1_logits_and_context(predictor_model, expected):
    with torch.inference_mode():
        logits, h = predictor_model.decode_s1(
            torch.from_numpy(expected["s1_ids"])[None],
            torch.from_numpy(expected["s2_ids"])[None],
            torch.from_numpy(expected["x_stamp"]).long()[None],
        )
    np.testing.assert_allclose(logits[0].numpy(), expected["s1_logits"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(h[0].numpy(), expected["context"], atol=1e-4, rtol=0)
    assert int(logits[0, -1].argmax()) == int(expected["s1_next_argmax"][0])


def test_s2_logits_full_and_last_position_paths_agree_with_reference(predictor_model, expected):
    s1_next = torch.from_numpy(expected["s1_next_argmax"])
    with torch.inference_mode():
        _, h = predictor_model.decode_s1(
            torch.from_numpy(expected["s1_ids"])[None],
            torch.from_numpy(expected["s2_ids"])[None],
            torch.from_numpy(expected["x_stamp"]).long()[None],
        )
        full = predictor_model.decode_s2(h, s1_next.view(1, 1))[0, -1]
        keys, values = predictor_model.dep_layer.cross_attn.keys_values(h)
        last = predictor_model.s2_logits_last(h[:, -1], s1_next, keys, values)[0]
    np.testing.assert_allclose(full.numpy(), expected["s2_logits_last"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(last.numpy(), expected["s2_logits_last"], atol=1e-4, rtol=0)


def test_normalization_matches_reference(make_predictor, conformance_input, expected):
    x = conformance_input[COLUMNS].to_numpy(np.float32)
    np.testing.assert_allclose(make_predictor()._normalize(x), expected["x_norm"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("fast", PATHS)
@pytest.mark.parametrize("case", ["full", "window", "slides_midway"])
def test_predict_cases(case, fast, cases, expected, make_predictor, conformance_input, future_timestamps):
    args = cases["predict_cases"][case]
    predictor = make_predictor(max_context=args["max_context"], clip=args["clip"])
    series = SeriesInput(
        candles=conformance_input[COLUMNS].to_numpy(),
        timestamps=pd.DatetimeIndex(conformance_input["timestamps"]),
        future_timestamps=pd.DatetimeIndex(future_timestamps),
        temperature=args["T"],
        top_k=args["top_k"],
        top_p=args["top_p"],
        sample_count=args["sample_count"],
    )
    (forecast,) = predictor.forecast([series], fast=fast)
    assert forecast.mean.shape == (args["pred_len"], 6)
    assert_rel_close(forecast.mean, expected[f"predict_{case}"])


def test_predict_dataframe_api_full_case(make_predictor, conformance_input, future_timestamps, expected):
    frame = make_predictor(max_context=128).predict(
        conformance_input[COLUMNS],
        conformance_input["timestamps"],
        future_timestamps,
        pred_len=16,
        T=1.0,
        top_k=1,
        top_p=1.0,
        sample_count=1,
    )
    assert list(frame.columns) == COLUMNS
    assert (frame.index == pd.DatetimeIndex(future_timestamps)).all()
    assert_rel_close(frame.to_numpy(), expected["predict_full"])


@pytest.mark.parametrize("fast", PATHS)
def test_predict_batch_case(fast, make_predictor, conformance_input, conformance_input2, future_timestamps, expected):
    predictor = make_predictor(max_context=48)
    series = [
        SeriesInput(
            candles=frame[COLUMNS].to_numpy(),
            timestamps=pd.DatetimeIndex(frame["timestamps"]),
            future_timestamps=pd.DatetimeIndex(future_timestamps),
            temperature=1.0,
            top_k=1,
            top_p=1.0,
        )
        for frame in (conformance_input, conformance_input2)
    ]
    forecasts = predictor.forecast(series, fast=fast)
    assert_rel_close(np.stack([f.mean for f in forecasts]), expected["predict_batch"])


def test_predict_batch_dataframe_api(
    make_predictor, conformance_input, conformance_input2, future_timestamps, expected
):
    frames = make_predictor(max_context=48).predict_batch(
        [conformance_input[COLUMNS], conformance_input2[COLUMNS]],
        [conformance_input["timestamps"], conformance_input2["timestamps"]],
        [future_timestamps, future_timestamps],
        pred_len=16,
        T=1.0,
        top_k=1,
        top_p=1.0,
    )
    assert_rel_close(np.stack([f.to_numpy() for f in frames]), expected["predict_batch"])


@pytest.mark.parametrize("fast", PATHS)
def test_predict_without_volume(fast, make_predictor, conformance_input, future_timestamps, expected):
    predictor = make_predictor(max_context=48)
    series = SeriesInput(
        candles=conformance_input[["open", "high", "low", "close"]].to_numpy(),
        timestamps=pd.DatetimeIndex(conformance_input["timestamps"]),
        future_timestamps=pd.DatetimeIndex(future_timestamps),
        temperature=1.0,
        top_k=1,
        top_p=1.0,
    )
    (forecast,) = predictor.forecast([series], fast=fast)
    assert_rel_close(forecast.mean, expected["predict_no_volume"])
