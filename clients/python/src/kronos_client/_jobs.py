"""Jobs (``/v1/jobs``) as generators: submit (a JSON body of items, or an uploaded JSONL / CSV / Parquet
file), status, wait (polling, with a progress bar of items done), results, cancel, list, delete."""

from __future__ import annotations

import io
import json
import re
import secrets
import time
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import pandas as pd

from ._many import Collector, Entry, entries_of, frames_of
from ._ops import ensure_compatible, require
from ._options import JobOptions, check_options
from ._transport import Operation, Send, Session, Sleep, json_of, request
from .errors import JobFailed
from .frames import CANDLE_COLUMNS, SEED_BITS, TIME_COLUMNS, SeriesShape, long_rows, options_body
from .progress import progress_bar

JOBS = "/v1/jobs"
TERMINAL = ("succeeded", "failed", "cancelled", "expired")
FORMATS = ("frame", "jsonl", "records", "csv", "parquet")
_OFFSET = re.compile(r"T.*(Z|[+-]\d\d:?\d\d)$")


def job_id_of(response_body: dict[str, Any], location: str | None) -> str:
    job_id = response_body.get("id") or response_body.get("job_id")
    if job_id is None and location:
        job_id = location.rstrip("/").rsplit("/", 1)[-1]
    if not job_id:
        raise ValueError(f"the server's answer names no job id: {response_body}")
    return str(job_id)


def _custom_ids(entries: Sequence[Entry]) -> dict[str, Hashable]:
    ids: dict[str, Hashable] = {}
    for entry in entries:
        key = str(entry.id)
        if key in ids:
            raise ValueError(f"ids {ids[key]!r} and {entry.id!r} are the same custom_id {key!r} in a job")
        ids[key] = entry.id
    return ids


def submit_items(
    session: Session, kind: str, items: list[dict[str, Any]], model: str | None
) -> Operation[tuple[str, dict[str, Any]]]:
    body: dict[str, Any] = {"kind": kind, "items": items}
    if model is not None:
        body["model"] = model
    # not idempotent: a retry after the request went out could make a second job (a refused connection is retried)
    response = yield from request(Send("POST", JOBS, json=body, idempotent=False), session.policy)
    info = json_of(response)
    return job_id_of(info, response.headers.get("location")), info


def _table(df: pd.DataFrame, timestamp_column: str | None) -> tuple[pd.DataFrame, str | None]:
    """The long table as the server reads it: times in a column (a DatetimeIndex becomes ``timestamps``),
    and that column's name (the server's default is ``timestamps``)."""
    if isinstance(df.index, pd.DatetimeIndex) and timestamp_column is None:
        return df.reset_index(names="timestamps"), "timestamps"
    if timestamp_column is None:
        lower = {str(c).strip().lower(): str(c) for c in df.columns}
        timestamp_column = next((lower[k] for k in TIME_COLUMNS if k in lower), None)
    return df, timestamp_column


def _table_file(df: pd.DataFrame, upload: str) -> tuple[str, bytes, str]:
    if upload == "parquet":
        buffer = io.BytesIO()
        try:
            df.to_parquet(buffer, index=False)
        except ImportError as exc:
            raise ImportError("a Parquet upload needs pyarrow: pip install 'kronos-client[parquet]'") from exc
        return "universe.parquet", buffer.getvalue(), "application/vnd.apache.parquet"
    text = df.to_csv(index=False)
    return "universe.csv", text.encode(), "text/csv"


def submit_upload(
    session: Session, kind: str, file: tuple[str, bytes, str], fields: dict[str, Any]
) -> Operation[tuple[str, dict[str, Any]]]:
    form = {k: (json.dumps(v) if isinstance(v, (list, dict, bool)) else str(v)) for k, v in fields.items()}
    form["kind"] = kind
    send = Send("POST", JOBS, data=form, files={"file": file}, idempotent=False)
    response = yield from request(send, session.policy)
    info = json_of(response)
    return job_id_of(info, response.headers.get("location")), info


