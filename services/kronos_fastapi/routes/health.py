"""Liveness, readiness and a detailed health report."""

from __future__ import annotations

import os
import shutil
from typing import Any

import psutil
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ..schemas import DetailedHealthResponse, HealthResponse, ReadyResponse
from .common import CatalogDep, ServiceDep, error_responses

router = APIRouter(prefix="/v1", tags=["health"])

# Thresholds above which /v1/healthz/detailed says "degraded".
MEMORY_PERCENT_LIMIT = 90.0
DISK_PERCENT_LIMIT = 95.0


@router.get("/healthz", response_model=HealthResponse, summary="Liveness: 200 while the process serves")
async def healthz(service: ServiceDep) -> dict[str, Any]:
    return {"status": "ok", "instance": service.settings.instance_name, "uptime_s": service.uptime_s}


@router.get(
    "/readyz",
    response_model=ReadyResponse,
    summary="Readiness: 200 once the default model is loaded and warmed up, else 503 with a reason",
    responses={503: {"model": ReadyResponse, "description": "loading, or failed (e.g. the device is missing)"}},
)
async def readyz(request: Request, service: ServiceDep, catalog: CatalogDep) -> JSONResponse:
    for each in catalog.services.values():
        each.check_health()  # a broken or wedged model thread turns its model unready, with the reason
    model = service.model
    state, reason = service.state, service.reason
    draining = request.app.state.drain.draining
    if draining:  # SIGTERM: requests already admitted finish, no new ones should come
        state, reason = "draining", "the instance is shutting down (SIGTERM)"
    body = {
        "status": state,
        "reason": reason,
        "device": service.device,
        "device_requested": service.device_requested,
        "device_fallback": service.fallback,
        "instance": service.settings.instance_name,
        "uptime_s": service.uptime_s,
        "model": model.model_dump() if model else None,
        "batching": {
            "max_batch_size": service.scheduler.max_rows,
            "max_batch_tokens": service.scheduler.max_tokens,
            "batch_wait_ms": service.settings.batch_wait_ms,
            "max_queue": service.settings.max_queue,
            "queue_depth": service.scheduler.depth,
            "mode": service.settings.batching,
            "kv_cache_bytes": service.kv_cache_bytes,
        },
        "models": catalog.described(),
        # the job store's state; reported, never a reason for a 503 (predict serves without it)
        "jobs": request.app.state.jobs.describe() if request.app.state.jobs is not None else {"enabled": False},
    }
    return JSONResponse(body, status_code=200 if service.ready and not draining else 503)


@router.get(
    "/healthz/detailed",
    response_model=DetailedHealthResponse,
    summary="Uptime, model state, process and system memory, disk: healthy or degraded",
    responses=error_responses(401, 403),
)
async def healthz_detailed(service: ServiceDep) -> dict[str, Any]:
    process = psutil.Process(os.getpid())
    memory = psutil.virtual_memory()
    disk_path = str(service.settings.model_path)
    disk = shutil.disk_usage(disk_path if os.path.exists(disk_path) else "/")
    disk_percent = round(100.0 * disk.used / disk.total, 1) if disk.total else 0.0
    problems = []
    if not service.ready:
        problems.append(f"model {service.state}: {service.reason}")
    if memory.percent > MEMORY_PERCENT_LIMIT:
        problems.append(f"system memory {memory.percent}% used")
    if disk_percent > DISK_PERCENT_LIMIT:
        problems.append(f"disk {disk_percent}% used")
    with process.oneshot():
        process_info = {
            "pid": process.pid,
            "rss_bytes": process.memory_info().rss,
            "threads": process.num_threads(),
            "cpu_percent": process.cpu_percent(interval=None),
        }
    return {
        "status": "degraded" if problems else "healthy",
        "problems": problems,
        "instance": service.settings.instance_name,
        "uptime_s": service.uptime_s,
        "model": {
            "state": service.state,
            "reason": service.reason,
            "version": service.model.version if service.model else None,
            "device": service.device,
            "device_requested": service.device_requested,
        },
        "process": process_info,
        "system": {
            "memory_total_bytes": memory.total,
            "memory_available_bytes": memory.available,
            "memory_percent": memory.percent,
            "cpu_count": psutil.cpu_count(),
        },
        "disk": {"path": disk_path, "total_bytes": disk.total, "free_bytes": disk.free, "percent": disk_percent},
    }
