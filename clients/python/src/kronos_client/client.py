"""``Client`` and ``AsyncClient``: the same methods, blocking or awaited, over the one set of operations in
``_ops.py`` / ``_many.py`` / ``_jobs.py`` (each client only runs them: see ``_transport.py``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import httpx
import pandas as pd

from . import _jobs, _many, _ops
from ._transport import Operation, RetryPolicy, Send, Session, Sleep
from ._version import __version__
from .jobs import AsyncJob, Job, SubmittingJob
from .results import BacktestResult, ForecastResult

if TYPE_CHECKING:
    from typing_extensions import Self, Unpack

    from ._options import BacktestOptions, ForecastOptions, JobOptions, ManyOptions

T = TypeVar("T")
DEFAULT_TIMEOUT = httpx.Timeout(130.0, connect=10.0)  # a forecast may take KRONOS_REQUEST_TIMEOUT_S (120 s)
Frames: TypeAlias = "Mapping[Hashable, pd.DataFrame] | pd.DataFrame"


class _Base:
    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retries: int = 3,
        max_retry_time: float = 60.0,
        check_version: bool = True,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._session = Session(RetryPolicy(retries=retries, max_retry_time=max_retry_time), check_version)
        self._headers = {"User-Agent": f"kronos-client/{__version__}", **(headers or {})}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)

    @property
    def server_version(self) -> str | None:
        """The server's version as its OpenAPI says (None until the first call, or when its docs are off)."""
        return self._session.server.get("version")

    @staticmethod
    def _request_args(send: Send) -> dict[str, Any]:
        args: dict[str, Any] = {"params": send.params}
        if send.json is not None:
            args.update(content=send.content(), headers={"Content-Type": "application/json"})
        if send.data is not None or send.files is not None:
            args.update(data=send.data, files=send.files)
        return args


class Client(_Base):
    """A blocking client of a Kronos service: ``with Client("http://host:8000", api_key=...) as kronos:``.

    ``timeout``: seconds per request (or an ``httpx.Timeout``); ``retries``: how many times a 503 / 429
    (after the server's Retry-After) or a failed connection is retried, within ``max_retry_time`` seconds in
    all; ``check_version``: refuse a server older than this client needs, on first use
    (``IncompatibleServer``). ``transport``: an ``httpx`` transport (proxies, tests).
    """

    def __init__(self, base_url: str = "http://127.0.0.1:8000", api_key: str | None = None, **kwargs: Any) -> None:
        transport = kwargs.pop("transport", None)
        super().__init__(base_url, api_key, **kwargs)
        self._http = httpx.Client(
            base_url=self.base_url, headers=self._headers, timeout=self._timeout, transport=transport
        )

    def _perform(self, send: Send) -> httpx.Response | httpx.TransportError:
        try:
            return self._http.request(send.method, send.path, **self._request_args(send))
        except httpx.TransportError as exc:
            return exc

    def _run(self, op: Operation[T]) -> T:
        outcome: Any = None
        thrown: BaseException | None = None
        while True:
            try:
                step = op.throw(thrown) if thrown is not None else op.send(outcome)
            except StopIteration as stop:
                return stop.value
            thrown, outcome = None, None
            try:
                if isinstance(step, Sleep):
                    time.sleep(step.seconds)
                else:
                    outcome = self._perform(step)
            except KeyboardInterrupt as exc:  # let the operation clean up (a job it started is cancelled)
                thrown = exc

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the API ----------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """``GET /v1/healthz``: ``{"status": "ok", "instance", "uptime_s"}`` while the process serves."""
        return self._run(_ops.get_json(self._session, "/v1/healthz", check=False))

    def ready(self) -> dict[str, Any]:
        """``GET /v1/readyz``'s body, ready or not (``status``: ready, loading or failed; ``batching``)."""
        return self._run(_ops.get_json(self._session, "/v1/readyz", ok=(503,), check=False))

    def models(self) -> dict[str, Any]:
        """``GET /v1/models``: ``{"default": name, "models": [{"name", "state", "version", ...}]}``."""
        return self._run(_ops.get_json(self._session, "/v1/models"))

    def forecast(
        self, df: pd.DataFrame, pred_len: int | None = None, **options: Unpack[ForecastOptions]
    ) -> ForecastResult:
        """Forecast one series: ``df`` of candles (open, high, low, close, optionally volume, amount; times as a
        DatetimeIndex or a timestamp column), ``pred_len`` candles ahead (default: the server's).
        Options: sample_count, quantiles, seed, T, top_p, top_k, model, calendar, freq, window, return_paths,
        repair_input, timestamp_column. → ``ForecastResult`` (``.frame``, ``.bands``, ``.p_up``, ``.seed``, ...)."""
        return self._run(_ops.forecast(self._session, df, pred_len, **options))

    def forecast_many(self, data: Frames, pred_len: int | None = None, **options: Unpack[ManyOptions]) -> pd.DataFrame:
        """Forecast a universe: a dict of frames by id, or a long DataFrame with ``id_column``. → one long
        DataFrame (``id, timestamps, step``, the candle columns, ``close_q<level>``, ``p_up``), ids sorted;
        ``attrs["errors"]``: refused series (id → the server's message), ``attrs["seed"]``: the call's seed
        (series ``i`` used ``series_seed(seed, i)``). Through ``/v1/predict/batch`` in chunks the server
        accepts, or a job (``via="job"``, or ``auto`` above ``job_threshold`` series)."""
        return self._run(_many.forecast_many(self._session, data, pred_len, **options))

    def backtest(
        self,
        df: pd.DataFrame,
        windows: int | None = None,
        step: int | None = None,
        lookback: int | None = None,
        *,
        pred_len: int | None = None,
        **options: Unpack[BacktestOptions],
    ) -> BacktestResult:
        """Score the forecast on ``df``'s own history (``windows`` origins ``step`` rows apart, ``lookback`` rows
        of context each, ``pred_len`` rows ahead) against naive baselines. → ``BacktestResult`` (``.metrics``,
        ``.baselines``, ``.skill``, ``.windows``, ...)."""
        return self._run(_ops.backtest(self._session, df, windows, step, lookback, pred_len, **options))

    def submit_job(self, data: Frames | Sequence[dict[str, Any]], **options: Unpack[JobOptions]) -> Job:
        """Start a job (``POST /v1/jobs``): frames by id or a long DataFrame (made into items with per-id seeds,
        or uploaded as a table with ``upload="csv"|"parquet"``), or items ``[{"custom_id", ...request}]``.
        → ``Job`` (``.status()``, ``.wait()``, ``.results()``, ``.cancel()``); ``with`` cancels it on error."""
        job_id, info, meta = self._run(_jobs.submit(self._session, data, **options))
        return Job(self, job_id, info, meta)

    def job(self, job_id: str) -> Job:
        """The job ``job_id`` (made by this or another client), as a ``Job``."""
        return Job(self, job_id, self._run(_jobs.status(self._session, job_id)), {})

    def jobs(self, status: str | None = None, limit: int | None = None, after: str | None = None) -> dict[str, Any]:
        """``GET /v1/jobs``: the jobs, newest first (``status=`` filters, ``after=`` is the cursor)."""
        return self._run(_jobs.list_jobs(self._session, status, limit, after))