def submit(
    session: Session,
    data: Mapping[Hashable, pd.DataFrame] | pd.DataFrame | Sequence[dict[str, Any]],
    *,
    kind: str = "forecast",
    pred_len: int | None = None,
    id_column: str = "id",
    timestamp_column: str | None = None,
    seed: int | None = None,
    model: str | None = None,
    upload: str | None = None,
    **options: Any,
) -> Operation[tuple[str, dict[str, Any], dict[str, Any]]]:
    """The new job's id, its object as the server answered, and what the client keeps to read its results."""
    check_options("submit_job", options, JobOptions.__annotations__)
    if kind not in ("forecast", "backtest"):
        raise ValueError(f"kind must be 'forecast' or 'backtest', got {kind!r}")
    if upload not in (None, "jsonl", "csv", "parquet"):
        raise ValueError(f"upload must be None (a JSON body), 'jsonl', 'csv' or 'parquet', got {upload!r}")
    yield from ensure_compatible(session)
    yield from require(session, route=JOBS)
    meta: dict[str, Any] = {"kind": kind, "shapes": {}, "ids": {}}
    if upload in ("csv", "parquet"):
        if not isinstance(data, pd.DataFrame):
            raise TypeError(f"upload={upload!r} sends a long DataFrame as a table; got {type(data).__name__}")
        table, timestamp_column = _table(data, timestamp_column)
        fields = options_body(pred_len=pred_len, seed=seed, model=model, id_column=id_column, **options)
        if timestamp_column is not None:
            fields["timestamp_column"] = timestamp_column
        job_id, info = yield from submit_upload(session, kind, _table_file(table, upload), fields)
        return job_id, info, meta
    if isinstance(data, (pd.DataFrame, Mapping)):
        frames = frames_of(data, id_column, timestamp_column)
        call_seed = int(seed) if seed is not None else secrets.randbits(SEED_BITS)
        entries = entries_of(frames, call_seed, pred_len, timestamp_column, options)
        meta.update(seed=call_seed, ids=_custom_ids(entries), shapes={str(e.id): e.shape for e in entries})
        items = [{"custom_id": str(e.id), **e.body} for e in entries]
    else:
        items = [dict(item) for item in data]
        if any("custom_id" not in item for item in items):
            raise ValueError("every job item needs a custom_id")
    if upload == "jsonl":
        lines = "".join(
            json.dumps({"custom_id": i["custom_id"], "body": {k: v for k, v in i.items() if k != "custom_id"}}) + "\n"
            for i in items
        )
        fields = {"model": model} if model is not None else {}
        job_id, info = yield from submit_upload(
            session, kind, ("items.jsonl", lines.encode(), "application/jsonl"), fields
        )
    else:
        job_id, info = yield from submit_items(session, kind, items, model)
    return job_id, info, meta


def status(session: Session, job_id: str) -> Operation[dict[str, Any]]:
    response = yield from request(Send("GET", f"{JOBS}/{job_id}"), session.policy)
    return json_of(response)


def cancel(session: Session, job_id: str) -> Operation[dict[str, Any]]:
    response = yield from request(Send("POST", f"{JOBS}/{job_id}/cancel"), session.policy)  # idempotent
    return json_of(response) if response.content else {}


def delete(session: Session, job_id: str) -> Operation[None]:
    yield from request(Send("DELETE", f"{JOBS}/{job_id}"), session.policy)
    return None


def list_jobs(
    session: Session, status: str | None = None, limit: int | None = None, after: str | None = None
) -> Operation[dict[str, Any]]:
    yield from ensure_compatible(session)
    yield from require(session, route=JOBS)
    params = {k: v for k, v in {"status": status, "limit": limit, "after": after}.items() if v is not None}
    response = yield from request(Send("GET", JOBS, params=params), session.policy)
    body = json_of(response)
    return body if isinstance(body, dict) else {"jobs": body}


def done_count(info: dict[str, Any]) -> tuple[int, int | None]:
    counts = info.get("counts") or {}
    done = sum(int(counts.get(k) or 0) for k in ("completed", "failed", "cancelled"))
    return done, counts.get("total")


def wait(
    session: Session,
    job_id: str,
    *,
    progress: bool = True,
    poll_interval: float = 0.25,
    max_poll_interval: float = 2.0,
    timeout: float | None = None,
) -> Operation[dict[str, Any]]:
    """Poll until the job ends; the final job object. JobFailed when it failed or expired (a cancelled job
    is returned: it was asked for); TimeoutError after ``timeout`` seconds (the job goes on)."""
    started = time.monotonic()
    info = yield from status(session, job_id)
    done, total = done_count(info)
    bar = progress_bar(progress, total, f"kronos job {job_id[:12]}")
    interval = poll_interval
    try:
        while info.get("status") not in TERMINAL:
            if timeout is not None and time.monotonic() - started + interval > timeout:
                raise TimeoutError(f"job {job_id} is still {info.get('status')} after {timeout}s ({done}/{total})")
            yield Sleep(interval)
            interval = min(max_poll_interval, interval * 1.5)
            info = yield from status(session, job_id)
            done, total = done_count(info)
            bar.update_to(done, total)
        bar.update_to(done, total)
    finally:
        bar.close()
    if info["status"] in ("failed", "expired"):
        reason = info.get("error") or info.get("reason") or ""
        raise JobFailed(f"job {job_id} {info['status']}{': ' + str(reason) if reason else ''}", job=info)
    return info


