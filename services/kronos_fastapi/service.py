"""The service layer between the routes and the model: loading, readiness, and forecasting off the
event loop. Routes call ``ForecastService.forecast``, which queues the series with the batching
scheduler (``batching/``); the model runs on its own thread: decode steps that series join and
leave (``model.decoding.engine.DecodeEngine``, the default), or one request-level batch at a time.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from model import Forecast, InputError, Kronos, KronosPredictor, KronosTokenizer, SeriesInput
from model.checkpoints.hub import Checkpoint, resolve_pair
from model.decoding.engine import DecodeEngine
from model.devices import resolve_device
from model.errors import DeviceUnavailableError

from .batching import BatchScheduler, OnDone, forecast_splitting, is_out_of_memory
from .errors import DeviceOutOfMemory, InvalidRequest, ModelNotReady, ServiceError
from .metrics import ModelMetrics, ServiceMetrics
from .model_health import ModelHealth
from .model_specs import ModelSpec, default_spec
from .schemas import ModelInfo
from .settings import Settings

logger = logging.getLogger("kronos.service")

LOADING, READY, FAILED = "loading", "ready", "failed"
# The exit status of a process whose model load outlasted KRONOS_MODEL_LOAD_TIMEOUT_S (EX_TEMPFAIL).
LOAD_TIMEOUT_EXIT = 75


def checkpoint_version(folder: Path) -> str:
    """``<folder name>@<first 12 hex of the weights' SHA-256>``: names the exact checkpoint served."""
    digest = hashlib.sha256()
    with open(folder / "model.safetensors", "rb") as weights:
        for block in iter(lambda: weights.read(1 << 20), b""):
            digest.update(block)
    return f"{folder.resolve().name}@{digest.hexdigest()[:12]}"


def served_version(checkpoint: Checkpoint) -> str:
    """``<hub id>@<commit>`` for a checkpoint from the hub, else ``checkpoint_version`` of its folder."""
    return (
        f"{checkpoint.source}@{checkpoint.revision}" if checkpoint.from_hub else checkpoint_version(checkpoint.folder)
    )


