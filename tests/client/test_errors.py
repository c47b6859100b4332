"""The service's error envelope as exception types, with the server's message and field paths."""

from __future__ import annotations

import logging
import socket
import time

import httpx
import pytest
from client_support import API_KEY
from kronos_client import (
    Client,
    ConnectionError,
    Forbidden,
    IncompatibleServer,
    KronosError,
    NotFound,
    Overloaded,
    RateLimited,
    ServerError,
    Unauthorized,
    ValidationError,
)
from kronos_client._ops import get_json
from kronos_client._transport import RetryPolicy, Send
from kronos_client.errors import error_from_response


def _server_error(server, path, body):
    """The server's own envelope for ``body``, to compare the client's exception with."""
    return httpx.post(server.url + path, json=body, headers={"X-API-Key": API_KEY}).json()["error"]


def test_a_422_is_a_validation_error_naming_the_field(kronos, main_server, goog):
    with pytest.raises(ValidationError) as caught:
        kronos.forecast(goog, 100_000)
    error = caught.value
    assert error.status == 422 and error.type == "validation_error" and error.fields == ["pred_len"]
    rows = [[float(v) for v in row] for row in goog[["Open", "High", "Low", "Close"]].to_numpy()]
    served = _server_error(main_server, "/v1/predict/single", {"data": rows, "pred_len": 100_000})
    assert str(error) == served["message"] and error.details == served["details"]  # the server's words
    assert error.request_id


def test_a_bad_candle_names_its_row(kronos, goog):
    broken = goog.copy()
    broken.iloc[3, broken.columns.get_loc("High")] = broken["Low"].iloc[3] / 2
    with pytest.raises(ValidationError) as caught:
        kronos.forecast(broken, 5)
    assert caught.value.fields == ["data[3]"] and "repair_input" in str(caught.value)
    repaired = kronos.forecast(broken, 5, repair_input=True)  # the server's way out, as an option
    assert any("repaired" in note for note in repaired.notes)


def test_a_nan_is_the_servers_finite_number_error(kronos, goog):
    holes = goog.copy()
    holes.iloc[7, holes.columns.get_loc("Close")] = float("nan")
    with pytest.raises(ValidationError) as caught:
        kronos.forecast(holes, 5)
    assert caught.value.fields == ["data[7][3]"]


def test_an_unknown_model_and_an_unknown_option(kronos, goog):
    with pytest.raises(ValidationError) as caught:
        kronos.forecast(goog, 5, model="no-such-model")
    assert caught.value.fields == ["model"] and "no-such-model" in str(caught.value)
    with pytest.raises(TypeError, match="did you mean 'sample_count'"):  # before anything is sent
        kronos.forecast(goog, 5, sample_cont=3)


def test_a_wrong_key_is_unauthorized(main_server, goog):
    for key in ("wrong", None):
        with Client(main_server.url, api_key=key) as kronos:
            with pytest.raises(Unauthorized) as caught:
                kronos.forecast(goog, 5)
            assert kronos.health()["status"] == "ok"  # probes need no key
        assert caught.value.status == 401 and caught.value.type == "unauthorized"


def test_an_unknown_route_is_not_found(kronos):
    with pytest.raises(NotFound) as caught:
        kronos._run(get_json(kronos._session, "/v1/no-such-route"))
    assert caught.value.status == 404 and caught.value.type == "not_found"


def test_a_closed_port_is_a_connection_error_after_the_retries(caplog):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nobody listens there once closed
    caplog.set_level(logging.INFO, logger="kronos_client")
    with Client(f"http://127.0.0.1:{port}", retries=2, max_retry_time=10) as kronos:
        started = time.monotonic()
        with pytest.raises(ConnectionError) as caught:
            kronos.models()
    assert caught.value.type == "connect" and isinstance(caught.value, OSError)  # also the builtin's
    assert len([r for r in caplog.records if r.message.startswith("retrying")]) == 2
    assert time.monotonic() - started < 5


def test_the_types_mirror_the_envelope():
    """Each status the service documents maps to its type (README "Errors"), the message the server's."""

    def body(kind, message):
        return f'{{"error": {{"type": "{kind}", "message": "{message}", "details": []}}}}'.encode()

    cases = {
        400: ValidationError, 401: Unauthorized, 403: Forbidden, 404: NotFound, 422: ValidationError,
        429: RateLimited, 503: Overloaded, 500: ServerError, 504: ServerError,
    }  # fmt: skip
    for status, kind in cases.items():
        error = error_from_response(status, {"Retry-After": "3"}, body("t", f"m{status}"))
        assert type(error) is kind and error.message == f"m{status}" and isinstance(error, KronosError)
    assert error_from_response(503, {"Retry-After": "3"}, body("queue_full", "q")).retry_after == 3.0
    assert error_from_response(503, {}, b"<html>bad gateway</html>").message.startswith("HTTP 503")
    assert issubclass(IncompatibleServer, KronosError)


def test_what_is_retried():
    """503 and 429 within the bounds, connection failures on idempotent calls (or when nothing was sent),
    never another 4xx or a 500."""
    policy = RetryPolicy(retries=3, max_retry_time=10)
    post, job = Send("POST", "/v1/predict/single"), Send("POST", "/v1/jobs", idempotent=False)
    overloaded = error_from_response(503, {"Retry-After": "2"}, b"")
    assert 2 <= policy.delay(overloaded, post, 0, 0.0) <= 2.5
    assert policy.delay(overloaded, post, 3, 0.0) is None  # out of retries
    assert policy.delay(overloaded, post, 0, 8.5) is None  # the wait would end past max_retry_time
    assert policy.delay(error_from_response(429, {"Retry-After": "1"}, b""), post, 0, 0.0) >= 1
    for status in (400, 401, 403, 404, 413, 422, 500, 504):
        assert policy.delay(error_from_response(status, {}, b""), post, 0, 0.0) is None, status
    broken = ConnectionError("reset", type="transport")
    refused = ConnectionError("refused", type="connect")
    assert policy.delay(broken, post, 0, 0.0) is not None
    assert policy.delay(broken, job, 0, 0.0) is None  # it may have made a job: not sent twice
    assert policy.delay(refused, job, 0, 0.0) is not None  # nothing left: safe to try again
