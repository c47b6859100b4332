"""Small ASGI middlewares, one job each: request context, access log + metrics, last-resort
errors, client address, client allow-list, API keys and the body-size limit.

They are plain ASGI (not BaseHTTPMiddleware) so they never buffer responses and can answer
before the route runs, always in the one error shape of ``errors.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import re
import time
import uuid
from collections.abc import Iterable

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .addresses import AddressList, client_address, parse_ip
from .errors import Forbidden, ModelNotReady, PayloadTooLarge, ServiceError, Unauthorized, error_response
from .logs import ACCESS_LOGGER
from .metrics import ServiceMetrics

logger = logging.getLogger("kronos.service")
access_logger = logging.getLogger(ACCESS_LOGGER)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")


def request_state(scope: Scope) -> dict:
    """The per-request dict behind ``request.state`` (shared by middlewares and routes)."""
    return scope.setdefault("state", {})


async def send_error(scope: Scope, receive: Receive, send: Send, error: ServiceError) -> None:
    """Answer from a middleware with the service's error shape."""
    request_state(scope)["error_type"] = error.error_type
    await error_response(error)(scope, receive, send)


def route_template(scope: Scope, known_paths: frozenset[str]) -> str:
    """The matched route's path template, or ``unmatched`` — never a raw unknown path, so metrics
    labels stay few. Requests answered by a middleware never reach the router, so they are matched
    against the app's paths (none has path parameters)."""
    route = scope.get("route")
    if route is not None and hasattr(route, "path"):
        return route.path
    return scope["path"] if scope["path"] in known_paths else "unmatched"


class RequestContextMiddleware:
    """Give each request an id (echo a sane X-Request-ID, else a new one) and stamp every response
    with X-Request-ID, X-Kronos-Instance and X-Kronos-Device (the device the model runs on now)."""

    def __init__(self, app: ASGIApp, instance_name: str, device_label) -> None:
        self.app = app
        self.instance_name = instance_name
        self.device_label = device_label  # a callable: the device changes once the model loads

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = Headers(scope=scope).get("x-request-id", "")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        request_state(scope)["request_id"] = request_id

        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["X-Request-ID"] = request_id
                headers["X-Kronos-Instance"] = self.instance_name
                headers["X-Kronos-Device"] = self.device_label()
            await send(message)

        await self.app(scope, receive, stamped)


class AccessLogMiddleware:
    """One JSON log line and the HTTP metrics for every request."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics, device_label, known_paths: Iterable[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.device_label = device_label
        self.known_paths = frozenset(known_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = 500

        async def observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, observed)
        finally:
            self.metrics.in_flight.dec()
            elapsed = time.perf_counter() - started
            route = route_template(scope, self.known_paths)
            state = request_state(scope)
            labels = (scope["method"], route, str(status))
            self.metrics.requests.labels(*labels).inc()
            self.metrics.request_duration.labels(*labels).observe(elapsed)
            error_type = state.get("error_type")
            if error_type:
                self.metrics.rejections.labels(error_type).inc()
                if error_type == "rate_limited":
                    self.metrics.rate_limited.labels(route).inc()
            access_logger.info(
                "request",
                extra={
                    "request_id": state.get("request_id"),
                    "method": scope["method"],
                    "route": route,
                    "path": scope.get("path"),
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                    "rows": state.get("rows"),
                    "pred_len": state.get("pred_len"),
                    "items": state.get("items"),
                    "device": self.device_label(),
                    "client": state.get("client_ip"),
                    "error": error_type,
                },
            )


class UnhandledErrorMiddleware:
    """The last resort: an exception no handler took becomes a JSON 500 (logged, no stack trace
    sent), inside the context middleware so the response still carries the request id."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            request_id = request_state(scope).get("request_id")
            logger.exception("unhandled error in request %s", request_id)
            if not started:
                await send_error(
                    scope, receive, send, ServiceError("internal server error", {"request_id": request_id})
                )
        except asyncio.CancelledError:
            # uvicorn cancels what outlasts its graceful-shutdown timeout: a JSON 503 rather than its
            # plain-text 500 (the drain, drain.py, normally answers such requests before).
            if not started:
                with contextlib.suppress(Exception):
                    await send_error(
                        scope, receive, send, ModelNotReady("the service is shutting down", {"state": "stopping"})
                    )
            raise


class ClientAddressMiddleware:
    """Work out the caller's IP once (X-Forwarded-For only from trusted proxies) for the allow-list,
    the rate limit and the log."""

    def __init__(self, app: ASGIApp, trusted_proxies: AddressList) -> None:
        self.app = app
        self.trusted = trusted_proxies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            peer = scope.get("client")
            forwarded = Headers(scope=scope).get("x-forwarded-for") if self.trusted else None
            request_state(scope)["client_ip"] = client_address(peer[0] if peer else None, forwarded, self.trusted)
        await self.app(scope, receive, send)


