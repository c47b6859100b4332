"""The calls both clients make, as generators (see ``_transport.py``): the server's version and limits,
health, models, one forecast, a backtest."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ._options import BacktestOptions, ForecastOptions, check_options
from ._transport import Operation, Send, Session, json_of, request
from ._version import MIN_SERVER_VERSION, __version__
from .errors import IncompatibleServer
from .frames import options_body, series_body
from .results import BacktestResult, ForecastResult

DEFAULT_MAX_BATCH_ITEMS = 64  # KRONOS_MAX_BATCH_ITEMS's default; a smaller limit is learnt from the server's 422
DEFAULT_MAX_QUEUE = 128


def parse_version(text: str) -> tuple[int, ...]:
    """``"0.1.0"`` → ``(0, 1, 0)``; a suffix (``0.2.0rc1``, ``0.2.0+local``) is ignored."""
    parts = []
    for piece in text.strip().lstrip("v").split("."):
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        parts.append(int(digits))
        if len(digits) != len(piece):
            break
    return tuple(parts)


def server_info(session: Session) -> Operation[dict[str, Any]]:
    """What the server says about itself, read once: its version, its routes and the predict request's
    fields (from ``/openapi.json``; all None when the server has its docs off)."""
    if "version" in session.server:
        return session.server
    response = yield from request(Send("GET", "/openapi.json", ok=(404,)), session.policy)
    info: dict[str, Any] = {"version": None, "paths": None, "predict_fields": None}
    if response.status_code == 200:
        schema = json_of(response)
        info["version"] = (schema.get("info") or {}).get("version")
        info["paths"] = set(schema.get("paths") or {})
        single = ((schema.get("components") or {}).get("schemas") or {}).get("SingleRequest") or {}
        info["predict_fields"] = set(single.get("properties") or {}) or None
    session.server.update(info)
    return session.server


def ensure_compatible(session: Session) -> Operation[None]:
    """On first use: IncompatibleServer, naming both versions, when the server is older than this client
    needs. A server that does not publish its version (docs off) is taken as it is."""
    if not session.check_version or session.server.get("checked"):
        return None
    info = yield from server_info(session)
    version = info.get("version")
    if version and parse_version(version) < parse_version(MIN_SERVER_VERSION):
        raise IncompatibleServer(
            f"the server is kronos-service {version}, older than {MIN_SERVER_VERSION}, the oldest that "
            f"kronos-client {__version__} speaks to: upgrade the service, or install a kronos-client as old as it",
            type="server_too_old",
        )
    session.server["checked"] = True
    return None


def require(session: Session, *, route: str | None = None, field: str | None = None) -> Operation[None]:
    """IncompatibleServer when the server's OpenAPI lacks ``route`` (e.g. ``/v1/jobs``) or the predict
    request's ``field`` (e.g. ``return_paths``); nothing is sent in that case."""
    info = yield from server_info(session)
    version = info.get("version") or "unknown"
    if route is not None and info.get("paths") is not None and route not in info["paths"]:
        raise IncompatibleServer(
            f"this server (kronos-service {version}) has no {route}: kronos-client {__version__}'s call needs "
            "a service that has it",
            type="route_missing",
        )
    if field is not None and info.get("predict_fields") is not None and field not in info["predict_fields"]:
        raise IncompatibleServer(
            f"this server (kronos-service {version}) does not know the predict field {field!r}: "
            f"kronos-client {__version__}'s call needs a service that does",
            type="field_missing",
        )
    return None


def has_route(session: Session, route: str) -> Operation[bool | None]:
    """Whether the server has ``route`` (None: it does not say, its docs are off)."""
    info = yield from server_info(session)
    return None if info.get("paths") is None else route in info["paths"]


def limits(session: Session) -> Operation[dict[str, int]]:
    """The batch limits this client keeps to: ``max_batch_items`` (the default, or what a 422 taught) and the
    queue's length from ``/v1/readyz`` (a batch request needs room in the queue for all its items)."""
    if "max_queue" not in session.server:
        response = yield from request(Send("GET", "/v1/readyz", ok=(503,)), session.policy)
        batching = (json_of(response).get("batching") or {}) if response.status_code in (200, 503) else {}
        session.server["max_queue"] = int(batching.get("max_queue") or DEFAULT_MAX_QUEUE)
    items = session.server.get("max_batch_items", DEFAULT_MAX_BATCH_ITEMS)
    return {"max_batch_items": min(items, session.server["max_queue"]), "max_queue": session.server["max_queue"]}


# --- plain calls --------------------------------------------------------------------------------


def get_json(session: Session, path: str, ok: tuple[int, ...] = (), check: bool = True) -> Operation[Any]:
    if check:
        yield from ensure_compatible(session)
    response = yield from request(Send("GET", path, ok=ok), session.policy)
    return json_of(response)


def forecast_body(
    df: pd.DataFrame,
    pred_len: int | None,
    timestamp_column: str | None = None,
    **options: Any,
) -> tuple[dict[str, Any], Any]:
    body, shape = series_body(df, timestamp_column)
    body.update(options_body(pred_len=pred_len, **options))
    return body, shape


def forecast(
    session: Session, df: pd.DataFrame, pred_len: int | None, timestamp_column: str | None = None, **options: Any
) -> Operation[ForecastResult]:
    check_options("forecast", options, ForecastOptions.__annotations__)
    yield from ensure_compatible(session)
    if options.get("return_paths"):
        yield from require(session, field="return_paths")
    body, shape = forecast_body(df, pred_len, timestamp_column, **options)
    response = yield from request(Send("POST", "/v1/predict/single", json=body), session.policy)
    return ForecastResult.from_body(json_of(response), shape)


def backtest(
    session: Session,
    df: pd.DataFrame,
    windows: int | None,
    step: int | None,
    lookback: int | None,
    pred_len: int | None,
    timestamp_column: str | None = None,
    **options: Any,
) -> Operation[BacktestResult]:
    check_options("backtest", options, BacktestOptions.__annotations__)
    yield from ensure_compatible(session)
    body, shape = forecast_body(
        df, pred_len, timestamp_column, windows=windows, step=step, lookback=lookback, **options
    )
    response = yield from request(Send("POST", "/v1/backtest", json=body), session.policy)
    return BacktestResult.from_body(json_of(response), shape)
