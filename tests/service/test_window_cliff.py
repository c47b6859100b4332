"""No silent cliff at the edge of the model's context: a forecast whose rows + pred_len outgrow
max_context (its window slides, every such step recomputing the whole window) carries a note saying
so, what it costs and the two ways out; the backtest's default lookback keeps every window inside."""

from __future__ import annotations

from backtesting.test import GOOG

FRAME = GOOG[["Open", "High", "Low", "Close"]]
PRED_LEN = 20


def _body(rows: int, **extra) -> dict:
    return {"data": FRAME.iloc[-rows:].to_numpy(float).tolist(), "pred_len": PRED_LEN, "seed": 1, **extra}


def _slides(notes: list[str]) -> list[str]:
    return [n for n in notes if n.startswith("the window slides:")]


def _context(client) -> int:
    (model,) = client.get("/v1/models").json()["models"]
    return model["max_context"]


def test_a_forecast_that_slides_says_so_what_it_costs_and_the_ways_out(client):
    context = _context(client)
    assert context == 512
    for rows in (context - PRED_LEN, context - PRED_LEN + 1):  # 492 and 493 rows: every token fits
        assert not _slides(client.post("/v1/predict/single", json=_body(rows)).json()["notes"]), rows
    (note,) = _slides(client.post("/v1/predict/single", json=_body(context)).json()["notes"])
    assert note.startswith("the window slides: 512 rows + pred_len 20 outgrow the model's max_context of 512")
    assert "19 of the 20 steps recompute the whole 512-token window" in note and "roughly 20x the time" in note
    assert 'send at most the last 492 rows, or "window": "rolling"' in note
    # a batch item's note names its own numbers; rolling is told its own way (no cliff to warn of)
    batch = client.post(
        "/v1/predict/batch", json={"batch": [_body(1000), _body(100), _body(1000, window="rolling")]}
    ).json()["results"]
    assert "1000 rows + pred_len 20" in _slides(batch[0]["notes"])[0] and "20 of the 20 steps" in batch[0]["notes"][0]
    assert not _slides(batch[1]["notes"]) and not _slides(batch[2]["notes"])
    assert any(n.startswith("window: rolling:") for n in batch[2]["notes"])


def test_the_backtests_default_lookback_keeps_every_window_inside_the_context(client):
    context = _context(client)
    body = {**_body(700), "windows": 2, "sample_count": 2}
    default = client.post("/v1/backtest", json=body).json()
    assert default["lookback"] + PRED_LEN <= context and default["lookback"] == context - PRED_LEN
    assert default["notes"] == []
    long = client.post("/v1/backtest", json={**body, "lookback": 600}).json()
    (note,) = _slides(long["notes"])
    assert "600 rows + pred_len 20" in note and "a lookback of at most 492" in note
