"""The service's errors as types.

Every error the service sends has one JSON shape, ``{"error": {"type", "message", "details": [...]}}``;
``error_from_response`` turns it into the matching exception below, with the server's message as the
exception's message. ``details`` is always a list: field problems (``{"field", "message", "type"}``) for a
422, or one object of facts (``{"limit_bytes": ...}``, ``{"retry_after_s": ...}``) for the others.
"""

from __future__ import annotations

import builtins
import email.utils
import json
import re
import time
from collections.abc import Mapping
from typing import Any

_FIELD = re.compile(r"^([A-Za-z_][\w]*(?:\[\d+\]|\.[A-Za-z_]\w*)*): ")


class KronosError(Exception):
    """Base class of every error this client raises.

    ``status`` is the HTTP status (None when no answer came), ``type`` the service's error type
    (``validation_error``, ``queue_full``, ...), ``details`` the envelope's list, ``request_id`` the
    ``X-Request-ID`` the server logged the request under.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        type: str | None = None,
        details: list[Any] | None = None,
        request_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type
        self.details = list(details or [])
        self.request_id = request_id
        self.headers = dict(headers or {})

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, status={self.status}, type={self.type!r})"


class ValidationError(KronosError):
    """400 / 422: the request is not valid. ``fields`` are the field paths the server named
    (``data[3][1]``, ``pred_len``, ``batch[2].timestamps``), in its order."""

    @property
    def fields(self) -> list[str]:
        named = [d["field"] for d in self.details if isinstance(d, dict) and isinstance(d.get("field"), str)]
        if not named:  # the service's own checks name the field at the head of the message: "pred_len: ..."
            head = _FIELD.match(self.message)
            named = [head.group(1)] if head else []
        return named


class PayloadTooLarge(KronosError):
    """413: the body is over the server's ``KRONOS_MAX_REQUEST_SIZE_MB`` (``details`` has the limit)."""


class Unauthorized(KronosError):
    """401: no valid API key (``Client(api_key=...)``)."""


class Forbidden(Unauthorized):
    """403: this client's address is not on the server's allow-list."""


class NotFound(KronosError):
    """404: no such route, job or file (another key's job is a 404 too)."""


class _RetryAfter(KronosError):
    @property
    def retry_after(self) -> float | None:
        """Seconds the server asked to wait (its ``Retry-After`` header), or None when it gave none."""
        return retry_after_seconds(self.headers)


class RateLimited(_RetryAfter):
    """429: over the server's rate limit; ``retry_after`` says when to come back."""


class Overloaded(_RetryAfter):
    """503: the queue is full (``type`` ``queue_full``), the model is not ready (``model_not_ready``) or one
    series did not fit in the device's memory (``out_of_memory``); ``retry_after`` when the server gave one."""


class ServerError(KronosError):
    """500 and other server-side failures (504 ``timeout``: the forecast took longer than the server allows)."""


class ConnectionError(KronosError, builtins.ConnectionError):  # noqa: A001 — the name the issue asks for
    """No answer: the server could not be reached, or the connection broke or timed out."""


class IncompatibleServer(KronosError):
    """The server is older than this client needs, or lacks a route or field the call needs."""


class JobFailed(KronosError):
    """A job ended ``failed``, ``cancelled`` or ``expired`` while ``Job.wait`` waited for it to succeed."""

    def __init__(self, message: str, *, job: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.job = job or {}


_BY_STATUS: dict[int, type[KronosError]] = {
    400: ValidationError,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    413: PayloadTooLarge,
    422: ValidationError,
    429: RateLimited,
    503: Overloaded,
}


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """``Retry-After`` as seconds: a number of seconds, or an HTTP date (RFC 9110)."""
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_from_response(status: int, headers: Mapping[str, str], content: bytes) -> KronosError:
    """The exception for an error answer; the message is the server's (or the status line's, for an
    answer that is not the service's envelope, e.g. from a proxy)."""
    kind = _BY_STATUS.get(status) or (ServerError if status >= 500 else KronosError)
    message, error_type = f"HTTP {status}", None
    details: list[Any] = []
    try:
        body = json.loads(content) if content else None
    except (ValueError, UnicodeDecodeError):
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        message = str(error.get("message") or message)
        error_type = error.get("type")
        details = error["details"] if isinstance(error.get("details"), list) else []
    elif isinstance(error, str):  # not the service's envelope (a proxy or an older server)
        message = error
    elif content:
        message = f"HTTP {status}: {content[:200].decode('utf-8', 'replace').strip()}"
    request_id = next((v for k, v in headers.items() if k.lower() == "x-request-id"), None)
    return kind(message, status=status, type=error_type, details=details, request_id=request_id, headers=headers)