class ForecastService:
    """Owns one model's predictor, model thread and batcher. ``load()`` runs once in the background;
    ``forecast()`` serves requests. An instance serving several models has one of these per model
    (``catalog.py``), so batches never mix models."""

    def __init__(
        self, settings: Settings, metrics: ServiceMetrics | ModelMetrics, spec: ModelSpec | None = None
    ) -> None:
        self.settings = settings
        self.spec = spec or default_spec(settings)
        self.name = self.spec.name
        self.metrics = metrics.for_model(self.name) if isinstance(metrics, ServiceMetrics) else metrics
        self._state = LOADING  # the load's: loading, ready or failed (``state`` adds the model thread's health)
        self._reason: str | None = "the model is loading"
        self.health = ModelHealth(settings.model_stall_s, settings.model_failure_limit)
        self._published: tuple | None = None
        self._probe: asyncio.Future | None = None
        self.device_requested = settings.device
        self.device: str | None = None
        self.fallback = False
        self.model: ModelInfo | None = None
        self.predictor: KronosPredictor | None = None
        self.engine: DecodeEngine | None = None  # step-level batching (KRONOS_BATCHING=step)
        self._watched: _Watched | None = None  # the engine, its steps reported to ``health``
        self.started = time.monotonic()
        # One model thread: batches run one at a time, off the event loop.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kronos-model")
        self.scheduler = BatchScheduler(
            self._run_batch,
            self._executor,
            self.metrics,
            # Both budgets are set again for the device actually used.
            max_rows=settings.batch_rows(settings.device),
            max_tokens=settings.batch_tokens(settings.device),
            context=self.spec.max_context,
            wait_s=settings.batch_wait_ms / 1000,
            max_queue=settings.max_queue,
            timeout_s=settings.request_timeout_s,
            step_model=lambda: self._watched,
            as_error=self._as_error,
            on_evict=self._on_evict,
        )
        self.metrics.queue_capacity.set(settings.max_queue)
        self._publish()

    # --- state ----------------------------------------------------------------------------
    @property
    def state(self) -> str:
        """loading, ready, failed (to load), or broken / stalled (loaded, but the model thread is not well)."""
        if self._state == READY and (problem := self.health.problem()) is not None:
            return problem[0]
        return self._state

    @property
    def reason(self) -> str | None:
        if self._state == READY and (problem := self.health.problem()) is not None:
            return problem[1]
        return self._reason

    @property
    def ready(self) -> bool:
        return self.state == READY

    def check_health(self) -> None:
        """From the event loop (readyz, metrics, each forecast): publish a change of state, and while
        broken run a test forecast now and then on the model thread (ready again once one works)."""
        if (self.state, self.reason is None) != self._published:
            self._publish()
        if self.health.probe_due() and (self._probe is None or self._probe.done()):
            self._probe = asyncio.get_running_loop().run_in_executor(self._executor, self._test_forecast)

    @property
    def device_label(self) -> str:
        """The device in use, for the X-Kronos-Device header: ``none`` while there is none."""
        return self.device or "none"

    @property
    def uptime_s(self) -> float:
        return round(time.monotonic() - self.started, 3)

    def _publish(self) -> None:
        self._published = (self.state, self.reason is None)
        self.metrics.model_ready.set(1 if self.ready else 0)
        self.metrics.device.info(
            {
                "requested": self.device_requested,
                "device": self.device_label,
                "fallback": str(self.fallback).lower(),
                "state": self.state,
                "version": self.model.version if self.model else "",
                "instance": self.settings.instance_name,
            }
        )

    # --- loading --------------------------------------------------------------------------
    async def load(self) -> None:
        """Load and warm up in the model thread; never raises (failure is a readiness state). A load
        still running after KRONOS_MODEL_LOAD_TIMEOUT_S (a hung download) ends the process, so that the
        container is restarted: the hung thread cannot be stopped, and nothing else would restart it."""
        loop = asyncio.get_running_loop()
        timeout = self.settings.model_load_timeout_s or None
        try:
            await asyncio.wait_for(loop.run_in_executor(self._executor, self._load), timeout)
        except asyncio.CancelledError:
            raise
        except asyncio.TimeoutError:
            self._state, self._reason = FAILED, f"the model load took longer than {timeout:g} s"
            logger.critical(
                "model %s: the load (download included) took longer than %g s (KRONOS_MODEL_LOAD_TIMEOUT_S); "
                "exiting with status %d so that the container is restarted",
                self.name,
                timeout,
                LOAD_TIMEOUT_EXIT,
            )
            logging.shutdown()  # the lines above reach the log before the process goes
            os._exit(LOAD_TIMEOUT_EXIT)
        except Exception as exc:  # noqa: BLE001 — any failure must become a reason on readyz
            self._state, self._reason = FAILED, f"{type(exc).__name__}: {exc}"
            logger.error("model failed to load: %s", self._reason)
        self._publish()

    def _resolve_device(self) -> torch.device:
        try:
            return resolve_device(self.device_requested)
        except DeviceUnavailableError as exc:
            if self.settings.device_fallback != "cpu":
                raise
            logger.warning("%s; falling back to cpu (KRONOS_DEVICE_FALLBACK=cpu)", exc)
            self.fallback = True
            return torch.device("cpu")

    def _load(self) -> None:
        started = time.perf_counter()
        device = self._resolve_device()
        self.device = str(device)
        self._publish()
        spec = self.spec
        pair = resolve_pair(spec.source, spec.revision, spec.tokenizer, spec.tokenizer_revision, spec.max_context)
        model = Kronos.from_pretrained(pair.model.folder)
        tokenizer = KronosTokenizer.from_pretrained(pair.tokenizer.folder)
        predictor = KronosPredictor(
            model, tokenizer, device=device, max_context=pair.max_context, precision=spec.precision
        )
        loaded = time.perf_counter()
        self._warm_up(predictor)
        rows = self.settings.batch_rows(self.device)
        if self.settings.batching == "step":
            # One KV slab for the model's life: a row per sample path the budget admits (and room
            # for the largest series alone), each as wide as the window.
            slots = max(rows, self.settings.max_sample_count)
            engine = DecodeEngine(predictor, slots=slots, chunk=self.settings.prefill_tokens(self.device))
            self._warm_up(predictor, engine)
            self.engine = engine
            self._watched = _Watched(engine, self.health)
            self.metrics.kv_cache_bytes.set(engine.slab.nbytes)
        warmed = time.perf_counter()
        self.predictor = predictor
        self.scheduler.max_rows = rows
        self.scheduler.max_tokens = self.settings.batch_tokens(self.device)
        # On a CPU a decode step costs in proportion to its rows: job items then also keep to a share of
        # the interactive rows (batching/common.py); a GPU's step costs about the same with more rows.
        self.scheduler.background_beside_interactive = self.device == "cpu"
        self.model = ModelInfo(
            name=self.name,
            version=served_version(pair.model),
            tokenizer_version=served_version(pair.tokenizer),
            path=str(pair.model.folder),
            tokenizer_path=str(pair.tokenizer.folder),
            max_context=pair.max_context,
            precision=predictor.precision,
            source=spec.source,
            revision=pair.model.revision,
            tokenizer_source=pair.tokenizer.source,
            tokenizer_revision=pair.tokenizer.revision,
            parameters=sum(p.numel() for p in model.parameters()),
            load_seconds=round(loaded - started, 3),
            warmup_seconds=round(warmed - loaded, 3),
        )
        self.metrics.model_load_seconds.set(warmed - started)
        self._state, self._reason = READY, None
        logger.info(
            "model ready",
            extra={"model": self.model.version, "device": self.device, "load_s": self.model.load_seconds},
        )

    @staticmethod
    def _warm_up(predictor: KronosPredictor, engine: DecodeEngine | None = None) -> None:
        """One tiny forecast, so readiness means the model has run on this device."""
        stamps = pd.date_range("2024-01-01", periods=3, freq="h")
        candles = np.array([[1.0, 1.1, 0.9, 1.0], [1.0, 1.2, 0.95, 1.1]])
        series = SeriesInput(candles, stamps[:2], stamps[2:], seed=0)
        if engine is None:
            predictor.forecast([series])
            return
        engine.admit("warm-up", series)
        while not engine.idle:
            engine.step()

    @property
    def kv_cache_bytes(self) -> int:
        return self.engine.slab.nbytes if self.engine is not None else 0

    # --- serving --------------------------------------------------------------------------
    async def forecast(self, series: Sequence[SeriesInput], endpoint: str, partial: bool = False) -> list:
        """Forecast every series, batched with other requests' series, within REQUEST_TIMEOUT_S.

        Raises QueueFull when the queue has no room for them all, ForecastTimeout past the timeout
        (the series leave the queue, or their batch at its next step), or the error of a series.
        ``partial``: each series' Forecast or its own ServiceError instead (``BatchQueue.submit``).
        """
        self.check_health()
        if not self.ready:
            retry = {"Retry-After": "5"} if self.state != FAILED else {}
            raise ModelNotReady(f"the model is not ready ({self.state}): {self.reason}", {"state": self.state}, retry)
        for s in series:
            self.metrics.rows.observe(len(s.candles))
            self.metrics.pred_len.observe(s.pred_len)
        started = time.perf_counter()
        forecasts = await (self.scheduler.submit(series, partial=True) if partial else self.scheduler.submit(series))
        self.metrics.prediction_duration.labels(endpoint).observe(time.perf_counter() - started)
        self.metrics.predicted_series.labels(endpoint).inc(sum(isinstance(f, Forecast) for f in forecasts))
        return forecasts

    def _run_batch(
        self, series: list[SeriesInput], on_done: OnDone | None = None
    ) -> list[Forecast | None | ServiceError]:
        """One model batch, in the model thread: each series' forecast, or the error its request gets.
        ``on_done`` hears of each forecast as soon as it is ready (its request is answered then)."""
        assert self.predictor is not None
        self.health.started()
        outcomes = forecast_splitting(self.predictor.forecast, series, self._on_split, on_done)
        failures = {id(o): o for o in outcomes if isinstance(o, BaseException) and not _expected(o)}
        for failure in failures.values():
            logger.error("a model batch of %d series failed", len(series), exc_info=failure)
        if any(isinstance(o, Forecast) for o in outcomes):
            self.health.succeeded()
        elif failures:
            self.health.failed(next(iter(failures.values())))
        else:
            self.health.ended()
        return [self._as_error(o) if isinstance(o, BaseException) else o for o in outcomes]

    def _on_split(self, exc: BaseException, size: int) -> None:
        if is_out_of_memory(exc):
            self.metrics.batch_splits.inc()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()  # give the failed attempt's blocks back before the halves run
            logger.warning("a batch of %d series ran out of memory on %s; retrying it in halves", size, self.device)
        else:
            logger.warning("a batch of %d series has an invalid series (%s); isolating it", size, exc)

    def _on_evict(self, exc: BaseException, size: int) -> None:
        self.metrics.batch_splits.inc()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        logger.warning(
            "a decode step of %d series ran out of memory on %s; the newest waits for room and restarts",
            size,
            self.device,
        )

    def _as_error(self, exc: BaseException) -> ServiceError:
        """A new error object per series: a batch request's error message is edited to name its item."""
        if isinstance(exc, InputError):
            return InvalidRequest(str(exc))
        if is_out_of_memory(exc):
            # A GPU instance that cannot fit a series tells the balancer (or client) to try the CPU one.
            headers = {} if self.device == "cpu" else {"X-Kronos-Retry-On": "cpu"}
            return DeviceOutOfMemory(
                f"the series does not fit in {self.device} memory even alone; send fewer sample paths or rows",
                {"device": self.device},
                headers,
            )
        return ServiceError("the forecast failed; see the server log", {"error": type(exc).__name__})

    def _test_forecast(self) -> None:
        """In the model thread, while broken: the warm-up forecast, through the engine when there is one."""
        self.health.started()
        try:
            if self.engine is not None:
                try:
                    self._warm_up(self.predictor, self.engine)
                finally:
                    if "warm-up" in self.engine.keys():
                        self.engine.remove("warm-up")
            else:
                self._warm_up(self.predictor)
        except Exception as exc:  # noqa: BLE001 — still broken; the next test comes PROBE_EVERY_S later
            self.health.failed(exc)
            logger.warning("the model's test forecast failed: %s: %s", type(exc).__name__, exc)
        else:
            self.health.succeeded()
            logger.info("the model's test forecast worked: ready again")

    async def close(self) -> None:
        await self.scheduler.close()
        self._executor.shutdown(wait=False, cancel_futures=True)


class _Watched:
    """The decode engine as the step scheduler sees it: each step reported to the model's health."""

    def __init__(self, engine: DecodeEngine, health: ModelHealth) -> None:
        self._engine = engine
        self._health = health

    def __getattr__(self, name: str):
        return getattr(self._engine, name)

    def step(self):
        self._health.started()
        try:
            report = self._engine.step()
        except Exception as exc:
            if _expected(exc):
                self._health.ended()
            else:
                self._health.failed(exc)
            raise
        self._health.succeeded()
        return report


def _expected(exc: BaseException) -> bool:
    """Errors that are a request's fault or a known device limit: not logged with a stack trace."""
    return isinstance(exc, InputError) or is_out_of_memory(exc)
