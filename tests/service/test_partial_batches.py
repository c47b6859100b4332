"""``/v1/predict/batch`` keeps what finished when asked (``"partial": true``): each item is answered by
its forecast or by its own error object (invalid, or not finished by the deadline); without it, one
error for the batch, but a 422 that lists every invalid item. Modern-shape items may carry an ``id``."""

from __future__ import annotations

import httpx
from backtesting.test import GOOG
from conftest import assert_error

DATA = GOOG[["Open", "High", "Low", "Close"]].to_numpy(float)


def _item(rows: int = 30, **extra) -> dict:
    return {"data": DATA[-rows:].tolist(), "pred_len": 3, "seed": 1, **extra}


def _bad_candle() -> dict:
    item = _item(id="BAD")
    item["data"][4] = [10.0, 5.0, 9.0, 9.5]  # high below open
    return item


BODY = {"batch": [_bad_candle(), _item(id="GOOG"), _item(pred_len=10**6), {"data": "x", "id": "X"}]}


def test_every_invalid_item_is_reported_in_one_422(client):
    error = assert_error(client.post("/v1/predict/batch", json=BODY), 422, "validation_error")
    assert error["message"].startswith("3 of the 4 items of batch are invalid: batch[0].data[4]: not a valid candle")
    assert "batch[2].pred_len: 1000000 is more than the limit" in error["message"]
    fields = [d["field"] for d in error["details"]]
    assert "batch[0].data[4]" in fields and "batch[2].pred_len" in fields and "batch[3].data" in fields
    assert all(d["field"].startswith(("batch[0]", "batch[2]", "batch[3]")) for d in error["details"])
    # one bad item alone: its own error, as before
    one = assert_error(client.post("/v1/predict/batch", json={"batch": [_item(), _bad_candle()]}), 422)
    assert one["message"].startswith("batch[1].data[4]: not a valid candle")


def test_partial_answers_each_item_by_its_forecast_or_its_error(client):
    response = client.post("/v1/predict/batch", json={**BODY, "partial": True})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["count"], body["succeeded"], body["failed"]) == (4, 1, 3)
    bad, good, limit, shape = body["results"]
    assert (bad["index"], bad["id"], bad["status"], bad["error"]["type"]) == (0, "BAD", 422, "validation_error")
    assert bad["error"]["details"][0]["field"] == "batch[0].data[4]"
    assert (limit["status"], limit["id"], limit["error"]["details"][0]["field"]) == (422, None, "batch[2].pred_len")
    assert (shape["index"], shape["id"]) == (3, "X")
    assert (good["index"], good["id"], good["model_name"]) == (1, "GOOG", "kronos-demo")
    alone = client.post("/v1/predict/single", json=_item()).json()
    assert good["forecast"] == alone["forecast"]  # the same forecast it gets alone
    # all invalid: nothing to keep, the one 422
    assert_error(client.post("/v1/predict/batch", json={"batch": [_bad_candle()], "partial": True}), 422)


def test_ids_are_echoed_and_only_in_the_modern_batch(client):
    body = client.post("/v1/predict/batch", json={"batch": [_item(id="A"), _item()]}).json()
    assert [(r["index"], r["id"]) for r in body["results"]] == [(0, "A"), (1, None)]
    assert "succeeded" not in body
    assert "id" in assert_error(client.post("/v1/predict/single", json=_item(id="A")), 422)["message"]
    legacy = {
        "items": [
            {
                "series_id": "s",
                "candles": [{"open": 1, "high": 2, "low": 0.5, "close": 1.5}] * 3,
                "timestamps": ["2024-01-01", "2024-01-02", "2024-01-03"],
                "prediction_timestamps": ["2024-01-04"],
            }
        ],
        "partial": True,
    }
    assert "partial" in assert_error(client.post("/v1/predict/batch", json=legacy), 422)["message"]


def test_items_past_the_deadline_get_their_own_504_and_the_finished_are_kept(start_servers):
    server = start_servers(
        partial_deadline={"KRONOS_REQUEST_TIMEOUT_S": "3", "KRONOS_RATE_LIMIT_PER_MINUTE": "0"}
    )["partial_deadline"]
    slow = {"data": DATA[-1000:].tolist(), "pred_len": 400, "sample_count": 16, "seed": 2, "id": "SLOW"}
    body = {"batch": [_item(id="A"), _item(id="B"), slow]}  # (first come, first served: SLOW would block B)
    whole = httpx.post(server.url + "/v1/predict/batch", json=body, timeout=60)
    assert "KRONOS_REQUEST_TIMEOUT_S" in assert_error(whole, 504, "timeout")["message"]
    kept = httpx.post(server.url + "/v1/predict/batch", json={**body, "partial": True}, timeout=60)
    assert kept.status_code == 200, kept.text
    a, b, late = kept.json()["results"]
    assert (a["id"], b["id"]) == ("A", "B") and len(a["forecast"]) == len(b["forecast"]) == 3
    assert (late["id"], late["status"], late["error"]["type"]) == ("SLOW", 504, "timeout")
    assert "KRONOS_REQUEST_TIMEOUT_S" in late["error"]["message"]
    assert kept.json()["failed"] == 1
    assert httpx.get(server.url + "/v1/readyz", timeout=10).status_code == 200  # the late item left
