"""Request bodies to model inputs: the two shapes, the fixed calendar, one-row series."""

from __future__ import annotations

import json

import numpy as np
import pytest

from model.series.calendars import SYNTHETIC_START as CALENDAR_START
from services.kronos_fastapi.errors import InvalidRequest
from services.kronos_fastapi.forecasting import parse_batch, parse_single
from services.kronos_fastapi.settings import load_settings

SETTINGS = load_settings(env_file=None)


def _single(body: dict):
    return parse_single(json.dumps(body).encode(), SETTINGS)


def test_rows_without_timestamps_sit_on_a_fixed_calendar():
    parsed = _single({"data": [[1, 2, 0.5, 1.5]] * 3, "pred_len": 2})
    series = parsed.items[0].series
    assert series.timestamps[0] == CALENDAR_START
    assert list(series.future_timestamps.strftime("%Y-%m-%d")) == ["2024-01-04", "2024-01-05"]
    assert not parsed.items[0].has_timestamps
    hourly = _single({"data": [[1, 2, 0.5, 1.5]] * 3, "pred_len": 1, "freq": "h"}).items[0].series
    assert str(hourly.future_timestamps[0]) == "2024-01-01 03:00:00"


def test_one_row_is_a_flat_two_row_history():
    item = _single({"data": [[100, 105, 98, 102]], "pred_len": 3}).items[0]
    series = item.series
    assert item.notes[0].startswith("data: 1 row: the model needs 2, so the row is read as a flat history")
    assert not any("1 row" in n for n in _single({"data": [[100, 105, 98, 102]] * 2}).items[0].notes)
    assert series.candles.shape == (2, 4)
    assert np.array_equal(series.candles[0], series.candles[1])
    assert series.timestamps[1] < series.future_timestamps[0]
    stamped = _single(
        {"data": [[100, 105, 98, 102]], "timestamps": ["2024-05-01T10:00:00"], "pred_len": 1, "freq": "5min"}
    )
    s = stamped.items[0].series
    assert [str(t) for t in s.timestamps] == ["2024-05-01 09:55:00", "2024-05-01 10:00:00"]
    assert str(s.future_timestamps[0]) == "2024-05-01 10:05:00"


def test_named_rows_become_columns_in_order():
    body = {"data": [{"close": 3, "open": 2, "low": 1, "high": 4, "volume": 5}] * 2, "pred_len": 1}
    assert _single(body).items[0].series.candles.tolist() == [[2, 4, 1, 3, 5]] * 2


def test_legacy_pred_len_comes_from_prediction_timestamps():
    body = {
        "candles": [{"open": 1, "high": 2, "low": 0.5, "close": 1.5}] * 2,
        "timestamps": ["2024-01-01T00:00:00", "2024-01-01T01:00:00"],
        "prediction_timestamps": ["2024-01-01T02:00:00", "2024-01-01T03:00:00", "2024-01-01T05:00:00"],
        "overrides": {"temperature": 0.5},
    }
    parsed = _single(body)
    assert parsed.legacy and parsed.items[0].series.pred_len == 3
    assert parsed.items[0].series.temperature == 0.5
    # The caller's prediction timestamps are used as given, even when irregular.
    assert str(parsed.items[0].series.future_timestamps[-1]) == "2024-01-01 05:00:00"


def test_batch_size_limit_is_checked_before_the_items():
    body = {"batch": [{"not": "checked"}] * (SETTINGS.max_batch_items + 1)}
    with pytest.raises(InvalidRequest, match="KRONOS_MAX_BATCH_ITEMS"):
        parse_batch(json.dumps(body).encode(), SETTINGS)


def test_two_timestamps_continue_their_step():
    body = {"data": [[1, 2, 0.5, 1.5]] * 2, "timestamps": ["2024-03-04T09:30:00", "2024-03-04T09:35:00"], "pred_len": 2}
    future = _single(body).items[0].series.future_timestamps
    assert [str(t) for t in future] == ["2024-03-04 09:40:00", "2024-03-04 09:45:00"]
    irregular = {
        **body,
        "data": [[1, 2, 0.5, 1.5]] * 4,
        "timestamps": ["2024-03-04T09:00", "2024-03-04T09:01", "2024-03-04T09:03", "2024-03-04T09:04"],
    }
    assert str(_single(irregular).items[0].series.future_timestamps[0]) == "2024-03-04 09:05:00"
