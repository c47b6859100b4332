"""A job item is answered by the very route a client would call: its request body goes, in-process,
to ``POST /v1/predict/single`` (forecast jobs) or ``POST /v1/backtest`` (backtest jobs) through the
app's router, under ``background_priority()``. So an item's response is byte for byte the body that
route answers (the same parser, limits, model scheduler and response builders), and its error is the
route's error object.

The router is called below the middlewares: no API key, rate limit, body limit or access log applies
to a job's items (the job's own request passed them), and they are not counted as HTTP requests.
Exceptions are mapped to the one error shape here, as ``errors.install_error_handlers`` maps them
for the app.
"""

from __future__ import annotations

import asyncio
import json
import logging
from contextlib import AsyncExitStack
from typing import Any

from model.errors import InputError

from ..batching import background_priority
from ..errors import InvalidRequest, ServiceError, error_body

logger = logging.getLogger("kronos.jobs")

ROUTES = {"forecast": "/v1/predict/single", "backtest": "/v1/backtest"}


def _scope(app: Any, path: str, body: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 0),
        "server": ("kronos-jobs", 0),
        "app": app,
        "state": {"request_id": "job-item"},
    }


async def answer(app: Any, kind: str, body: bytes) -> tuple[int, bytes]:
    """(status, response body) of the kind's route for ``body``; cancelling the call takes the item's
    series out of the queue, or out of their batch at the next decode step, as a client hang-up does."""
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Future()  # no disconnect ever comes: the worker cancels the call instead
        raise AssertionError("unreachable")

    status = 500
    chunks: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    scope = _scope(app, ROUTES[kind], body)
    try:
        with background_priority():
            async with AsyncExitStack() as stack:  # what FastAPI's AsyncExitStackMiddleware gives a route
                scope["fastapi_middleware_astack"] = stack
                await app.router(scope, receive, send)
    except ServiceError as exc:
        return exc.status_code, _error(exc)
    except InputError as exc:
        return 422, _error(InvalidRequest(str(exc)))
    except Exception:  # noqa: BLE001 — as the app's last-resort handler: logged, answered as a 500
        logger.exception("a job item failed unexpectedly")
        return 500, _error(ServiceError("internal server error"))
    return status, b"".join(chunks)


def _error(exc: ServiceError) -> bytes:
    return json.dumps(error_body(exc.error_type, exc.message, exc.details)).encode()
