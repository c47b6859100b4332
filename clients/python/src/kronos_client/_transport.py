"""The request/retry logic, once for both clients ("sans-IO").

Every operation is a generator that yields what it needs done (``Send`` an HTTP request, ``Sleep``) and
is sent back the outcome (an ``httpx.Response`` or the ``httpx.TransportError`` it raised). ``Client``
runs these generators with blocking calls, ``AsyncClient`` with awaits; what to send, what to retry and
how to read the answers is written here and in ``_ops.py`` only once.

Retries: 503 and 429 (after the server's ``Retry-After``, or an exponential backoff when it gives none),
and connection failures (always when the request never left, e.g. connection refused; after it was sent
only for idempotent calls); at most ``retries`` times and ``max_retry_time`` seconds in all, counting the
waits. Never another 4xx, never a 500.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

from .errors import ConnectionError, KronosError, Overloaded, RateLimited, error_from_response

logger = logging.getLogger("kronos_client")

T = TypeVar("T")


@dataclass(frozen=True)
class Send:
    """One HTTP request to make. ``ok``: statuses answered as a reply instead of raised (readyz's 503)."""

    method: str
    path: str
    json: Any = None
    params: Mapping[str, Any] | None = None
    data: Mapping[str, Any] | None = None
    files: Mapping[str, Any] | None = None
    idempotent: bool = True
    ok: tuple[int, ...] = ()

    def content(self) -> bytes | None:
        """The JSON body, encoded once (NaN stays NaN, so the server names the bad row)."""
        if self.json is None:
            return None
        return json.dumps(self.json, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Sleep:
    seconds: float


Outcome = httpx.Response | httpx.TransportError
Operation = Generator[Send | Sleep, Any, T]


@dataclass
class RetryPolicy:
    """``retries``: retries after the first try; ``max_retry_time``: seconds from the first try after
    which nothing is retried (a ``Retry-After`` that would end past it is not waited for)."""

    retries: int = 3
    max_retry_time: float = 60.0
    backoff: float = 0.5  # first wait without a Retry-After; doubles per retry, at most max_backoff
    max_backoff: float = 8.0
    jitter: float = 0.5  # at most this many seconds (and 10% of the wait) added to each wait

    def delay(self, error: KronosError, send: Send, attempt: int, elapsed: float) -> float | None:
        """Seconds to wait before retrying after ``error`` on try ``attempt`` (0 = the first), or None."""
        if attempt >= self.retries:
            return None
        if isinstance(error, (Overloaded, RateLimited)):
            wait = error.retry_after
        elif isinstance(error, ConnectionError) and (send.idempotent or error.type == "connect"):
            wait = None
        else:
            return None
        if wait is None:
            wait = min(self.max_backoff, self.backoff * 2**attempt)
        # a little later than asked, at random, so clients turned away together do not all come back together
        wait += random.uniform(0, min(self.jitter, 0.1 * wait))
        if elapsed + wait > self.max_retry_time:
            return None
        return wait


def connection_error(exc: httpx.TransportError, send: Send) -> ConnectionError:
    """A transport failure as our ConnectionError; ``type`` is ``connect`` when nothing was sent."""
    kind = "connect" if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)) else "transport"
    if isinstance(exc, httpx.TimeoutException) and kind != "connect":
        kind = "timeout"
    what = f"{send.method} {send.path}"
    return ConnectionError(f"{what}: {type(exc).__name__}: {exc or 'no answer'}", type=kind)


def request(send: Send, policy: RetryPolicy) -> Operation[httpx.Response]:
    """Make ``send``, retrying as the policy allows; the successful response, or the error raised."""
    started = time.monotonic()
    attempt = 0
    while True:
        outcome: Outcome = yield send
        if isinstance(outcome, httpx.TransportError):
            error: KronosError = connection_error(outcome, send)
        elif outcome.status_code < 400 or outcome.status_code in send.ok:
            return outcome
        else:
            error = error_from_response(outcome.status_code, outcome.headers, outcome.content)
        wait = policy.delay(error, send, attempt, time.monotonic() - started)
        if wait is None:
            raise error
        logger.info(
            "retrying %s %s in %.2fs after %s (%s)",
            send.method,
            send.path,
            wait,
            error.status or error.type,
            error.message,
            extra={"retry_after": wait, "attempt": attempt + 1, "error_type": error.type, "status": error.status},
        )
        yield Sleep(wait)
        attempt += 1


def json_of(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise KronosError(
            f"{response.request.method} {response.request.url.path}: the answer is not JSON ({exc})",
            status=response.status_code,
        ) from None


@dataclass
class Session:
    """What both clients share between calls: the retry policy and what the server said about itself."""

    policy: RetryPolicy
    check_version: bool = True
    server: dict[str, Any] = field(default_factory=dict)  # filled on first use (see _ops.server_info)
