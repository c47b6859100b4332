"""``/v1/jobs``: bulk forecasts and backtests that run in the background, survive restarts and are
kept (``jobs/``). The job's request is answered 202 once the job and all its items are committed.

With API keys on, a job belongs to the key that made it (a hash of the key is stored): another key
gets 404, as for a job that does not exist.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.datastructures import UploadFile

from ..errors import InvalidRequest, NotFound
from ..forecasting import parse_json
from ..jobs import inputs, results
from ..jobs.errors import JobConflict, JobExpired, TooManyJobs, UnsupportedMediaType
from ..jobs.runtime import JobsRuntime
from ..jobs.store import NewJob, TooManyOpenJobs
from ..jobs.tables import CANCELLED, CANCELLING, EXPIRED
from ..schemas import Job, JobList
from .common import CatalogDep, SettingsDep, error_responses

router = APIRouter(prefix="/v1", tags=["jobs"])

_STATUSES = ("queued", "running", "succeeded", "failed", "cancelling", "cancelled", "expired")
_FORM_FIELDS_MAX = 64


def get_jobs(request: Request) -> JobsRuntime:
    return request.app.state.jobs


JobsDep = Annotated[JobsRuntime, Depends(get_jobs)]


def owner_of(request: Request) -> str:
    """Whose job: a hash of the request's API key ('' when keys are off)."""
    digest = getattr(request.state, "api_key_digest", None)
    return hashlib.sha256(f"kronos-jobs:{digest}".encode()).hexdigest() if digest else ""


