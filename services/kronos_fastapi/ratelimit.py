"""The per-client rate limit, with slowapi's Limiter: keyed on the API key when one was used, else the
client IP, one budget per client across the limited routes.

slowapi's own ASGI middleware loses its X-RateLimit-* headers on current Starlette (it edits a copy)
and sets Retry-After even on successes, so this small middleware drives the Limiter itself:
X-RateLimit-Limit/Remaining/Reset on every limited response, and a 429 in the service's error
shape with Retry-After. Health, readiness and metrics are exempt, so probes never get a 429.

A request refused for a missing or wrong API key is charged to its client's (IP) budget too
(``failed_auth_limit``), so guessing keys ends in 429s like any other flood.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable

from slowapi import Limiter
from slowapi.errors import RateLimitExceeded
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import RateLimited, ServiceError
from .middleware import send_error
from .settings import Settings


def rate_key(request: Request) -> str:
    key_id = getattr(request.state, "api_key_id", None)
    if key_id:
        return f"key:{key_id}"
    return f"ip:{getattr(request.state, 'client_ip', None) or 'unknown'}"


def build_limiter(settings: Settings) -> Limiter:
    per_minute = settings.rate_limit_per_minute
    return Limiter(
        key_func=rate_key,
        application_limits=[f"{per_minute}/minute"] if per_minute else [],
        enabled=per_minute > 0,
        storage_uri="memory://",
    )


def _window(limiter: Limiter, request: Request) -> tuple[dict[str, str], float]:
    """The X-RateLimit-* headers and the seconds until the window resets."""
    current = getattr(request.state, "view_rate_limit", None)
    if current is None:
        return {}, 0.0
    item, args = current
    reset_at, remaining = limiter.limiter.get_window_stats(item, *args)
    wait = max(0.0, reset_at - time.time())
    headers = {
        "X-RateLimit-Limit": str(item.amount),
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": str(math.ceil(wait)),
    }
    return headers, wait


def _charge(limiter: Limiter, request: Request) -> RateLimited | None:
    """Count the request against its client's budget: the 429 to send once it is spent, else None."""
    try:
        limiter._check_request_limit(request, None, True)
    except RateLimitExceeded as exc:
        headers, wait = _window(limiter, request)
        headers["Retry-After"] = str(max(1, math.ceil(wait)))
        return RateLimited(
            f"rate limit exceeded: {exc.detail} per client (KRONOS_RATE_LIMIT_PER_MINUTE)",
            {"limit": str(exc.detail), "retry_after_s": int(headers["Retry-After"])},
            headers,
        )
    return None


def failed_auth_limit(limiter: Limiter) -> Callable[[Scope, Receive], ServiceError | None]:
    """For ``ApiKeyMiddleware``: charge a request that failed authentication to its client's budget."""

    def charge(scope: Scope, receive: Receive) -> ServiceError | None:
        if not limiter.enabled:
            return None
        return _charge(limiter, Request(scope, receive))

    return charge


class RateLimitMiddleware:
    """429 + Retry-After once a client has used its KRONOS_RATE_LIMIT_PER_MINUTE requests."""

    def __init__(self, app: ASGIApp, limiter: Limiter, exempt_paths: Iterable[str]) -> None:
        self.app = app
        self.limiter = limiter
        self.exempt_paths = frozenset(exempt_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.limiter.enabled or scope["path"] in self.exempt_paths:
            return await self.app(scope, receive, send)
        request = Request(scope, receive)
        error = _charge(self.limiter, request)
        if error is not None:
            return await send_error(scope, receive, send, error)
        headers, _ = _window(self.limiter, request)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).update(headers)
            await send(message)

        await self.app(scope, receive, with_headers)
