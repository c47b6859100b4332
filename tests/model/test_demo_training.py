"""kronos-train's corpus of real candles, its candle-valid augmentations and early stopping."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from model.training import series_from_frame, train
from model.training.corpus import HELDOUT_NAMES, SOURCES, TRAIN_NAMES, heldout_series, load_series, training_series
from model.training.data import CandleSeries, WindowSampler, aggregate_candles, invert_candles
from model.training.presets import preset
from model.training.trainer import new_pair
from model.training.validation import EarlyStopping

TINY = preset("tiny")


def _valid(c: np.ndarray) -> bool:
    """Candles whose high is the highest and low the lowest price, all prices and volumes positive."""
    o, h, lo, cl = c[:, 0], c[:, 1], c[:, 2], c[:, 3]
    return bool(
        (h >= np.maximum(o, cl) * (1 - 1e-6)).all()
        and (lo <= np.minimum(o, cl) * (1 + 1e-6)).all()
        and (c[:, :4] > 0).all()
        and (c[:, 4:] >= 0).all()
    )


@pytest.fixture(scope="module")
def corpus() -> dict[str, CandleSeries]:
    return {s.name: s for s in training_series() + heldout_series()}


def test_corpus_has_every_instrument_with_real_valid_candles(corpus):
    assert set(TRAIN_NAMES).isdisjoint(HELDOUT_NAMES)
    assert set(corpus) == set(TRAIN_NAMES) | set(HELDOUT_NAMES) == set(SOURCES)
    for name, s in corpus.items():
        assert len(s) >= 150, name
        assert _valid(s.candles), name
        assert s.timestamps.is_monotonic_increasing and s.timestamps.is_unique, name
    # Split-adjusted: AAPL's 2:1 splits (2000, 2005) are not 50% one-day drops in the training data.
    aapl = corpus["AAPL"].candles[:, 3]
    day_moves = np.abs(np.diff(np.log(aapl)))
    assert np.sort(day_moves)[-2] < 0.25  # the one larger move is the real 2000-09-29 crash (-52%)
    assert {"SP500", "NASDAQ"} == set(HELDOUT_NAMES)
    assert corpus["SP500"].timestamps[0] == pd.Timestamp("1999-01-04") and len(corpus["SP500"]) == 5031


def test_overlapping_sources_never_share_a_candle(corpus):
    assert corpus["EURUSD_ASK"].timestamps[-1] < corpus["EURUSD"].timestamps[0]
    assert corpus["GOOGL"].timestamps[0] > corpus["GOOG"].timestamps[-1]


def test_unknown_corpus_name_is_a_clear_error():
    with pytest.raises(Exception, match="unknown corpus series 'NOPE'"):
        load_series("NOPE")


def test_augmentations_keep_real_candles_valid(corpus):
    for name in ("GOOG", "EURUSD", "MSFT"):
        c = corpus[name].candles[:400].astype(np.float64)
        for k in (1, 2, 4):
            merged = aggregate_candles(c, k)
            assert merged.shape == (400 // k, 6) and _valid(merged)
            assert merged[0, 0] == c[0, 0] and merged[-1, 3] == c[k * len(merged) - 1, 3]
            assert merged[:, 1].max() == c[:, 1].max() and merged[:, 2].min() == c[:, 2].min()
            np.testing.assert_allclose(merged[:, 4].sum(), c[: k * len(merged), 4].sum(), rtol=1e-9)
        inverse = invert_candles(c)
        assert _valid(inverse)
        np.testing.assert_allclose(invert_candles(inverse), c, rtol=1e-12)
        # An up move becomes a down move of the same log size.
        np.testing.assert_allclose(np.diff(np.log(inverse[:, 3])), -np.diff(np.log(c[:, 3])), atol=1e-9)


def test_sampler_windows_stay_in_the_training_part_with_augmentations(corpus):
    # Held-out rows poisoned with NaN: any window that reached them would not be finite.
    real = corpus["EURUSD"]
    candles = real.candles[:1000].copy()
    candles[800:] = np.nan
    poisoned = CandleSeries("poisoned", candles, real.timestamps[:1000])
    sampler = WindowSampler([poisoned], 0.2, 16, 150, 8, aggregate=(1, 2, 4), invert_prob=0.5, seed=3)
    lengths = set()
    for step in range(60):
        batch = sampler.batch(step, 8)
        assert torch.isfinite(batch.candles).all()
        lengths.add(batch.candles.shape[1])
    assert len(lengths) > 10
    # Same (seed, step), same batch: resumable runs draw what an uninterrupted one would.
    again = WindowSampler([poisoned], 0.2, 16, 150, 8, aggregate=(1, 2, 4), invert_prob=0.5, seed=3)
    assert torch.equal(sampler.batch(7, 8).candles, again.batch(7, 8).candles)


def test_merged_windows_carry_the_merged_period_in_their_time_features(corpus):
    s = corpus["EURUSD"]
    sampler = WindowSampler([s], 0.2, 20, 20, 4, aggregate=(4,), seed=0)
    hours = sampler.batch(0, 4).stamps[..., 1]  # (minute, hour, weekday, day, month)
    steps = torch.diff(hours, dim=1) % 24
    assert (steps >= 4).float().mean() > 0.9  # 4-hour candles (weekend gaps are longer)


def test_early_stopping_keeps_the_best_weights_and_stops_after_patience(tmp_path):
    model, _ = new_pair(TINY.predictor, TINY.tokenizer, seed=0)
    early = EarlyStopping(2, tmp_path / "best")
    weights = []
    for step, score in [(10, 3.0), (20, 2.0), (30, 2.5), (40, 2.6)]:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01)
        weights.append({k: v.clone() for k, v in model.state_dict().items()})
        assert not early.stopped
        early.update({"step": step, "ce_s1": score, "ce_s2": score}, model)
    assert early.stopped and early.best_step == 20
    early.restore(model)
    assert all(torch.equal(v, weights[1][k]) for k, v in model.state_dict().items())
    # After a resume, the same verdict from the logged validations and the best weights on disk.
    fresh, _ = new_pair(TINY.predictor, TINY.tokenizer, seed=1)
    replayed = EarlyStopping(2, tmp_path / "best")
    replayed.replay(
        [{"step": s, "ce_s1": v, "ce_s2": v} for s, v in [(10, 3.0), (20, 2.0), (30, 2.5), (40, 2.6)]], fresh
    )
    assert replayed.stopped and replayed.best_step == 20
    replayed.restore(fresh)
    assert all(torch.equal(v, weights[1][k]) for k, v in fresh.state_dict().items())


def test_run_with_early_stopping_augmentations_keeps_a_validated_step(goog, eurusd, tmp_path):
    series = [
        series_from_frame(goog.iloc[-600:].reset_index(names="date"), "GOOG"),
        series_from_frame(eurusd.iloc[-600:].reset_index(names="time"), "EURUSD"),
    ]
    settings = dataclasses.replace(
        TINY.settings,
        eval_every=10,
        patience=2,
        val_windows=16,
        aggregate=(1, 2),
        invert_prob=0.5,
        predictor=dataclasses.replace(TINY.settings.predictor, steps=40),
    )
    model, tokenizer = new_pair(TINY.predictor, TINY.tokenizer, seed=0)
    result = train(series, tmp_path / "run", settings, model=model, tokenizer=tokenizer)
    for stage in result.stages:
        scores = {v["step"]: (v[next(k for k in v if k != "step")]) for v in stage.validation}
        assert stage.best_step in scores
        assert all(np.isfinite(v) for v in scores.values())
        assert len(stage.validation) <= stage.steps // 10 + 1


def test_demo_command_trains_on_the_corpus_and_writes_a_loadable_checkpoint(tmp_path):
    from model import Kronos, KronosTokenizer
    from model.training.cli import main

    out = tmp_path / "demo"
    argv = ["--demo", "--size", "tiny", "--out", str(out), "--tokenizer-steps", "3", "--predictor-steps", "3"]
    assert main([*argv, "--no-progress"]) == 0
    assert Kronos.from_pretrained(out).config == TINY.predictor
    assert KronosTokenizer.from_pretrained(out / "tokenizer").config == TINY.tokenizer