def _time(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def job_object(record: dict[str, Any]) -> dict[str, Any]:
    counts = record["counts"]
    return {
        "id": record["id"],
        "object": "job",
        "kind": record["kind"],
        "status": record["status"],
        "model": record["model"],
        "input": record["input"],
        "counts": {
            "total": record["total"],
            "completed": counts.get("succeeded", 0),
            "failed": counts.get("failed", 0),
            "cancelled": counts.get("cancelled", 0),
            "running": counts.get("running", 0),
            "queued": counts.get("queued", 0),
        },
        "created_at": _time(record["created_at"]),
        "started_at": _time(record["started_at"]),
        "finished_at": _time(record["finished_at"]),
        "expires_at": _time(record["expires_at"]),
        "settings": record["settings"],
        "results_url": f"/v1/jobs/{record['id']}/results",
    }


async def _job(jobs: JobsRuntime, job_id: str, request: Request) -> dict[str, Any]:
    record = await jobs.call(jobs.store.get, job_id, owner_of(request))
    if record is None:
        raise NotFound(f"no job {job_id}", {"job_id": job_id})
    return record


# --- creating ------------------------------------------------------------------------------------


async def _from_upload(request: Request, owner: str, catalog, settings) -> NewJob:
    form = await request.form(max_files=1, max_fields=_FORM_FIELDS_MAX)
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise InvalidRequest("file: missing; upload the JSONL, CSV or Parquet file as the form field 'file'")
    fields = {k: inputs.form_value(k, v) for k, v in form.multi_items() if k != "file" and isinstance(v, str)}
    kind = inputs.check_kind(fields.pop("kind", "forecast"))
    model = inputs.check_model(catalog, fields.pop("model", None))
    content = await upload.read()
    file_format = fields.pop("format", None) or inputs.detect_format(upload.filename, upload.content_type, content[:4])
    if file_format not in ("jsonl", "csv", "parquet"):
        raise UnsupportedMediaType(
            f"file {upload.filename!r} ({upload.content_type}): not a known format; send a .jsonl, .csv or "
            ".parquet file (or the form field format=jsonl|csv|parquet)",
            {"filename": upload.filename, "content_type": upload.content_type},
        )
    if file_format == "jsonl":
        if fields:
            raise InvalidRequest(
                f"{sorted(fields)[0]}: form settings are for CSV and Parquet tables; a JSONL line carries its own body"
            )
        return await asyncio.to_thread(inputs.from_jsonl, content, kind, model, owner, catalog, settings)
    df = await asyncio.to_thread(inputs.read_table, content, file_format)
    return await asyncio.to_thread(inputs.from_table, df, kind, model, fields, file_format, owner, catalog, settings)


@router.post(
    "/jobs",
    status_code=202,
    summary="Start a job: many forecasts or backtests, run in the background and kept",
    description="A JSON body (`JobRequest`: kind, items each a /v1/predict/single or /v1/backtest body with a "
    "`custom_id`, model), or multipart/form-data with a `file`: JSONL (one `{custom_id, body}` a line) or a long "
    "CSV/Parquet table (`id_column`, default id; `timestamp_column`, default timestamps; open, high, low, close, "
    "volume, amount) and form fields shared by every id (pred_len, sample_count, quantiles, seed, T, top_k, top_p, "
    "freq, calendar, window, lookback, ...; kind, model). Each id of a table is one item, custom_id the id, seed "
    "`series_seed(seed, id)` as predict_df. Answered 202 with the job and a `Location` once it is committed.",
    response_model=Job,
    responses={
        **error_responses(400, 401, 403, 413, 422, 429, 503),
        415: {"description": "neither JSON nor multipart, or a file of no known format (unsupported_media_type)"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/JobRequest"}},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"file": {"type": "string", "format": "binary"}},
                        "required": ["file"],
                        "additionalProperties": {"type": "string"},
                    }
                },
            },
        }
    },
)
async def create_job(request: Request, jobs: JobsDep, catalog: CatalogDep, settings: SettingsDep) -> JSONResponse:
    owner = owner_of(request)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    jobs.store  # noqa: B018 — a 503 before the upload is read when the store is not open
    if content_type in ("application/json", ""):
        obj = await asyncio.to_thread(parse_json, await request.body())  # up to KRONOS_JOBS_MAX_UPLOAD_MB
        job = await asyncio.to_thread(inputs.from_json, obj, owner, catalog, settings)
    elif content_type == "multipart/form-data":
        job = await _from_upload(request, owner, catalog, settings)
    else:
        raise UnsupportedMediaType(
            f"Content-Type {content_type!r}: send application/json (a JobRequest) or multipart/form-data (a file)",
            {"content_type": content_type},
        )
    request.state.items = len(job.items)
    try:
        record = await jobs.call(jobs.store.create, job, settings.jobs_max_open_per_key)
    except TooManyOpenJobs as exc:
        raise TooManyJobs(
            f"{exc.open_jobs} jobs are queued or running for this key, the limit is "
            f"{settings.jobs_max_open_per_key} (KRONOS_JOBS_MAX_OPEN_PER_KEY); wait for one to finish or cancel one",
            {"open_jobs": exc.open_jobs, "limit": settings.jobs_max_open_per_key},
        ) from None
    if jobs.worker is not None:
        jobs.worker.poke()
    return JSONResponse(job_object(record), status_code=202, headers={"Location": f"/v1/jobs/{record['id']}"})


# --- reading -------------------------------------------------------------------------------------


@router.get(
    "/jobs", response_model=JobList, summary="Your jobs, newest first", responses=error_responses(401, 422, 503)
)
async def list_jobs(
    request: Request,
    jobs: JobsDep,
    status: str | None = Query(None, description="only jobs in this status"),
    limit: int = Query(20, ge=1, le=100),
    after: str | None = Query(None, description="the next_after of the previous page"),
) -> JSONResponse:
    if status is not None and status not in _STATUSES:
        raise InvalidRequest(f"status: must be one of {', '.join(_STATUSES)}, got {status!r}")
    page = await jobs.call(jobs.store.list, owner_of(request), status, limit, after)
    if page is None:
        raise InvalidRequest(f"after: no job {after}", {"after": after})
    records, more = page
    body = [job_object(r) for r in records]
    return JSONResponse({"jobs": body, "has_more": more, "next_after": body[-1]["id"] if more else None})


