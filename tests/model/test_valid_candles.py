"""Valid candles on real data: the repair is the identity on valid candles, and ``clean=True``
forecasts have valid candles in every path, the mean and the bands, without invented columns;
the drop-in ``predict`` keeps the reference's numbers unless asked."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from model import SeriesInput, future_timestamps
from model.decoding.forecast import SEED_BITS
from model.series.candles import invalid_rows, repair_candles


def _valid(candles: np.ndarray) -> bool:
    o, h, lo, c = (candles[..., i] for i in range(4))
    return bool((lo <= np.minimum(o, c)).all() and (np.maximum(o, c) <= h).all())


def test_repair_is_the_identity_on_valid_candles(goog, eurusd):
    for frame in (goog, eurusd):
        candles = frame[["open", "high", "low", "close", "volume"]].to_numpy()
        repaired, changed = repair_candles(candles)
        assert changed == 0 and np.array_equal(repaired, candles)
        assert not len(invalid_rows(candles))


def test_repair_widens_the_wick_and_keeps_the_body():
    broken = np.array([[62.40, 61.64, 60.0, 61.0], [10.0, 12.0, 10.5, 11.0], [5.0, 4.0, 6.0, 5.5]])
    repaired, changed = repair_candles(broken)
    assert changed == 3 and _valid(repaired)
    assert np.array_equal(repaired[:, [0, 3]], broken[:, [0, 3]])  # open and close never move
    assert repaired.tolist() == [[62.40, 62.40, 60.0, 61.0], [10.0, 12.0, 10.0, 11.0], [5.0, 5.5, 5.0, 5.5]]
    assert list(invalid_rows(broken)) == [0, 1, 2]


@pytest.mark.parametrize("source", ["goog", "eurusd"])
def test_clean_forecasts_are_valid_candles_everywhere(make_predictor, request, source):
    frame = request.getfixturevalue(source).iloc[-120:]
    predictor = make_predictor()
    ohlc = frame[["open", "high", "low", "close"]].to_numpy()
    series = SeriesInput(ohlc, frame.index, future_timestamps(frame.index, 12), sample_count=8, seed=11, clean=True)
    raw = SeriesInput(ohlc, frame.index, series.future_timestamps, sample_count=8, seed=11)
    clean, reference = predictor.forecast([series, raw])
    assert not _valid(reference.samples) and clean.repaired > 0  # the model does break the rule
    assert _valid(clean.samples) and _valid(clean.mean)
    assert _valid(clean.quantiles([0.1, 0.5, 0.9]))  # per-column quantile rows of repaired paths
    band = clean.close_quantiles([0.1, 0.5, 0.9])
    assert (band[0] <= band[1]).all() and (band[1] <= band[2]).all()
    assert (band[0] >= clean.quantiles([0.1])[0][:, 2]).all()  # the close band sits above the low band
    assert clean.columns == ("open", "high", "low", "close")  # no volume given: none invented
    assert clean.to_frame().columns.tolist() == ["open", "high", "low", "close"]
    # The same sampled paths: the repair moved only wicks.
    np.testing.assert_allclose(clean.samples[..., [0, 3]], reference.samples[..., [0, 3]], rtol=1e-6)
    assert clean.repaired == np.count_nonzero(~np.isclose(clean.samples[..., 1:3], reference.samples[..., 1:3]).all(-1))


def test_predict_keeps_reference_numbers_unless_asked(make_predictor, goog):
    frame = goog.iloc[-80:][["open", "high", "low", "close"]]
    y = future_timestamps(frame.index, 5)
    predictor = make_predictor()
    plain = predictor.predict(frame, pd.Series(frame.index), pd.Series(y), 5, sample_count=4, seed=3)
    again = predictor.predict(frame, pd.Series(frame.index), pd.Series(y), 5, sample_count=4, seed=3)
    assert plain.columns.tolist() == ["open", "high", "low", "close", "volume", "amount"]  # as the reference
    pd.testing.assert_frame_equal(plain, again)
    # Capitalised columns, as most data sources name them, are the same columns.
    capital = frame.rename(columns=str.capitalize)
    cleaned = predictor.predict(capital, pd.Series(frame.index), pd.Series(y), 5, sample_count=4, seed=3, clean=True)
    assert cleaned.columns.tolist() == ["open", "high", "low", "close"]
    assert _valid(cleaned.to_numpy())
    np.testing.assert_allclose(cleaned["close"], plain["close"], rtol=1e-5)


def test_drawn_seeds_are_exact_javascript_numbers(make_predictor, goog):
    frame = goog.iloc[-40:]
    candles = frame[["open", "high", "low", "close"]].to_numpy()
    series = [SeriesInput(candles, frame.index, future_timestamps(frame.index, 2)) for _ in range(20)]
    seeds = [f.seed for f in make_predictor().forecast(series)]
    assert all(0 <= s < 2**SEED_BITS and int(float(s)) == s for s in seeds)
    assert len(set(seeds)) == 20
