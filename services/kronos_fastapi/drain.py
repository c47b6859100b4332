"""What SIGTERM does: uvicorn stops accepting connections, the requests already admitted keep running
for ``KRONOS_SHUTDOWN_TIMEOUT_S`` (readyz says ``draining`` meanwhile), and the ones still running
then are answered with the JSON 503 of a closed batcher, before uvicorn's own graceful-shutdown
timeout (the drain plus ``DRAIN_MARGIN_S``) would cancel them into its plain-text 500.

``kronos-serve`` starts the drain (``DrainingServer``); an app run by another server drains only as
that server does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

logger = logging.getLogger("kronos.service")

# Between the drain's end and uvicorn's cancelling what is left: time to write the 503s.
DRAIN_MARGIN_S = 5.0


class Drain:
    """``begin()`` on shutdown; ``stop()`` (awaitable: fail what is still queued or running) at the deadline."""

    def __init__(self, timeout_s: float, stop: Callable[[], Awaitable[None]]) -> None:
        self.timeout_s = timeout_s
        self._stop = stop
        self.draining = False
        self._task: asyncio.Task | None = None

    def begin(self) -> None:
        """Start the drain (idempotent), from the event loop."""
        if self.draining:
            return
        self.draining = True
        logger.info("shutting down: admitted requests have %gs to finish (KRONOS_SHUTDOWN_TIMEOUT_S)", self.timeout_s)
        self._task = asyncio.get_running_loop().create_task(self._deadline(), name="kronos-drain")

    async def _deadline(self) -> None:
        await asyncio.sleep(self.timeout_s)
        logger.warning("the drain time is over; requests still running get 503 (KRONOS_SHUTDOWN_TIMEOUT_S)")
        await self._stop()

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def draining_server(config, drain: Drain):
    """A ``uvicorn.Server`` for ``config`` that starts ``drain`` as its shutdown begins."""
    import uvicorn

    class DrainingServer(uvicorn.Server):
        async def shutdown(self, sockets=None) -> None:
            drain.begin()
            await super().shutdown(sockets)

    return DrainingServer(config)
