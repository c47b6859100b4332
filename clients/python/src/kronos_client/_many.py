"""``forecast_many``: a universe of series in, one long DataFrame out (the format of ``predict_df``).

Each series gets the seed ``series_seed(seed, id)``, so its rows do not depend on the rest of the
universe nor on the way it is sent: through ``/v1/predict/batch`` in chunks that fit the server's limits
(items per request, room in its queue, body size), or through a job for large sets. A series the server
refuses for its own data is left out with the server's message in ``attrs["errors"]`` (id → message) and
the rest are forecast; ``on_error="raise"`` raises instead.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ._ops import ensure_compatible, forecast_body, has_route, limits, require
from ._options import SamplingOptions, check_options
from ._transport import Operation, Send, Session, json_of, request
from .errors import PayloadTooLarge, ValidationError
from .frames import SEED_BITS, SeriesShape, long_rows, quantile_column, series_seed, split_long
from .progress import progress_bar

MAX_BODY_BYTES = 8 * 1024 * 1024  # under KRONOS_MAX_REQUEST_SIZE_MB's default (10); a 413 halves a chunk anyway
_ITEMS_LIMIT = re.compile(r"more than the limit of (\d+) \(KRONOS_MAX_BATCH_ITEMS\)")
_ITEM = re.compile(r"^batch\[(\d+)\]\.?(.*)$")
# an item's own fields (its series); a problem in any other field (pred_len, quantiles, ...) is the call's own
_OWN = {"", "data", "timestamps"}


@dataclass
class Entry:
    id: Hashable
    body: dict[str, Any]
    shape: SeriesShape
    size: int


def frames_of(
    data: Mapping[Hashable, pd.DataFrame] | pd.DataFrame, id_column: str, timestamp_column: str | None
) -> dict[Hashable, pd.DataFrame]:
    if isinstance(data, pd.DataFrame):
        return split_long(data, id_column, timestamp_column)
    if isinstance(data, Mapping):
        return dict(data)
    raise TypeError(f"forecast_many takes a dict of DataFrames by id or a long DataFrame, got {type(data).__name__}")


def entries_of(
    frames: Mapping[Hashable, pd.DataFrame],
    call_seed: int,
    pred_len: int | None,
    timestamp_column: str | None,
    options: dict[str, Any],
) -> list[Entry]:
    entries = []
    for series_id, df in frames.items():
        body, shape = forecast_body(df, pred_len, timestamp_column, seed=series_seed(call_seed, series_id), **options)
        entries.append(Entry(series_id, body, shape, len(json.dumps(body, separators=(",", ":")))))
    return entries


def chunked(entries: list[Entry], max_items: int, max_bytes: int = MAX_BODY_BYTES) -> list[list[Entry]]:
    chunks: list[list[Entry]] = []
    current: list[Entry] = []
    size = 0
    for entry in entries:
        if current and (len(current) >= max_items or size + entry.size > max_bytes):
            chunks.append(current)
            current, size = [], 0
        current.append(entry)
        size += entry.size + 1
    if current:
        chunks.append(current)
    return chunks


class Collector:
    """The results and the refused series of one forecast_many call."""

    def __init__(self, on_error: str, total: int, progress: bool, desc: str) -> None:
        if on_error not in ("collect", "raise"):
            raise ValueError(f"on_error must be 'collect' or 'raise', got {on_error!r}")
        self.on_error = on_error
        self.parts: dict[Hashable, pd.DataFrame] = {}
        self.errors: dict[Hashable, str] = {}
        self.bar = progress_bar(progress, total, desc)

    def done(self, entry: Entry, body: dict[str, Any]) -> None:
        self.parts[entry.id] = long_rows(entry.id, body, entry.shape)
        self.bar.update_to(len(self.parts) + len(self.errors))

    def failed(self, entry: Entry, message: str, error: ValidationError | None = None) -> None:
        if self.on_error == "raise":
            self.bar.close()
            raise ValidationError(
                f"series {entry.id!r}: {message}",
                status=error.status if error else None,
                type=error.type if error else "validation_error",
                details=error.details if error else None,
            )
        self.errors[entry.id] = message
        self.bar.update_to(len(self.parts) + len(self.errors))

    def frame(self, order: list[Hashable], options: dict[str, Any], call_seed: int) -> pd.DataFrame:
        self.bar.close()
        parts = [self.parts[i] for i in order if i in self.parts]
        if parts:
            out = pd.concat(parts, ignore_index=True)
        else:
            columns = ["id", "timestamps", "step", "open", "high", "low", "close"]
            columns += [quantile_column(q) for q in options.get("quantiles") or []]
            columns += ["p_up"] if (options.get("sample_count") or 1) >= 2 else []
            out = pd.DataFrame(columns=columns)
        out.attrs["errors"] = {i: self.errors[i] for i in order if i in self.errors}
        out.attrs["seed"] = int(call_seed)
        return out


def item_problems(error: ValidationError, count: int) -> dict[int, str] | None:
    """The refused items of a 422 by index (``batch[3].data[0]: ...``), or None when the problem is the
    call's own (a shared setting, the request as a whole)."""
    pairs = [(d["field"], str(d.get("message") or "")) for d in error.details if isinstance(d, dict) and "field" in d]
    if not pairs:  # a message naming the item, e.g. "batch[3]: the forecast is not finite: ..."
        field, _, message = error.message.partition(": ")
        pairs = [(field, message)]
    problems: dict[int, str] = {}
    for field, message in pairs:
        match = _ITEM.match(str(field))
        if match is None or int(match.group(1)) >= count:
            return None
        rest = match.group(2)
        if re.split(r"[.\[]", rest, maxsplit=1)[0] not in _OWN:
            return None
        problems.setdefault(int(match.group(1)), f"{rest}: {message}" if rest else message)
    return problems or None


