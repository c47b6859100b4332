"""Property-based: generated and mutated request bodies never get a 5xx, and every error has the
one JSON shape. Runs in-process with small limits so each example is fast."""

from __future__ import annotations

import json

import pytest
from conftest import LiveApp
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from services.kronos_fastapi import create_app, load_settings

PROPERTY_SETTINGS = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def app():
    limits = {
        "max_context": 32,
        "max_pred_len": 8,
        "default_pred_len": 4,
        "max_rows": 64,
        "max_sample_count": 4,
        "max_batch_items": 4,
        "rate_limit_per_minute": 0,
    }
    with LiveApp(create_app(load_settings(env_file=None, **limits))) as live:
        yield live.wait_ready()


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "nan", "1e999", "12.5", "2024-01-01T00:00:00Z"]),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
prices = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False) | st.integers(-(10**6), 10**6)
value_rows = st.lists(prices, min_size=4, max_size=6)
named_rows = st.fixed_dictionaries(
    {"open": prices, "high": prices, "low": prices, "close": prices},
    optional={"volume": prices, "amount": prices},
)
stamps = st.datetimes().map(lambda t: t.isoformat()) | st.text(max_size=10)
options = {
    "pred_len": st.integers(-2, 12),
    "T": st.floats(-1, 3) | json_scalars,
    "top_k": st.integers(-2, 20),
    "top_p": st.floats(-0.5, 1.5),
    "sample_count": st.integers(-1, 6),
    "seed": st.integers(-5, 2**64),
    "quantiles": st.lists(st.floats(-0.5, 1.5), max_size=4),
    "timestamps": st.lists(stamps, max_size=8),
    "freq": st.sampled_from(["h", "D", "B", "5min", "W", "0h", "-1h", "xyz", ""]),
    "calendar": st.sampled_from(["XNYS", "XLON", "24/7", "NOPE", ""]) | json_scalars,
    "repair_input": st.booleans() | json_scalars,
}
single_bodies = st.fixed_dictionaries(
    {"data": st.lists(value_rows, min_size=1, max_size=8) | st.lists(named_rows, min_size=1, max_size=8)},
    optional=options,
)
legacy_bodies = st.fixed_dictionaries(
    {
        "candles": st.lists(named_rows, min_size=1, max_size=6),
        "timestamps": st.lists(stamps, max_size=6),
        "prediction_timestamps": st.lists(stamps, max_size=6),
    },
    optional={
        "series_id": st.text(max_size=10),
        "overrides": st.fixed_dictionaries(
            {},
            optional={
                "pred_len": st.integers(-1, 8),
                "temperature": st.floats(-1, 2),
                "sample_count": st.integers(0, 5),
            },
        ),
    },
)


@st.composite
def mutated(draw, bodies):
    """A body with a few random edits: a key dropped, a value replaced, a stray key, a row broken."""
    body = dict(draw(bodies))
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["drop", "replace", "add", "row"]))
        keys = sorted(body)
        if action == "drop" and keys:
            body.pop(draw(st.sampled_from(keys)))
        elif action == "replace" and keys:
            body[draw(st.sampled_from(keys))] = draw(json_values)
        elif action == "add":
            body[draw(st.text(max_size=8))] = draw(json_values)
        else:
            rows_key = "data" if "data" in body else "candles"
            if isinstance(body.get(rows_key), list) and body[rows_key]:
                rows = list(body[rows_key])
                rows[draw(st.integers(0, len(rows) - 1))] = draw(json_values)
                body[rows_key] = rows
    return body


def _check(response) -> None:
    assert response.status_code < 500, response.text
    event(f"status {response.status_code}")
    body = response.json()
    if response.status_code >= 400:
        assert set(body) == {"error"}, body
        assert set(body["error"]) == {"type", "message", "details"}
        assert isinstance(body["error"]["type"], str) and body["error"]["message"]
    assert response.headers["X-Request-ID"]


def _post(app, path: str, body) -> None:
    _check(app.post(path, content=json.dumps(body, allow_nan=True), headers={"Content-Type": "application/json"}))


@PROPERTY_SETTINGS
@given(body=mutated(single_bodies) | mutated(legacy_bodies) | json_values)
def test_single_never_5xx(app, body):
    _post(app, "/v1/predict/single", body)


@PROPERTY_SETTINGS
@given(
    body=st.one_of(
        st.fixed_dictionaries({"batch": st.lists(mutated(single_bodies), max_size=5)}),
        st.fixed_dictionaries({"items": st.lists(mutated(legacy_bodies), max_size=5)}),
        mutated(st.fixed_dictionaries({"batch": st.lists(single_bodies, min_size=1, max_size=3)})),
    )
)
def test_batch_never_5xx(app, body):
    _post(app, "/v1/predict/batch", body)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=300), path=st.sampled_from(["/v1/predict/single", "/v1/predict/batch"]))
def test_raw_bytes_never_5xx(app, raw, path):
    _check(app.post(path, content=raw, headers={"Content-Type": "application/json"}))
