"""A job of ``/v1/jobs`` as an object: ``Job`` for ``Client``, ``AsyncJob`` for ``AsyncClient``.

``with kronos.submit_job(universe, pred_len=20) as job:`` cancels the job when the block raises (Ctrl-C
too); leaving the block normally leaves the job as it is (running, or done after ``job.wait()``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Generator
from typing import TYPE_CHECKING, Any

from . import _jobs
from .errors import KronosError

if TYPE_CHECKING:
    from .client import AsyncClient, Client

logger = logging.getLogger("kronos_client")


class _JobBase:
    def __init__(self, client: Any, job_id: str, info: dict[str, Any], meta: dict[str, Any]) -> None:
        self.id = job_id
        self.info = info  # the job object as last seen: status, counts {total, completed, failed}, timestamps
        self._client = client
        self._meta = meta

    @property
    def seed(self) -> int | None:
        """The call seed of a job made from frames (item ``i`` used ``series_seed(seed, i)``)."""
        return self._meta.get("seed")

    @property
    def last_status(self) -> str | None:
        return self.info.get("status")

    def __repr__(self) -> str:
        counts = self.info.get("counts") or {}
        return f"<{type(self).__name__} {self.id} {self.last_status} {counts}>"


class Job(_JobBase):
    _client: Client

    def status(self) -> dict[str, Any]:
        """``GET /v1/jobs/{id}``: ``status`` (queued, running, succeeded, failed, cancelling, cancelled, expired),
        ``counts``, timestamps."""
        self.info = self._client._run(_jobs.status(self._client._session, self.id))
        return self.info

    def wait(self, progress: bool = True, timeout: float | None = None, poll_interval: float = 0.25) -> dict[str, Any]:
        """Poll until the job ends (a tqdm bar of items done with ``progress``); the final job object.
        ``JobFailed`` when it failed or expired; ``TimeoutError`` past ``timeout`` seconds."""
        op = _jobs.wait(self._client._session, self.id, progress=progress, timeout=timeout, poll_interval=poll_interval)
        self.info = self._client._run(op)
        return self.info

    def results(self, format: str = "frame", table: str | None = None) -> Any:
        """``frame`` (default): a DataFrame (forecasts in the long format, ``attrs["errors"]`` for failed items);
        ``jsonl``: the result lines as dicts; ``csv`` / ``parquet``: the server's own table as a DataFrame
        (``table``: ``forecasts``, ``windows`` or ``errors``). While the job runs: what is done so far."""
        return self._client._run(_jobs.results(self._client._session, self.id, format, self._meta, table))

    def cancel(self) -> dict[str, Any]:
        """``POST /v1/jobs/{id}/cancel``: items in flight stop at their next step; what is done stays."""
        self.info = self._client._run(_jobs.cancel(self._client._session, self.id)) or self.info
        return self.info

    def delete(self) -> None:
        """``DELETE /v1/jobs/{id}``: the job and its results."""
        self._client._run(_jobs.delete(self._client._session, self.id))

    def __enter__(self) -> Job:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if exc is not None:
            try:
                self.cancel()
            except KronosError as error:  # the block's own error is the one to see
                logger.warning("could not cancel job %s after %r: %s", self.id, exc, error)


class AsyncJob(_JobBase):
    _client: AsyncClient

    async def status(self) -> dict[str, Any]:
        self.info = await self._client._run(_jobs.status(self._client._session, self.id))
        return self.info

    async def wait(
        self, progress: bool = True, timeout: float | None = None, poll_interval: float = 0.25
    ) -> dict[str, Any]:
        op = _jobs.wait(self._client._session, self.id, progress=progress, timeout=timeout, poll_interval=poll_interval)
        self.info = await self._client._run(op)
        return self.info

    async def results(self, format: str = "frame", table: str | None = None) -> Any:
        return await self._client._run(_jobs.results(self._client._session, self.id, format, self._meta, table))

    async def cancel(self) -> dict[str, Any]:
        self.info = await self._client._run(_jobs.cancel(self._client._session, self.id)) or self.info
        return self.info

    async def delete(self) -> None:
        await self._client._run(_jobs.delete(self._client._session, self.id))

    async def __aenter__(self) -> AsyncJob:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if exc is not None:
            try:
                await self.cancel()
            except KronosError as error:
                logger.warning("could not cancel job %s after %r: %s", self.id, exc, error)


for _name in ("status", "wait", "results", "cancel", "delete"):
    getattr(AsyncJob, _name).__doc__ = getattr(Job, _name).__doc__


class SubmittingJob:
    """What ``AsyncClient.submit_job`` returns: await it for the ``AsyncJob``, or ``async with`` it."""

    def __init__(self, client: AsyncClient, submission: Awaitable[tuple[str, dict[str, Any], dict[str, Any]]]) -> None:
        self._client = client
        self._submission = submission
        self._job: AsyncJob | None = None

    async def _submit(self) -> AsyncJob:
        if self._job is None:
            job_id, info, meta = await self._submission
            self._job = AsyncJob(self._client, job_id, info, meta)
        return self._job

    def __await__(self) -> Generator[Any, None, AsyncJob]:
        return self._submit().__await__()

    async def __aenter__(self) -> AsyncJob:
        return await self._submit()

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if self._job is not None:
            await self._job.__aexit__(kind, exc, tb)
