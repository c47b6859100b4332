"""The per-client rate limit, with slowapi: keyed on the API key when one was used, else the client IP.

Health, readiness and metrics are exempt, so probes and scrapers never get a 429.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from slowapi import Limiter
from slowapi.errors import RateLimitExceeded
from starlette.responses import Response

from .errors import RateLimited, respond
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
        default_limits=[f"{per_minute}/minute"] if per_minute else [],
        headers_enabled=True,
        enabled=per_minute > 0,
        storage_uri="memory://",
    )


def install_rate_limit_handler(app: FastAPI, limiter: Limiter) -> None:
    """429 in the service's error shape, with Retry-After and the X-RateLimit-* headers."""

    def _exceeded(request: Request, exc: RateLimitExceeded) -> Response:
        response = respond(
            request,
            RateLimited(
                f"rate limit exceeded: {exc.detail} per client (KRONOS_RATE_LIMIT_PER_MINUTE)",
                {"limit": str(exc.detail)},
            ),
        )
        return limiter._inject_headers(response, request.state.view_rate_limit)

    app.add_exception_handler(RateLimitExceeded, _exceeded)
