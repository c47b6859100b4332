"""The app factory: ``create_app(settings)`` builds the FastAPI app; its lifespan loads the model
in the background and keeps the address lists fresh."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema
from starlette.middleware.cors import CORSMiddleware

from . import page
from .addresses import AddressList
from .catalog import ModelCatalog
from .drain import Drain
from .errors import install_error_handlers
from .jobs.runtime import JobsRuntime
from .metrics import ServiceMetrics
from .middleware import (
    AccessLogMiddleware,
    AllowListMiddleware,
    ApiKeyMiddleware,
    BodyLimitMiddleware,
    ClientAddressMiddleware,
    RequestContextMiddleware,
    UnhandledErrorMiddleware,
)
from .ratelimit import RateLimitMiddleware, build_limiter, failed_auth_limit
from .routes import backtest, docs, health, jobs, metrics, models, predict
from .schemas import BacktestRequest, BatchRequest, JobRequest, LegacyBatchRequest, LegacySingleRequest, SingleRequest
from .settings import Settings, load_settings

logger = logging.getLogger("kronos.service")

VERSION = "0.1.0"
LIVENESS = "/v1/healthz"
# Open to every client: probes and scrapers need neither an API key nor a place on the allow-list.
PROBES = ("/v1/healthz", "/v1/readyz", "/v1/metrics")
_DNS_TIMEOUT_S = 10.0


async def _refresh_addresses(lists: list[AddressList], every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        for addresses in lists:
            await asyncio.to_thread(addresses.refresh)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    models: ModelCatalog = app.state.models
    named = [a for a in (app.state.allowed_clients, app.state.trusted_proxies) if a.has_names]
    for addresses in named:
        try:
            await asyncio.wait_for(asyncio.to_thread(addresses.refresh), _DNS_TIMEOUT_S)
        except asyncio.TimeoutError:
            logger.warning("resolving %s took over %ss; retrying in the background", addresses.entries, _DNS_TIMEOUT_S)
    tasks = [asyncio.create_task(models.load(), name="kronos-load")]
    if named:
        tasks.append(asyncio.create_task(_refresh_addresses(named, settings.address_refresh_s), name="kronos-dns"))
    if app.state.jobs is not None:
        await app.state.jobs.start(app)
    try:
        yield
    finally:
        if app.state.jobs is not None:  # before the models close: its items in flight are given back
            await app.state.jobs.stop()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await app.state.drain.close()
        await models.close()


def _openapi(app: FastAPI):
    """FastAPI's schema plus the request models the predict routes parse themselves."""

    def build() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        models = [
            (m, "validation")
            for m in (SingleRequest, BatchRequest, LegacySingleRequest, LegacyBatchRequest, BacktestRequest, JobRequest)
        ]
        _, definitions = models_json_schema(models, ref_template="#/components/schemas/{model}")
        schema.setdefault("components", {}).setdefault("schemas", {}).update(definitions.get("$defs", {}))
        app.openapi_schema = schema
        return schema

    return build


def create_app(settings: Settings | None = None) -> FastAPI:
    """A new app for ``settings`` (default: read from the environment and ``.env``)."""
    settings = settings or load_settings()
    service_metrics = ServiceMetrics()
    catalog = ModelCatalog(settings, service_metrics)
    service = catalog.default  # routes that name no model use the default one
    app = FastAPI(
        title="Kronos forecasting service",
        version=VERSION,
        description="Forecast OHLCV candlesticks with Kronos. Errors always have the shape "
        '`{"error": {"type", "message", "details"}}`; unknown request fields are rejected (422).',
        lifespan=lifespan,
        docs_url=None,  # served by routes/docs.py from the package, not a CDN
        redoc_url=None,
        openapi_url="/openapi.json" if settings.enable_docs else None,
    )
    app.state.settings = settings
    app.state.metrics = service_metrics
    app.state.service = service
    app.state.models = catalog
    app.state.drain = Drain(settings.shutdown_timeout_s, catalog.close)
    app.state.allowed_clients = AddressList(settings.allowed_clients)
    app.state.trusted_proxies = AddressList(settings.trusted_proxies)
    app.state.jobs = JobsRuntime(settings, catalog, service_metrics.registry) if settings.jobs_enabled else None
    for model_service in catalog.services.values():  # job items hold at most this share of each batch
        model_service.scheduler.background_share = settings.jobs_max_share

    install_error_handlers(app)
    routers = (health.router, predict.router, metrics.router, models.router, backtest.router)
    routers += (docs.router,) if settings.enable_docs else ()
    routers += (jobs.router,) if settings.jobs_enabled else ()
    for router in routers:
        app.include_router(router)
    app.openapi = _openapi(app)  # type: ignore[method-assign]
    # The page's own files load before a key can be typed; its API calls need one like any client's.
    page_paths = page.OPEN_PATHS if settings.enable_ui else ()
    if settings.enable_ui:
        app.include_router(page.router)

    # Added innermost first: a request meets them bottom-up.
    uploads = (
        {"/v1/jobs": (settings.jobs_max_upload_bytes, "KRONOS_JOBS_MAX_UPLOAD_MB")} if settings.jobs_enabled else {}
    )
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes, paths=uploads)
    # Before the body is read: a refused client costs little.
    limiter = build_limiter(settings)
    app.add_middleware(RateLimitMiddleware, limiter=limiter, exempt_paths=PROBES + page_paths)
    if settings.api_keys:
        app.add_middleware(
            ApiKeyMiddleware,
            keys=settings.api_keys,
            open_paths=PROBES + page_paths,
            on_refused=failed_auth_limit(limiter),
        )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "X-API-Key", "X-Request-ID"],
            expose_headers=["X-Request-ID", "X-Kronos-Device", "X-Kronos-Instance", "Retry-After"],
        )
    if settings.allowed_clients:
        # The probes stay open (kubelet, compose health checks and Prometheus come from addresses
        # the list need not hold), as they are open to clients without an API key.
        app.add_middleware(AllowListMiddleware, allowed=app.state.allowed_clients, open_paths=PROBES)
    app.add_middleware(ClientAddressMiddleware, trusted_proxies=app.state.trusted_proxies)
    app.add_middleware(UnhandledErrorMiddleware)
    app.add_middleware(
        AccessLogMiddleware,
        metrics=service_metrics,
        device_label=lambda: service.device_label,
        known_paths=[route.path for router in routers for route in router.routes],
    )
    app.add_middleware(
        RequestContextMiddleware, instance_name=settings.instance_name, device_label=lambda: service.device_label
    )
    return app