def send_chunk(session: Session, chunk: list[Entry], common: dict[str, Any], out: Collector) -> Operation[None]:
    """One batch request, split when the server says it is too big, refused series set aside."""
    pending = list(chunk)
    while pending:
        body = {"batch": [e.body for e in pending], **common}
        try:
            response = yield from request(Send("POST", "/v1/predict/batch", json=body), session.policy)
        except PayloadTooLarge as exc:
            if len(pending) == 1:
                out.failed(pending[0], exc.message)
                return None
            half = len(pending) // 2
            for part in (pending[:half], pending[half:]):
                yield from send_chunk(session, part, common, out)
            return None
        except ValidationError as exc:
            limit = _ITEMS_LIMIT.search(exc.message)
            if limit is not None and int(limit.group(1)) < len(pending):
                session.server["max_batch_items"] = int(limit.group(1))
                for part in chunked(pending, int(limit.group(1))):
                    yield from send_chunk(session, part, common, out)
                return None
            problems = item_problems(exc, len(pending))
            if problems is None:
                raise
            for index, message in sorted(problems.items()):
                out.failed(pending[index], message, exc)
            pending = [e for i, e in enumerate(pending) if i not in problems]
            continue
        for entry, result in zip(pending, json_of(response)["results"]):
            out.done(entry, result)
        return None
    return None


def forecast_many(
    session: Session,
    data: Mapping[Hashable, pd.DataFrame] | pd.DataFrame,
    pred_len: int | None,
    *,
    id_column: str = "id",
    timestamp_column: str | None = None,
    seed: int | None = None,
    model: str | None = None,
    via: str = "auto",
    job_threshold: int = 1000,
    on_error: str = "collect",
    progress: bool = False,
    **options: Any,
) -> Operation[pd.DataFrame]:
    check_options("forecast_many", options, SamplingOptions.__annotations__)
    if via not in ("auto", "batch", "job"):
        raise ValueError(f"via must be 'auto', 'batch' or 'job', got {via!r}")
    yield from ensure_compatible(session)
    frames = frames_of(data, id_column, timestamp_column)
    call_seed = int(seed) if seed is not None else secrets.randbits(SEED_BITS)
    entries = entries_of(frames, call_seed, pred_len, timestamp_column, options)
    out = Collector(on_error, len(entries), progress, "kronos forecast_many")
    if via == "auto" and len(entries) > job_threshold:
        via = "job" if (yield from has_route(session, "/v1/jobs")) else "batch"
    if via == "job":
        from ._jobs import run_entries

        yield from require(session, route="/v1/jobs")
        yield from run_entries(session, entries, model, out, progress)
    else:
        common = {"model": model} if model is not None else {}
        max_items = (yield from limits(session))["max_batch_items"]
        for chunk in chunked(entries, max_items):
            yield from send_chunk(session, chunk, common, out)
    return out.frame(list(frames), {"pred_len": pred_len, **options}, call_seed)
