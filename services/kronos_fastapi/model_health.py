"""Is the model thread still doing its job? A loaded model can go bad while the process lives on: a
device error makes every call fail (``broken``), or a call never returns (``stalled``: a hung
kernel, a deadlock). Either way readyz answers 503 with the reason, forecasts get 503 (behind the
balancer, the other pool answers them) and the alert KronosModelUnhealthy fires.

- ``broken``: ``KRONOS_MODEL_FAILURE_LIMIT`` model calls in a row (decode steps, or request-level
  batches) failed with an error that is neither the input's (a 422) nor out of memory (split and
  retried). The service then runs its warm-up forecast every ``PROBE_EVERY_S`` and is ready again
  once one succeeds.
- ``stalled``: one model call has been running for more than ``KRONOS_MODEL_STALL_S``. It ends by
  itself when the call returns.

Calls are reported from the model thread (``started``, then ``succeeded``, ``failed`` or ``ended``);
``problem`` is asked from the event loop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

BROKEN, STALLED = "broken", "stalled"
PROBE_EVERY_S = 5.0


class ModelHealth:
    def __init__(self, stall_s: float, failure_limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_s = stall_s
        self.failure_limit = failure_limit
        self.clock = clock
        self._lock = threading.Lock()
        self._call_started: float | None = None
        self.failures = 0  # model calls failed in a row
        self._last_error: str | None = None
        self._last_failure = 0.0

    def started(self) -> None:
        with self._lock:
            self._call_started = self.clock()

    def succeeded(self) -> None:
        with self._lock:
            self._call_started, self.failures, self._last_error = None, 0, None

    def failed(self, exc: BaseException) -> None:
        """A call failed with an error that is the model's or the device's, not the request's."""
        with self._lock:
            self._call_started = None
            self.failures += 1
            self._last_error = f"{type(exc).__name__}: {str(exc)[:200]}"
            self._last_failure = self.clock()

    def ended(self) -> None:
        """A call ended with an expected error (the input's, out of memory): no verdict."""
        with self._lock:
            self._call_started = None

    @property
    def broken(self) -> bool:
        return bool(self.failure_limit) and self.failures >= self.failure_limit

    def problem(self) -> tuple[str, str] | None:
        """(``broken`` or ``stalled``, the reason), or None while the model thread is healthy."""
        now = self.clock()
        with self._lock:
            if self.broken:
                return BROKEN, (
                    f"the last {self.failures} model calls failed (KRONOS_MODEL_FAILURE_LIMIT={self.failure_limit}), "
                    f"the last with {self._last_error}; a test forecast runs every {PROBE_EVERY_S:g} s"
                )
            if self.stall_s and self._call_started is not None and now - self._call_started > self.stall_s:
                return STALLED, (
                    f"a model call has been running for {now - self._call_started:.0f} s "
                    f"(KRONOS_MODEL_STALL_S={self.stall_s:g}): the model thread looks wedged"
                )
        return None

    def probe_due(self) -> bool:
        """Broken, and the last failure is ``PROBE_EVERY_S`` old: time for a test forecast."""
        with self._lock:
            return self.broken and self._call_started is None and self.clock() - self._last_failure >= PROBE_EVERY_S
