"""The service's errors as types, and the one JSON shape every error response has.

``{"error": {"type": ..., "message": ..., "details": [...]}}`` — from route code, from the
middlewares (which answer before any route runs) and from the handlers registered here.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from model.errors import InputError

from .schemas import ROW_TAGS

logger = logging.getLogger("kronos.service")


class ServiceError(Exception):
    """Base class: an error with an HTTP status, a stable ``type`` and optional details."""

    status_code = 500
    error_type = "internal_error"

    def __init__(self, message: str, details: Any = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers or {}


class InvalidJSON(ServiceError):
    status_code = 400
    error_type = "invalid_json"


class Unauthorized(ServiceError):
    status_code = 401
    error_type = "unauthorized"


class Forbidden(ServiceError):
    status_code = 403
    error_type = "forbidden"


class NotFound(ServiceError):
    status_code = 404
    error_type = "not_found"


class PayloadTooLarge(ServiceError):
    status_code = 413
    error_type = "payload_too_large"


class InvalidRequest(ServiceError):
    """Well-formed JSON that is not a valid forecast request (names the field and row)."""

    status_code = 422
    error_type = "validation_error"


class RateLimited(ServiceError):
    status_code = 429
    error_type = "rate_limited"


class ModelNotReady(ServiceError):
    status_code = 503
    error_type = "model_not_ready"


class QueueFull(ServiceError):
    """Backpressure: KRONOS_MAX_QUEUE series are already waiting for the model."""

    status_code = 503
    error_type = "queue_full"


class DeviceOutOfMemory(ServiceError):
    """One series alone does not fit in the device's memory (batches that do not fit are split first)."""

    status_code = 503
    error_type = "out_of_memory"


class ForecastTimeout(ServiceError):
    status_code = 504
    error_type = "timeout"


class ClientDisconnected(ServiceError):
    """The client went away before its answer; nobody reads this (nginx's 499), the logs and metrics do."""

    status_code = 499
    error_type = "client_disconnected"


class UnsupportedMediaType(ServiceError):
    """A body that is not declared as JSON (Content-Type), on a route that reads JSON."""

    status_code = 415
    error_type = "unsupported_media_type"


# The errors about what a request sent: their details always name the field (``field_details``).
_ABOUT_THE_BODY = (InvalidJSON, PayloadTooLarge, InvalidRequest, UnsupportedMediaType)


def error_body(error_type: str, message: str, details: Any = None) -> dict[str, Any]:
    """The one error shape; ``details`` is always a list (of field problems, or of one object)."""
    if details is None:
        details = []
    elif not isinstance(details, list):
        details = [details]
    return {"error": {"type": error_type, "message": message, "details": details}}


def error_response(error: ServiceError) -> JSONResponse:
    details = error.details
    if isinstance(error, _ABOUT_THE_BODY):  # every such error names its field (``body`` when it is the whole)
        details = field_details(error.message, details)
    return JSONResponse(
        error_body(error.error_type, error.message, details),
        status_code=error.status_code,
        headers=error.headers,
    )


# A message that starts by naming its field: "batch[2].data[3]: ...", "pred_len: ...".
_FIELD_PREFIX = re.compile(r"^((?:[A-Za-z_]\w*|\[\d+\])(?:\.[A-Za-z_]\w*|\[\d+\])*): ")


def field_details(message: str, details: Any = None) -> list[dict[str, Any]]:
    """Details that each name their field: the ones that do are kept; any other (none, or an object of
    numbers such as a limit) gets the field the message starts with (else ``body``) and the message."""
    found = _FIELD_PREFIX.match(message)
    where, text = (found[1], message[found.end() :]) if found else ("body", message)
    listed = [] if details is None else details if isinstance(details, list) else [details]
    if not listed:
        return [{"field": where, "message": text}]
    return [
        d if isinstance(d, dict) and "field" in d else {"field": where, "message": text, **_as_object(d)}
        for d in listed
    ]


def _as_object(detail: Any) -> dict[str, Any]:
    return detail if isinstance(detail, dict) else {"value": detail}


def field_path(loc: tuple | list) -> str:
    """``("batch", 2, "data", 3, 1)`` → ``batch[2].data[3][1]``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "body"


def validation_details(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pydantic errors as ``{"field", "message", "type"}``, with the body prefix dropped."""
    details = []
    for error in errors:
        loc = list(error.get("loc", ()))
        if loc and loc[0] == "body":
            loc = loc[1:]
        # pydantic names the branch of a tagged union in the path (data[3].values[1]); callers sent data[3][1]
        loc = [part for part in loc if part not in ROW_TAGS]
        details.append({"field": field_path(loc), "message": error.get("msg", "invalid"), "type": error.get("type")})
    return details


def invalid_request_from(errors: list[dict[str, Any]]) -> InvalidRequest:
    details = validation_details(errors)
    first = details[0] if details else {"field": "body", "message": "invalid request"}
    more = f" (and {len(details) - 1} more)" if len(details) > 1 else ""
    return InvalidRequest(f"{first['field']}: {first['message']}{more}", details)


def respond(request: Request, error: ServiceError) -> JSONResponse:
    """The error response for a request, noted on the request for the access log and metrics."""
    request.state.error_type = error.error_type
    return error_response(error)


def install_error_handlers(app: FastAPI) -> None:
    """Map our types, FastAPI's validation errors, Starlette HTTP errors, model InputErrors and
    anything unexpected to the one error shape. Nothing leaks a stack trace."""

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return respond(request, exc)

    @app.exception_handler(InputError)
    async def _input_error(request: Request, exc: InputError) -> JSONResponse:
        return respond(request, InvalidRequest(str(exc)))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return respond(request, invalid_request_from(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        names = {404: "not_found", 405: "method_not_allowed", 429: "rate_limited"}
        error = ServiceError(str(exc.detail), headers=dict(exc.headers or {}))
        error.status_code = exc.status_code
        error.error_type = names.get(exc.status_code, "http_error")
        return respond(request, error)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        request_id = getattr(request.state, "request_id", None)
        logger.exception("unhandled error in request %s", request_id)
        return respond(request, ServiceError("internal server error", {"request_id": request_id}))
