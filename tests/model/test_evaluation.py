"""The backtest metrics against values worked out by hand on small fixed series (model/evaluation/)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from model.evaluation import (
    Predictive,
    backtest_report,
    backtest_windows,
    baseline_forecasts,
    calibrate_windows,
    conformal_margin,
    conformity_scores,
    crps_from_samples,
    drift_forecast,
    last_value_forecast,
    log_volatility,
    reliability_bins,
    rows_needed,
    score,
    symmetric_pairs,
    up_probability,
    windows_needed,
)


def test_windows_follow_the_contract():
    # 30 rows, pred_len 5, 3 windows 4 apart, lookback 10: origins 25, 21, 17; contexts from 15, 11, 7.
    windows = backtest_windows(30, 5, 3, 4, 10)
    assert [(w.index, w.origin, w.start) for w in windows] == [(0, 25, 15), (1, 21, 11), (2, 17, 7)]
    # the oldest window keeps at least 2 rows of context; one row fewer is refused, naming the need
    assert rows_needed(5, 3, 4) == 2 + 5 + 8
    assert backtest_windows(15, 5, 3, 4, 100)[-1].start == 0
    with pytest.raises(ValueError, match="need at least 15 rows"):
        backtest_windows(14, 5, 3, 4, 100)


def test_crps_of_three_samples_by_hand():
    # F steps 1/3, 2/3, 1 at 1, 2, 3; y = 2: ∫(F - 1{x ≥ 2})² = 1 · (1/3)² + 1 · (1/3)² = 2/9
    samples = np.array([[[1.0], [2.0], [3.0]]])
    assert crps_from_samples(samples, np.array([[2.0]]))[0, 0] == pytest.approx(2 / 9)
    # y = 5, outside: mean |x - 5| = 3, minus half the mean pairwise distance 8/9 → 3 - 4/9
    assert crps_from_samples(samples, np.array([[5.0]]))[0, 0] == pytest.approx(3 - 4 / 9)
    # one sample: the absolute error
    assert crps_from_samples(np.array([[[4.0, 1.0]]]), np.array([[1.5, 1.0]])).tolist() == [[2.5, 0.0]]


def test_point_metrics_by_hand():
    point = np.array([[11.0, 12.0], [9.0, 8.0]])
    actual = np.array([[10.0, 14.0], [10.0, 11.0]])
    paths = np.repeat(point[:, None, :], 2, axis=1)  # two identical paths: the mean is the point
    metrics = score(Predictive.from_paths(paths, []), actual, np.array([10.0, 10.0]), [])
    # errors 1, -2, -1, -3
    assert metrics["mae"] == pytest.approx(7 / 4)
    assert metrics["rmse"] == pytest.approx(math.sqrt(15 / 4))
    assert metrics["mape"] == pytest.approx(100 * (1 / 10 + 2 / 14 + 1 / 10 + 3 / 11) / 4)
    # last step: window 0 forecast up, went up (right); window 1 forecast down, went up (wrong)
    assert metrics["direction_accuracy"] == 0.5
    # identical paths: CRPS is the absolute error
    assert metrics["crps"] == pytest.approx(7 / 4)
    step1, step2 = metrics["per_horizon"]
    assert (step1["step"], step1["mae"], step2["mae"]) == (1, 1.0, 2.5)
    # step 1: the truth (10) did not move from the last close 10 in either window: no direction to score
    assert step1["direction_accuracy"] is None
    assert step2["direction_accuracy"] == 0.5


def test_direction_skips_windows_without_a_move():
    point = np.array([[11.0], [12.0]])
    actual = np.array([[10.0], [13.0]])  # window 0: the truth did not move from 10
    metrics = score(Predictive.from_paths(point[:, None, :], []), actual, np.array([10.0, 10.0]), [])
    assert metrics["direction_accuracy"] == 1.0
    # persistence forecasts no move: no direction at all
    flat = score(Predictive.from_paths(np.full((2, 1, 1), 10.0), []), actual, np.array([10.0, 10.0]), [])
    assert flat["direction_accuracy"] is None


def test_coverage_per_symmetric_pair():
    assert symmetric_pairs([0.5, 0.9, 0.1, 0.05, 0.95, 0.3]) == [(0.05, 0.95), (0.1, 0.9)]
    # paths 1..5: the 0.25 and 0.75 quantiles (linear) are 2 and 4; edges count as inside
    paths = np.array([[[1.0], [2.0], [3.0], [4.0], [5.0]]] * 4)
    actual = np.array([[4.0], [4.5], [2.0], [1.9]])
    metrics = score(Predictive.from_paths(paths, [0.25, 0.75]), actual, np.full(4, 3.0), [(0.25, 0.75)])
    assert metrics["coverage"] == [{"lower": 0.25, "upper": 0.75, "nominal": 0.5, "observed": 0.5}]


def test_up_probability_brier_and_reliability():
    samples = np.array([[[1.0], [3.0], [4.0], [5.0]], [[1.0], [1.0], [1.0], [3.0]]])  # last close 2
    p = up_probability(samples, np.array([2.0, 2.0]))
    assert p.ravel().tolist() == [0.75, 0.25]
    went_up = np.array([[True], [True]])
    metrics = score(Predictive.from_paths(samples, []), np.array([[3.0], [3.0]]), np.array([2.0, 2.0]), [])
    assert metrics["brier"] == pytest.approx(((0.75 - 1) ** 2 + (0.25 - 1) ** 2) / 2)
    bins = reliability_bins(p, went_up, bins=4)
    assert [b["count"] for b in bins] == [0, 1, 0, 1]  # 0.25 falls in [0.25, 0.5), 0.75 in [0.75, 1]
    assert bins[1] == {"lower": 0.25, "upper": 0.5, "count": 1, "forecast": 0.25, "observed": 1.0}
    assert bins[0]["forecast"] is None and bins[0]["observed"] is None


def test_baselines_exactly():
    context = np.array([10.0, 11.0, 13.0])
    assert last_value_forecast(context, 2).tolist() == [13.0, 13.0]
    assert drift_forecast(context, 2).tolist() == [14.5, 16.0]  # slope (13 - 10) / 2
    sigma = abs(math.log(1.1) - math.log(13 / 11)) / math.sqrt(2)  # std (ddof 1) of two log returns
    assert log_volatility(context) == pytest.approx(sigma)
    assert log_volatility(context[:2]) == 0.0  # one return: no spread to measure
    level = 0.8413447460685429  # z = 1
    forecasts = baseline_forecasts([context], 2, [1 - level, level])
    upper = forecasts["last_value"].band_edges[level][0]
    assert upper == pytest.approx([13 * math.exp(sigma), 13 * math.exp(sigma * math.sqrt(2))])
    lower = forecasts["drift"].band_edges[1 - level][0]
    assert lower == pytest.approx([14.5 * math.exp(-sigma), 16 * math.exp(-sigma * math.sqrt(2))])
    # the band's samples are its quantiles at (k + 0.5) / 100: their median is the point forecast
    assert np.median(forecasts["drift"].samples[0], axis=0) == pytest.approx([14.5, 16.0])


def test_report_skill_against_the_baselines():
    # two windows of one step; the model's paths are [x - 1, x + 1] around the truth 20 and 30
    contexts = [np.array([18.0, 19.0]), np.array([28.0, 28.0])]
    actual = np.array([[20.0], [30.0]])
    paths = np.array([[[19.0], [21.0]], [[29.0], [31.0]]])
    report = backtest_report(paths, actual, contexts, [5, 4], [0.25, 0.75])
    model = report["metrics"]
    assert model["mae"] == 0.0  # the mean path is the truth
    # CRPS per window: mean |x - y| = 1, minus half the pairwise mean (2 · 2 / 4 = 1) → 0.5
    assert model["crps"] == pytest.approx(0.5)
    last = report["baselines"]["last_value"]
    assert last["mae"] == pytest.approx((1 + 2) / 2)  # 19 vs 20, 28 vs 30
    assert last["skill"]["mae"] == pytest.approx(1.0)
    assert last["skill"]["crps"] == pytest.approx(1 - 0.5 / last["crps"])
    drift = report["baselines"]["drift"]
    assert drift["mae"] == pytest.approx((0 + 2) / 2)  # 19 + 1 = 20; flat 28
    assert report["window_mae"] == [0.0, 0.0]


def test_conformal_margin_and_the_windows_it_needs():
    scores = np.array([[0.1], [-0.2], [0.3], [0.0]])
    assert conformal_margin(scores, 0.8).tolist() == [0.3]  # rank ceil(5 · 0.8) = 4 of 4
    assert conformal_margin(scores, 0.5).tolist() == [0.1]  # rank ceil(2.5) = 3: sorted -0.2, 0, 0.1
    assert conformal_margin(scores[:3], 0.8) is None  # rank 4 of 3
    assert (windows_needed(0.8), windows_needed(0.9), windows_needed(0.5)) == (4, 9, 1)
    # truth 12 above a [9, 11] band by 1 with last close 10: score 0.1; inside by 1: -0.1
    got = conformity_scores(
        np.array([[9.0], [9.0]]), np.array([[11.0], [11.0]]), np.array([[12.0], [10.0]]), np.array([10.0, 10.0])
    )
    assert got.ravel().tolist() == pytest.approx([0.1, -0.1])


def test_calibration_never_looks_ahead():
    rng = np.random.default_rng(0)
    windows, steps, paths_per = 14, 3, 16
    origins = 200 - steps - np.arange(windows) * steps  # newest first, step = pred_len
    actual = 100 + rng.normal(0, 2, (windows, steps))
    paths = 100 + rng.normal(0, 1, (windows, paths_per, steps))  # too narrow: calibration must widen
    last = np.full(windows, 100.0)
    pairs = [(0.1, 0.9)]
    forecast = Predictive.from_paths(paths, [0.1, 0.9])
    bands = calibrate_windows(forecast, actual, last, origins, steps, pairs)[(0.1, 0.9)]
    # the oldest 4 windows have fewer than 4 windows before them: no calibrated band
    known = ~np.isnan(bands[0][:, 0])
    assert known.tolist() == [True] * (windows - 4) + [False] * 4
    # perturb the newest 5 windows (truth and forecast): every older window's band is unchanged
    actual2, paths2 = actual.copy(), paths.copy()
    actual2[:5] += 50
    paths2[:5] *= 3
    bands2 = calibrate_windows(Predictive.from_paths(paths2, [0.1, 0.9]), actual2, last, origins, steps, pairs)
    np.testing.assert_array_equal(bands2[(0.1, 0.9)][0][5:], bands[0][5:])
    np.testing.assert_array_equal(bands2[(0.1, 0.9)][1][5:], bands[1][5:])
    assert not np.allclose(bands2[(0.1, 0.9)][0][:5][known[:5]], bands[0][:5][known[:5]])
    # overlapping windows (step < pred_len) are not used until they are fully scored
    overlapping = 200 - steps - np.arange(windows)  # step 1
    bands3 = calibrate_windows(forecast, actual, last, overlapping, steps, pairs)[(0.1, 0.9)]
    assert np.isnan(bands3[0][:, 0]).tolist() == [False] * (windows - 6) + [True] * 6  # 4 earlier + 2 overlapping


def test_calibrated_band_reaches_nominal_on_exchangeable_errors():
    # Forecast bands far too narrow for the noise; conformal calibration brings 10-90 coverage to about 80%.
    rng = np.random.default_rng(1)
    windows, steps = 400, 2
    origins = 10_000 - steps - np.arange(windows) * steps
    actual = 100 + rng.normal(0, 3, (windows, steps))
    paths = 100 + rng.normal(0, 0.5, (windows, 50, steps))
    report = backtest_report(
        paths, actual, [np.array([99.0, 100.0])] * windows, origins, [0.1, 0.5, 0.9], calibrate=True
    )
    (coverage,) = report["metrics"]["coverage"]
    assert coverage["observed"] < 0.3
    assert coverage["calibrated_windows"] == windows - 4
    assert abs(coverage["observed_calibrated"] - 0.8) < 0.05
