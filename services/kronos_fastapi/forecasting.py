"""From request bodies to the model's ``SeriesInput`` (responses are shaped in ``responses.py``).

Reading a body lives here: JSON, which of the two request shapes it is, the batch item limit, and
the schema's errors as ours. What a parsed request means for the model (row forms, limits, valid
input candles, timestamps, one-row series and quantile bands) is ``series_input.py``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from .errors import InvalidJSON, InvalidRequest, field_path, invalid_request_from
from .schemas import BatchRequest, LegacyBatchRequest, LegacySingleRequest, SingleRequest
from .series_input import PreparedSeries, legacy_series, new_series, note_sliding
from .settings import Settings

# Fields both shapes have tell nothing about which one a body is.
_NEW_SINGLE = frozenset(SingleRequest.model_fields) - {"timestamps", "model"}
_LEGACY_SINGLE = frozenset(LegacySingleRequest.model_fields) - {"timestamps", "model"}


@dataclass
class ParsedRequest:
    legacy: bool
    batch: bool
    items: list[PreparedSeries]

    @property
    def rows(self) -> int:
        return sum(item.rows for item in self.items)

    @property
    def pred_len(self) -> int:
        return max(item.series.pred_len for item in self.items)


# --- reading the body ---------------------------------------------------------------------------


def parse_json(body: bytes) -> dict[str, Any]:
    """The body as a JSON object. NaN/Infinity literals parse here and are refused by the schema."""
    if not body.strip():
        raise InvalidJSON("the request body is empty; send a JSON object")
    try:
        value = json.loads(body.decode("utf-8-sig"))  # JSON is UTF-8 (RFC 8259); a BOM is tolerated
    except UnicodeDecodeError as exc:
        raise InvalidJSON(f"the request body is not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise InvalidJSON(f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise InvalidJSON("malformed JSON: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer literal with too many digits
        raise InvalidJSON(f"malformed JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidRequest(
            f"the body must be a JSON object, got {type(value).__name__ if value is not None else 'null'}"
        )
    return value


def _validate(schema: type[BaseModel], body: dict[str, Any], prefix: tuple = ()) -> Any:
    try:
        return schema.model_validate(body)
    except ValidationError as exc:
        errors = []
        for error in exc.errors(include_url=False):
            error = dict(error)
            error["loc"] = prefix + tuple(error["loc"])
            errors.append(error)
        raise invalid_request_from(errors) from None
    except RecursionError:
        raise InvalidRequest("the body is nested too deeply") from None


def _is_legacy(body: dict[str, Any], new_fields: frozenset[str], legacy_fields: frozenset[str]) -> bool:
    new, legacy = sorted(body.keys() & new_fields), sorted(body.keys() & legacy_fields)
    if new and legacy:
        raise InvalidRequest(
            f"the body mixes the two request shapes: {', '.join(new)} belong to the data/batch shape, "
            f"{', '.join(legacy)} to the candles/items shape",
            {"data_shape_fields": new, "candles_shape_fields": legacy},
        )
    return bool(legacy)


def _check_path_values(parsed: ParsedRequest, settings: Settings) -> ParsedRequest:
    """The sample paths asked for (``return_paths``) hold at most KRONOS_MAX_PATH_VALUES numbers, summed
    over the items; else a 422 naming the item's ``return_paths`` that goes over."""
    total = 0
    for i, item in enumerate(parsed.items):
        if not item.return_paths:
            continue
        s = item.series
        values = s.sample_count * s.pred_len * item.columns
        total += values
        if total <= settings.max_path_values:
            continue
        where = (("items" if parsed.legacy else "batch", i) if parsed.batch else ()) + (
            ("overrides", "return_paths") if parsed.legacy else ("return_paths",)
        )
        name, limit = field_path(where), settings.max_path_values
        counted = f"{s.sample_count} paths × {s.pred_len} candles × {item.columns} columns = {values} numbers"
        if total > values:
            counted += f", {total} with the items before it"
        raise InvalidRequest(
            f"{name}: {counted}, more than the limit of {limit} (KRONOS_MAX_PATH_VALUES); ask for fewer "
            "sample paths, a shorter pred_len or fewer items with return_paths",
            {
                "field": name,
                "message": f"{total} numbers of sample paths, limit {limit}",
                "values": total,
                "limit": limit,
            },
        )
    return parsed


def parse_single(body: bytes, settings: Settings) -> ParsedRequest:
    obj = parse_json(body)
    if _is_legacy(obj, _NEW_SINGLE, _LEGACY_SINGLE):
        request = _validate(LegacySingleRequest, obj)
        return _check_path_values(ParsedRequest(True, False, [legacy_series(request, settings, ())]), settings)
    request = _validate(SingleRequest, obj)
    item = new_series(request, settings, ())
    item.request = request
    note_sliding([item], settings)
    return _check_path_values(ParsedRequest(False, False, [item]), settings)


def parse_batch(body: bytes, settings: Settings) -> ParsedRequest:
    obj = parse_json(body)
    legacy = _is_legacy(obj, frozenset({"batch"}), frozenset({"items"}))
    field = "items" if legacy else "batch"
    raw_items = obj.get(field)
    # Check the count before validating every item, so an oversized batch is refused cheaply.
    if isinstance(raw_items, list) and len(raw_items) > settings.max_batch_items:
        raise InvalidRequest(
            f"{field}: {len(raw_items)} items, more than the limit of {settings.max_batch_items} "
            "(KRONOS_MAX_BATCH_ITEMS)"
        )
    if legacy:
        request = _validate(LegacyBatchRequest, obj)
        items = [legacy_series(item, settings, ("items", i)) for i, item in enumerate(request.items)]
    else:
        request = _validate(BatchRequest, obj)
        for i, item in enumerate(request.batch):
            if item.calibration is not None:
                raise InvalidRequest(f"batch[{i}].calibration: calibrated bands are for /v1/predict/single only")
        items = [new_series(item, settings, ("batch", i)) for i, item in enumerate(request.batch)]
    for item in items:
        item.model = item.model or request.model
    if not legacy:
        note_sliding(items, settings)
    return _check_path_values(ParsedRequest(legacy, True, items), settings)