class AllowListMiddleware:
    """403 for clients outside KRONOS_ALLOWED_CLIENTS (the probe paths stay open for health checks and scrapes)."""

    def __init__(self, app: ASGIApp, allowed: AddressList, open_paths: Iterable[str]) -> None:
        self.app = app
        self.allowed = allowed
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in self.open_paths:
            client_ip = request_state(scope).get("client_ip")
            if not self.allowed.contains(parse_ip(client_ip)):
                return await send_error(
                    scope, receive, send, Forbidden(f"client {client_ip} is not in the allowed clients list")
                )
        await self.app(scope, receive, send)


def _key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


class ApiKeyMiddleware:
    """401 unless ``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` holds a configured key.

    Keys are compared as SHA-256 digests in constant time, against every key, so neither the
    comparison nor the position of a match leaks through timing. The matching key's short
    fingerprint goes to the request state, where the rate limit keys on it.
    """

    def __init__(self, app: ASGIApp, keys: Iterable[str], open_paths: Iterable[str], on_refused=None) -> None:
        self.app = app
        self.digests = [_key_digest(k) for k in keys]
        self.open_paths = frozenset(open_paths)
        # Called with (scope, receive) for each refused request: the error to send instead of the 401
        # (the rate limit's 429, once the client has spent its budget), or None.
        self.on_refused = on_refused

    def _match(self, presented: str) -> bytes | None:
        digest = _key_digest(presented)
        found = None
        for candidate in self.digests:
            if hmac.compare_digest(digest, candidate):
                found = candidate
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths or scope["method"] == "OPTIONS":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        presented = headers.get("x-api-key")
        authorization = headers.get("authorization", "")
        if presented is None and authorization[:7].lower() == "bearer ":
            presented = authorization[7:].strip()
        matched = self._match(presented) if presented else None
        if matched is None:
            reason = "missing API key" if not presented else "invalid API key"
            limited = self.on_refused(scope, receive) if self.on_refused else None
            return await send_error(
                scope,
                receive,
                send,
                limited
                or Unauthorized(
                    f"{reason}: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                    headers={"WWW-Authenticate": 'Bearer realm="kronos"'},
                ),
            )
        request_state(scope)["api_key_id"] = matched.hex()[:12]
        request_state(scope)["api_key_digest"] = matched.hex()  # whose job (routes/jobs.py)
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """413 for a body over the limit, checked on Content-Length and counted while reading (chunked
    bodies have no Content-Length). The body is read here, bounded, and replayed to the app.

    An oversize body is still read and discarded (up to ``drain_bytes`` or ``drain_seconds``) before
    the 413, so the client can finish sending and then read the answer instead of a reset socket;
    past those bounds the connection is closed.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        drain_bytes: int = 64 * 2**20,
        drain_seconds: float = 5.0,
        paths: dict[str, tuple[int, str]] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.drain_bytes = drain_bytes
        self.drain_seconds = drain_seconds
        # path -> (limit, its setting): routes with a limit of their own (POST /v1/jobs: uploads)
        self.paths = paths or {}

    def _too_large(self, size: str, limit: int, setting: str) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"request body is {size}; the limit is {limit} bytes ({setting})", {"limit_bytes": limit}
        )

    async def _drain(self, receive: Receive, more: bool) -> bool:
        """Discard the rest of the body; True when it all arrived within the bounds."""
        seen = 0

        async def consume() -> bool:
            nonlocal seen
            pending = more
            while pending:
                message = await receive()
                if message["type"] != "http.request":
                    return False
                seen += len(message.get("body", b""))
                if seen > self.drain_bytes:
                    return False
                pending = message.get("more_body", False)
            return True

        try:
            return await asyncio.wait_for(consume(), self.drain_seconds)
        except asyncio.TimeoutError:
            return False

    async def _reject(self, scope: Scope, receive: Receive, send: Send, error: PayloadTooLarge, more: bool) -> None:
        if not await self._drain(receive, more):
            error.headers["Connection"] = "close"
        await send_error(scope, receive, send, error)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit, setting = self.paths.get(scope["path"], (self.max_bytes, "KRONOS_MAX_REQUEST_SIZE_MB"))
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await self._reject(scope, receive, send, self._too_large(f"{declared} bytes", limit, setting), True)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending its body
            chunk = message.get("body", b"")
            size += len(chunk)
            more = message.get("more_body", False)
            if size > limit:
                error = self._too_large(f"over {limit} bytes", limit, setting)
                return await self._reject(scope, receive, send, error, more)
            chunks.append(chunk)
            if not more:
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