class AsyncClient(_Base):
    """The same methods as ``Client``, awaited: ``async with AsyncClient(url) as kronos: await kronos.forecast(df)``."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", api_key: str | None = None, **kwargs: Any) -> None:
        transport = kwargs.pop("transport", None)
        super().__init__(base_url, api_key, **kwargs)
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=self._headers, timeout=self._timeout, transport=transport
        )

    async def _perform(self, send: Send) -> httpx.Response | httpx.TransportError:
        try:
            return await self._http.request(send.method, send.path, **self._request_args(send))
        except httpx.TransportError as exc:
            return exc

    async def _run(self, op: Operation[T]) -> T:
        outcome: Any = None
        thrown: BaseException | None = None
        while True:
            try:
                step = op.throw(thrown) if thrown is not None else op.send(outcome)
            except StopIteration as stop:
                return stop.value
            thrown, outcome = None, None
            try:
                if isinstance(step, Sleep):
                    await asyncio.sleep(step.seconds)
                else:
                    outcome = await self._perform(step)
            except (asyncio.CancelledError, KeyboardInterrupt) as exc:
                thrown = exc

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def health(self) -> dict[str, Any]:
        return await self._run(_ops.get_json(self._session, "/v1/healthz", check=False))

    async def ready(self) -> dict[str, Any]:
        return await self._run(_ops.get_json(self._session, "/v1/readyz", ok=(503,), check=False))

    async def models(self) -> dict[str, Any]:
        return await self._run(_ops.get_json(self._session, "/v1/models"))

    async def forecast(
        self, df: pd.DataFrame, pred_len: int | None = None, **options: Unpack[ForecastOptions]
    ) -> ForecastResult:
        return await self._run(_ops.forecast(self._session, df, pred_len, **options))

    async def forecast_many(
        self, data: Frames, pred_len: int | None = None, **options: Unpack[ManyOptions]
    ) -> pd.DataFrame:
        return await self._run(_many.forecast_many(self._session, data, pred_len, **options))

    async def backtest(
        self,
        df: pd.DataFrame,
        windows: int | None = None,
        step: int | None = None,
        lookback: int | None = None,
        *,
        pred_len: int | None = None,
        **options: Unpack[BacktestOptions],
    ) -> BacktestResult:
        return await self._run(_ops.backtest(self._session, df, windows, step, lookback, pred_len, **options))

    def submit_job(self, data: Frames | Sequence[dict[str, Any]], **options: Unpack[JobOptions]) -> SubmittingJob:
        """``job = await kronos.submit_job(...)``, or ``async with kronos.submit_job(...) as job:`` (cancelled
        if the block raises)."""
        return SubmittingJob(self, self._run(_jobs.submit(self._session, data, **options)))

    async def job(self, job_id: str) -> AsyncJob:
        return AsyncJob(self, job_id, await self._run(_jobs.status(self._session, job_id)), {})

    async def jobs(
        self, status: str | None = None, limit: int | None = None, after: str | None = None
    ) -> dict[str, Any]:
        return await self._run(_jobs.list_jobs(self._session, status, limit, after))


for _name in ("health", "ready", "models", "forecast", "forecast_many", "backtest", "job", "jobs"):
    getattr(AsyncClient, _name).__doc__ = getattr(Client, _name).__doc__