def _records(content: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in content.decode("utf-8").splitlines() if line.strip()]


def _shape_of(body: dict[str, Any]) -> SeriesShape:
    rows = body.get("forecast") or []
    columns = [c for c in CANDLE_COLUMNS if any(r.get(c) is not None for r in rows) or c in CANDLE_COLUMNS[:4]]
    stamps = [r.get("timestamp") for r in rows]
    aware = bool(stamps) and all(isinstance(s, str) and _OFFSET.search(s) for s in stamps)
    return SeriesShape({c: c for c in columns}, bool(stamps) and None not in stamps, "UTC" if aware else None)


def error_text(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or error.get("error", {}).get("message") or error)
    return str(error)


def records_frame(records: list[dict[str, Any]], meta: dict[str, Any]) -> pd.DataFrame:
    """A job's JSONL records as a DataFrame: forecasts in the long format; backtests one row per item with
    the model's scores. Failed items are in ``attrs["errors"]`` (custom_id → message)."""
    ids: dict[str, Hashable] = meta.get("ids") or {}
    errors = {ids.get(r["custom_id"], r["custom_id"]): error_text(r["error"]) for r in records if r.get("error")}
    good = [r for r in records if r.get("response") is not None]
    if meta.get("kind") == "backtest" or (good and "metrics" in good[0]["response"]):
        rows = [{"id": ids.get(r["custom_id"], r["custom_id"]), **_scores(r["response"])} for r in good]
        out = pd.DataFrame(rows)
    else:
        shapes: dict[str, SeriesShape] = meta.get("shapes") or {}
        parts = [
            long_rows(
                ids.get(r["custom_id"], r["custom_id"]),
                r["response"],
                shapes.get(r["custom_id"]) or _shape_of(r["response"]),
            )
            for r in good
        ]
        out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["id", "timestamps", "step"])
    out.attrs["errors"] = errors
    if "seed" in meta:
        out.attrs["seed"] = meta["seed"]
    return out


def _scores(body: dict[str, Any]) -> dict[str, Any]:
    metrics = body.get("metrics") or {}
    scores = {k: metrics.get(k) for k in ("mae", "rmse", "mape", "direction_accuracy", "crps", "brier")}
    for name, baseline in (body.get("baselines") or {}).items():
        for key, value in (baseline.get("skill") or {}).items():
            scores[f"skill_{name}_{key}"] = value
    return scores


def results(
    session: Session, job_id: str, format: str = "frame", meta: dict[str, Any] | None = None, table: str | None = None
) -> Operation[Any]:
    """``frame``: a DataFrame built from the JSONL (forecasts in the long format); ``jsonl``/``records``: the
    JSONL lines as dicts; ``csv``/``parquet``: the server's own table (``table``: forecasts, windows or errors)."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    wire = "jsonl" if format in ("frame", "records") else format
    params = {"format": wire, **({"table": table} if table is not None and wire != "jsonl" else {})}
    response = yield from request(Send("GET", f"{JOBS}/{job_id}/results", params=params), session.policy)
    if wire == "csv":
        return pd.read_csv(io.BytesIO(response.content))
    if wire == "parquet":
        try:
            return pd.read_parquet(io.BytesIO(response.content))
        except ImportError as exc:
            raise ImportError("Parquet results need pyarrow: pip install 'kronos-client[parquet]'") from exc
    records = _records(response.content)
    if format in ("jsonl", "records"):
        return records
    return records_frame(records, meta or {})


def run_entries(
    session: Session, entries: list[Entry], model: str | None, out: Collector, progress: bool
) -> Operation[None]:
    """forecast_many through a job: the entries as items, waited for, their records fed to ``out``."""
    ids = _custom_ids(entries)
    by_id = {str(e.id): e for e in entries}
    job_id, _ = yield from submit_items(session, "forecast", [{"custom_id": k, **by_id[k].body} for k in ids], model)
    try:
        yield from wait(session, job_id, progress=progress)
    except GeneratorExit:
        raise
    except BaseException:  # Ctrl-C, a task cancelled, a failure: the job is not left running for nobody
        yield from cancel(session, job_id)
        raise
    for record in (yield from results(session, job_id, "records")):
        entry = by_id[record["custom_id"]]
        if record.get("response") is not None:
            out.done(entry, record["response"])
        else:
            out.failed(entry, error_text(record.get("error")))
    return None
