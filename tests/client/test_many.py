"""``forecast_many``: a universe in, the long format out, per-id seeds, chunks within the server's limits."""

from __future__ import annotations

import logging

import pandas as pd
import pytest
from client_support import API_KEY
from kronos_client import Client, ValidationError, series_seed

OPTIONS = {"sample_count": 4, "quantiles": (0.1, 0.9), "seed": 21}


def _frames(universe: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return {i: rows.drop(columns="id").set_index("timestamps") for i, rows in universe.groupby("id")}


def test_a_long_table_and_frames_by_id_give_the_same_long_table(kronos, universe):
    long = kronos.forecast_many(universe, 5, **OPTIONS)
    by_id = kronos.forecast_many(_frames(universe), 5, **OPTIONS)
    pd.testing.assert_frame_equal(long, by_id)
    candles = ["open", "high", "low", "close", "volume"]
    assert list(long.columns) == ["id", "timestamps", "step", *candles, "close_q0.1", "close_q0.9", "p_up"]
    assert list(long["id"].unique()) == sorted(universe["id"].unique()) and len(long) == 10 * 5
    assert long.attrs == {"errors": {}, "seed": 21}


def test_each_id_is_its_single_forecast_with_its_own_seed(kronos, universe):
    """Whatever the universe and the chunks, series i is forecast(frame_i, seed=series_seed(seed, i))."""
    long = kronos.forecast_many(universe, 5, **OPTIONS)
    part = kronos.forecast_many(universe[universe["id"].isin(["GOOG-3", "GOOG-7"])], 5, **OPTIONS)
    frames = _frames(universe)
    for series_id in ("GOOG-3", "GOOG-7"):
        rows = long[long["id"] == series_id].reset_index(drop=True)
        pd.testing.assert_frame_equal(rows, part[part["id"] == series_id].reset_index(drop=True))
        seed = series_seed(21, series_id)
        single = kronos.forecast(frames[series_id], 5, sample_count=4, quantiles=(0.1, 0.9), seed=seed)
        assert list(rows["timestamps"]) == list(single.frame.index)
        assert list(rows["close"]) == list(single.frame["close"])
        assert list(rows["close_q0.9"]) == list(single.bands[0.9]) and list(rows["p_up"]) == list(single.p_up)


def test_chunks_keep_to_the_servers_item_limit(main_server, universe, caplog):
    """The server takes 4 items a request (KRONOS_MAX_BATCH_ITEMS=4, which it does not publish): the
    client learns it from the first 422 and sends 10 series as 4 + 4 + 2."""
    caplog.set_level(logging.DEBUG, logger="httpx")
    with Client(main_server.url, api_key=API_KEY) as kronos:
        long = kronos.forecast_many(universe, 3, seed=1)
        sent = [r.getMessage() for r in caplog.records if "/v1/predict/batch" in r.getMessage()]
        assert len(set(long["id"])) == 10 and long.attrs["errors"] == {}
        assert [m.split('"')[-2] for m in sent] == ["HTTP/1.1 422 Unprocessable Entity"] + ["HTTP/1.1 200 OK"] * 3
        caplog.clear()
        kronos.forecast_many(universe, 3, seed=1)  # learnt: no 422 this time
        sent = [r.getMessage() for r in caplog.records if "/v1/predict/batch" in r.getMessage()]
        assert len(sent) == 3 and all("200 OK" in m for m in sent)


def test_a_bad_series_is_set_aside_and_the_rest_forecast(kronos, universe):
    broken = universe.copy()
    row = broken.index[(broken["id"] == "GOOG-4")][2]
    broken.loc[row, "high"] = broken.loc[row, "low"] / 2
    short = pd.DataFrame({"id": ["empty"], "timestamps": [pd.Timestamp("2013-01-02")], "open": [1.0], "high": [0.5],
                          "low": [2.0], "close": [1.0], "volume": [1.0]})  # fmt: skip
    long = kronos.forecast_many(pd.concat([broken, short]), 4, seed=2)
    assert set(long.attrs["errors"]) == {"GOOG-4", "empty"}
    assert long.attrs["errors"]["GOOG-4"].startswith("data[2]: high")  # the server's words, the item's row
    assert set(long["id"]) == set(universe["id"]) - {"GOOG-4"}
    with pytest.raises(ValidationError, match="GOOG-4"):
        kronos.forecast_many(broken, 4, seed=2, on_error="raise")


def test_a_shared_setting_the_server_refuses_is_the_calls_error(kronos, universe):
    with pytest.raises(ValidationError) as caught:
        kronos.forecast_many(universe, 100_000)
    assert caught.value.fields and caught.value.fields[0].endswith("pred_len")


def test_a_queue_of_one_takes_one_series_a_request(tight_server, universe):
    with Client(tight_server.url, api_key="load", retries=10) as kronos:
        long = kronos.forecast_many(universe[universe["id"].isin(["GOOG-0", "GOOG-1"])], 3, seed=5, progress=True)
    assert sorted(set(long["id"])) == ["GOOG-0", "GOOG-1"]