@router.get("/jobs/{job_id}", response_model=Job, summary="A job's status", responses=error_responses(401, 503))
async def get_job(job_id: str, request: Request, jobs: JobsDep) -> JSONResponse:
    return JSONResponse(job_object(await _job(jobs, job_id, request)))


@router.get(
    "/jobs/{job_id}/results",
    summary="A job's results so far, streamed",
    description="format=jsonl (default): one `{custom_id, response}` or `{custom_id, error}` line per settled "
    "item, the response being exactly the body its route answered. format=csv|parquet: the universe long format "
    "(table=forecasts, forecast jobs: id, timestamps, step, open, high, low, close[, volume, amount], close_q…, "
    "p_up), table=windows (backtest jobs: id, window, origin, timestamp, seed, mae) or table=errors (id, type, "
    "message).",
    responses=error_responses(401, 422, 503),
)
async def job_results(
    job_id: str,
    request: Request,
    jobs: JobsDep,
    format: str = Query("jsonl", description="jsonl, csv or parquet"),  # noqa: A002 — the API's name
    table: str | None = Query(None, description="forecasts, windows or errors (csv and parquet)"),
) -> StreamingResponse:
    if format not in results.FORMATS:
        raise InvalidRequest(f"format: must be one of {', '.join(results.FORMATS)}, got {format!r}")
    record = await _job(jobs, job_id, request)
    if record["status"] == EXPIRED:
        raise JobExpired(
            f"job {job_id} expired at {_time(record['expires_at'])}: its results were deleted "
            "(KRONOS_JOBS_RETENTION_HOURS)",
            {"job_id": job_id},
        )
    own = "forecasts" if record["kind"] == "forecast" else "windows"
    table = table or own
    if table not in (own, "errors"):
        raise InvalidRequest(f"table: a {record['kind']} job has the tables {own} and errors, not {table!r}")

    async def fetch(after: int, limit: int, statuses: tuple[str, ...]) -> list[Any]:
        return await jobs.call(jobs.store.answers, job_id, after, limit, statuses)

    body = results.jsonl(fetch) if format == "jsonl" else getattr(results, format)(fetch, table)
    name = f"{job_id}.jsonl" if format == "jsonl" else f"{job_id}-{table}.{format}"
    headers = {"Content-Disposition": f'attachment; filename="{name}"', "X-Kronos-Job-Status": record["status"]}
    return StreamingResponse(body, media_type=results.FORMATS[format], headers=headers)


# --- changing ------------------------------------------------------------------------------------


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=Job,
    summary="Cancel a job: items in flight stop, what is done stays",
    responses=error_responses(401, 503),
)
async def cancel_job(job_id: str, request: Request, jobs: JobsDep) -> JSONResponse:
    record = await _job(jobs, job_id, request)
    if record["status"] not in ("queued", "running", CANCELLING, CANCELLED):
        raise JobConflict(f"job {job_id} already {record['status']}: nothing to cancel", {"status": record["status"]})
    record = await jobs.call(jobs.store.cancel, job_id, owner_of(request))
    if jobs.worker is not None:
        jobs.worker.drop_job(job_id)
    if record is None:  # deleted meanwhile
        raise NotFound(f"no job {job_id}", {"job_id": job_id})
    return JSONResponse(job_object(record))


@router.delete(
    "/jobs/{job_id}",
    status_code=204,
    summary="Delete a job and its results (a running job is cancelled)",
    responses=error_responses(401, 503),
)
async def delete_job(job_id: str, request: Request, jobs: JobsDep) -> Response:
    if not await jobs.call(jobs.store.delete, job_id, owner_of(request)):
        raise NotFound(f"no job {job_id}", {"job_id": job_id})
    if jobs.worker is not None:
        jobs.worker.drop_job(job_id)
    return Response(status_code=204)
