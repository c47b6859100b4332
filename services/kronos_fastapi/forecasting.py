"""From request bodies to the model's ``SeriesInput`` (responses are shaped in ``responses.py``).

Reading a body lives here: JSON, which of the two request shapes it is, the batch item limit, and
the schema's errors as ours. What a parsed request means for the model (row forms, limits, valid
input candles, timestamps, one-row series and quantile bands) is ``series_input.py``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from .errors import InvalidJSON, InvalidRequest, field_details, field_path, invalid_request_from
from .model_specs import model_contexts
from .schemas import BatchItem, BatchRequest, LegacyBatchItem, LegacyBatchRequest, LegacySingleRequest, SingleRequest
from .series_input import PreparedSeries, legacy_series, new_series, note_sliding
from .settings import Settings

# Fields both shapes have tell nothing about which one a body is.
_NEW_SINGLE = frozenset(SingleRequest.model_fields) - {"timestamps", "model"}
_LEGACY_SINGLE = frozenset(LegacySingleRequest.model_fields) - {"timestamps", "model"}


@dataclass
class ParsedRequest:
    legacy: bool
    batch: bool
    items: list[PreparedSeries]  # the valid ones
    partial: bool = False  # a batch that keeps what finished: each item its result or its error
    positions: list[int] = field(default_factory=list)  # each valid item's index in the request's batch
    invalid: dict[int, tuple[InvalidRequest, str | None]] = field(default_factory=dict)  # index → (error, id)

    def __post_init__(self) -> None:
        self.positions = self.positions or list(range(len(self.items)))

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
        where = (("items" if parsed.legacy else "batch", parsed.positions[i]) if parsed.batch else ()) + (
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


class _BatchOptions(BaseModel):
    """A batch body's own fields; its items are validated one by one (every bad one is reported)."""

    model_config = ConfigDict(extra="forbid")

    batch: list[Any] = Field(min_length=1)
    model: str | None = Field(None, max_length=64)
    partial: StrictBool = False


class _LegacyBatchOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[Any] = Field(min_length=1)
    model: str | None = Field(None, max_length=64)


def _unknown_model(name: str | None, where: str, contexts: dict[str | None, int]) -> None:
    if name is not None and name not in contexts:
        served = [n for n in contexts if n is not None]
        raise InvalidRequest(
            f"{where}: unknown model {name!r}; this instance serves {', '.join(served)} (GET /v1/models)",
            {"field": where, "message": f"unknown model {name!r}", "models": served},
        )


def _batch_item(raw: Any, i: int, legacy: bool, model: str | None, settings: Settings, contexts) -> PreparedSeries:
    prefix = ("items" if legacy else "batch", i)
    if legacy:
        item = legacy_series(_validate(LegacyBatchItem, raw, prefix), settings, prefix)
    else:
        request = _validate(BatchItem, raw, prefix)
        if request.calibration is not None:
            raise InvalidRequest(f"batch[{i}].calibration: calibrated bands are for /v1/predict/single only")
        item = new_series(request, settings, prefix)
        item.series_id = request.id
    _unknown_model(item.model, field_path((*prefix, "model")), contexts)
    item.model = item.model or model
    return item


def _all_invalid(invalid: dict[int, tuple[InvalidRequest, str | None]], total: int, name: str) -> InvalidRequest:
    """One 422 for every invalid item: each one's message, and all their field details."""
    errors = [error for error, _ in invalid.values()]
    if len(errors) == 1:
        return errors[0]
    listed = "; ".join(error.message for error in errors[:5]) + ("; …" if len(errors) > 5 else "")
    details = [d for error in errors for d in field_details(error.message, error.details)]
    return InvalidRequest(f"{len(errors)} of the {total} items of {name} are invalid: {listed}", details)


def parse_batch(body: bytes, settings: Settings) -> ParsedRequest:
    """A batch; every invalid item is found (not only the first): a 422 for them all, or with
    ``partial`` their own error objects while the valid ones are forecast."""
    obj = parse_json(body)
    legacy = _is_legacy(obj, frozenset({"batch"}), frozenset({"items"}))
    name = "items" if legacy else "batch"
    raw_items = obj.get(name)
    # Check the count before validating every item, so an oversized batch is refused cheaply.
    if isinstance(raw_items, list) and len(raw_items) > settings.max_batch_items:
        raise InvalidRequest(
            f"{name}: {len(raw_items)} items, more than the limit of {settings.max_batch_items} "
            "(KRONOS_MAX_BATCH_ITEMS)",
            {"field": name, "message": f"{len(raw_items)} items, limit {settings.max_batch_items}"},
        )
    if not isinstance(raw_items, list) or not raw_items:
        _validate(LegacyBatchRequest if legacy else BatchRequest, obj)  # the schema's own error for the field
    options = _validate(_LegacyBatchOptions if legacy else _BatchOptions, obj)
    contexts = model_contexts(settings)
    _unknown_model(options.model, "model", contexts)
    partial = bool(getattr(options, "partial", False))
    items, positions, invalid = [], [], {}
    for i, raw in enumerate(raw_items):
        try:
            items.append(_batch_item(raw, i, legacy, options.model, settings, contexts))
            positions.append(i)
        except InvalidRequest as error:
            given = raw.get("id") if isinstance(raw, dict) else None
            invalid[i] = (error, given if isinstance(given, str) else None)
    if invalid and (not partial or not items):
        raise _all_invalid(invalid, len(raw_items), name)
    if not legacy:
        note_sliding(items, settings)
    parsed = ParsedRequest(legacy, True, items, partial, positions, invalid)
    return _check_path_values(parsed, settings)
