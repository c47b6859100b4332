"""A parsed request's series → the model's ``SeriesInput`` (with what the response needs to know).

All the rules about what a request means live here: row forms, limits, valid input candles, and how
one-row series and quantile bands are handled. Future timestamps come from ``model.series.calendars``
(the history's own calendar, ``freq`` or ``calendar``). Reading the body is ``forecasting.py``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from model import SeriesInput
from model.decoding.defaults import Sampling, sliding_note
from model.decoding.forecast import FEATURE_COLUMNS as COLUMNS
from model.decoding.forecast import SEED_BITS
from model.errors import InputError
from model.series.calendars import future_timestamps, synthetic_timestamps
from model.series.candles import RULE, describe_invalid, invalid_rows, repair_candles

from . import band_defaults
from .errors import InvalidRequest, field_path
from .model_specs import model_contexts
from .schemas import Candle, LegacySingleRequest, Overrides, SingleRequest
from .settings import Settings


@dataclass
class PreparedSeries:
    """One series ready for the model, with what the response needs to know about it."""

    series: SeriesInput
    rows: int  # as sent (a one-row series is padded for the model)
    quantiles: list[float] | None = None
    has_timestamps: bool = True
    series_id: str | None = None
    notes: list[str] = field(default_factory=list)  # said in the response: repairs, seeds a browser rounds
    repaired_input: int = 0  # input rows repaired at the request's ask (``repair_input``)
    request: SingleRequest | None = None  # the parsed single request (calibrated predict builds windows from it)
    model: str | None = None  # the served model's name; None: the default model
    return_paths: bool = False  # the response carries every sample path (``paths``)
    sampling: Sampling | None = None  # the effective settings (band_defaults), echoed with the seed used

    @property
    def columns(self) -> int:
        """How many of open, high, low, close, volume, amount the request gave (4, 5 or 6)."""
        return self.series.candles.shape[1]


def _name(prefix: tuple, *parts: Any) -> str:
    return field_path(prefix + parts)


def _candle_values(row: Candle) -> list[float]:
    values = [row.open, row.high, row.low, row.close]
    if row.volume is not None:
        values.append(row.volume)
        if row.amount is not None:
            values.append(row.amount)
    return values


def _describe(row: Any) -> str:
    if isinstance(row, Candle):
        named = [c for c in COLUMNS if getattr(row, c) is not None]
        return "an object with " + ", ".join(named)
    return f"{len(row)} values"


def candles_array(rows: Sequence[Any], prefix: tuple, field: str) -> np.ndarray:
    """(n, 4|5|6) float64 from rows that must all have the same form and columns."""
    first = rows[0]
    if isinstance(first, Candle) and first.amount is not None and first.volume is None:
        raise InvalidRequest(f"{_name(prefix, field, 0)}: amount given without volume")
    shape = _describe(first)
    values = []
    for i, row in enumerate(rows):
        if _describe(row) != shape:
            raise InvalidRequest(
                f"{_name(prefix, field, i)}: row has {_describe(row)} but {_name(prefix, field, 0)} has {shape}; "
                "every row needs the same columns"
            )
        values.append(_candle_values(row) if isinstance(row, Candle) else row)
    return np.asarray(values, dtype=np.float64)


def _check_limits(
    prefix: tuple,
    field: str,
    rows: int,
    pred_len: int,
    sample_count: int,
    settings: Settings,
    pred_len_field: str = "pred_len",
    samples_field: str = "sample_count",
) -> None:
    for name, value, limit, setting, what in (
        (field, rows, settings.max_rows, "KRONOS_MAX_ROWS", f"{rows} rows, more"),
        (pred_len_field, pred_len, settings.max_pred_len, "KRONOS_MAX_PRED_LEN", f"{pred_len} is more"),
        (samples_field, sample_count, settings.max_sample_count, "KRONOS_MAX_SAMPLE_COUNT", f"{sample_count} is more"),
    ):
        if value > limit:
            where, text = _name(prefix, name), f"{what} than the limit of {limit} ({setting})"
            raise InvalidRequest(f"{where}: {text}", {"field": where, "message": text, "value": value, "limit": limit})


def timestamp_index(values: Sequence[Any], name: str) -> pd.DatetimeIndex:
    """Strictly increasing timestamps, all with or all without a time zone."""
    try:
        index = pd.DatetimeIndex(values)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidRequest(f"{name}: {exc}") from None
    steps = np.diff(index.asi8)
    if (steps <= 0).any():
        at = int(np.argmax(steps <= 0)) + 1
        raise InvalidRequest(
            f"{name}[{at}]: timestamps must be strictly increasing ({index[at]} is not after {index[at - 1]})"
        )
    return index


@contextmanager
def _calendar_errors(prefix: tuple) -> Iterator[None]:
    """``model.series.calendars`` names the field (freq, calendar, timestamps); put the item's path before it."""
    try:
        yield
    except InputError as exc:
        where = _name(prefix)
        raise InvalidRequest(f"{where}.{exc}" if prefix else str(exc)) from None
    except (ValueError, OverflowError, TypeError) as exc:  # pandas' dates end in 2262
        raise InvalidRequest(f"{_name(prefix, 'timestamps')}: the timestamps cannot be extended ({exc})") from None


def _valid_input(
    candles: np.ndarray, repair: bool, prefix: tuple, field_name: str, notes: list[str]
) -> tuple[np.ndarray, int]:
    """Input candles must be valid (422 naming the first bad row) unless the request asks to repair
    them: (candles, rows repaired)."""
    bad = invalid_rows(candles)
    if not len(bad):
        return candles, 0
    if not repair:
        row = int(bad[0])
        more = f" ({len(bad) - 1} more rows too)" if len(bad) > 1 else ""
        raise InvalidRequest(
            f"{_name(prefix, field_name, row)}: not a valid candle: {describe_invalid(candles[row])}; a candle needs "
            f"{RULE}{more}. Send repair_input: true to widen high and low to cover open and close",
            [{"field": _name(prefix, field_name, int(r)), "message": describe_invalid(candles[r])} for r in bad[:20]],
        )
    repaired, count = repair_candles(candles)
    notes.append(f"{count} input candle(s) repaired: high and low widened to cover open and close ({RULE})")
    return repaired, count


def _seed_note(seed: int | None, notes: list[str]) -> None:
    if seed is not None and seed >= 2**SEED_BITS:
        notes.append(
            f"seed {seed} is 2^53 or more: JavaScript and jq read it as {float(seed):.0f}, another seed; "
            "keep seeds below 2^53 (drawn seeds always are)"
        )


def _check_bands(prefix: tuple, quantiles: list[float] | None, sample_count: int) -> None:
    if quantiles and sample_count < 2:
        raise InvalidRequest(
            f"{_name(prefix, 'quantiles')}: quantile bands are taken over sample paths and sample_count is "
            f"{sample_count}; send sample_count of 2 or more (e.g. 20) with quantiles"
        )


def _pad_one_row(candles: np.ndarray, index: pd.DatetimeIndex, future: pd.DatetimeIndex):
    """The model needs two rows; a single candle is read as a flat history (the row, one period earlier)."""
    if len(candles) != 1:
        return candles, index
    earlier = index[0] - (future[0] - index[0])
    return np.repeat(candles, 2, axis=0), pd.DatetimeIndex([earlier, index[0]])


def new_series(
    request: SingleRequest, settings: Settings, prefix: tuple, sampling: Sampling | None = None
) -> PreparedSeries:
    """``sampling``: settings decided elsewhere (a backtest's or calibrated predict's windows sample as the
    request they come from); by default the request's own (``band_defaults.sampling``)."""
    candles = candles_array(request.data, prefix, "data")
    pred_len = request.pred_len if request.pred_len is not None else settings.default_pred_len
    _check_limits(prefix, "data", len(candles), pred_len, request.sample_count, settings)
    _check_bands(prefix, request.quantiles, request.sample_count)
    notes: list[str] = []
    candles, repaired = _valid_input(candles, request.repair_input, prefix, "data", notes)
    _seed_note(request.seed, notes)
    if len(candles) == 1:
        notes.append(
            "data: 1 row: the model needs 2, so the row is read as a flat history (itself one period earlier) and "
            "the forecast says little; send 2 or more rows (the Python API refuses fewer than 2)"
        )
    if request.window == "rolling":
        notes.append(
            "window: rolling: where the rows plus pred_len outgrow the model's context (GET /v1/models: max_context), "
            "the oldest keys/values are dropped instead of the window being recomputed (faster; not the "
            "reference's numbers from there on)"
        )
    if request.timestamps is not None:
        if len(request.timestamps) != len(candles):
            raise InvalidRequest(
                f"{_name(prefix, 'timestamps')}: {len(request.timestamps)} timestamps for {len(candles)} rows "
                "(one per row)"
            )
        index = timestamp_index(request.timestamps, _name(prefix, "timestamps"))
        with _calendar_errors(prefix):
            future = future_timestamps(
                index, pred_len, request.freq, request.calendar, default_freq=settings.default_freq
            )
    else:
        if request.calendar is not None:
            raise InvalidRequest(f"{_name(prefix, 'calendar')}: an exchange calendar needs the rows' timestamps")
        rows = max(len(candles), 2)
        with _calendar_errors(prefix):
            index, future = synthetic_timestamps(rows, pred_len, request.freq or settings.default_freq)
        if len(candles) == 1:
            candles = np.repeat(candles, 2, axis=0)
    with _calendar_errors(prefix):
        candles, index = _pad_one_row(candles, index, future)
    sampling = sampling or band_defaults.sampling(request)  # the one rule: band defaults where bands are asked
    series = SeriesInput(
        candles=candles,
        timestamps=index,
        future_timestamps=future,
        temperature=sampling.temperature,
        top_k=sampling.top_k,
        top_p=sampling.top_p,
        sample_count=sampling.sample_count,
        seed=sampling.seed,
        clean=True,
        window=request.window,
    )
    return PreparedSeries(
        series,
        len(request.data),
        request.quantiles,
        request.timestamps is not None,
        None,
        notes,
        repaired,
        model=request.model,
        return_paths=request.return_paths,
        sampling=sampling,
    )


def legacy_series(request: LegacySingleRequest, settings: Settings, prefix: tuple) -> PreparedSeries:
    candles = candles_array(request.candles, prefix, "candles")
    overrides = request.overrides or Overrides()
    given = len(request.prediction_timestamps)
    pred_len = overrides.pred_len if overrides.pred_len is not None else given
    if pred_len != given:
        raise InvalidRequest(
            f"{_name(prefix, 'overrides', 'pred_len')}: {pred_len} does not match the {given} prediction_timestamps"
        )
    sampling = band_defaults.legacy_sampling(overrides)
    sample_count = sampling.sample_count
    notes: list[str] = []
    candles, repaired = _valid_input(candles, bool(overrides.repair_input), prefix, "candles", notes)
    _seed_note(overrides.seed, notes)
    _check_limits(
        prefix,
        "candles",
        len(candles),
        pred_len,
        sample_count,
        settings,
        "prediction_timestamps",
        "overrides.sample_count",
    )
    if len(request.timestamps) != len(candles):
        raise InvalidRequest(
            f"{_name(prefix, 'timestamps')}: {len(request.timestamps)} timestamps for {len(candles)} candles "
            "(one per candle)"
        )
    index = timestamp_index(request.timestamps, _name(prefix, "timestamps"))
    future = timestamp_index(request.prediction_timestamps, _name(prefix, "prediction_timestamps"))
    try:
        after = bool(future[0] > index[-1])
    except TypeError:
        raise InvalidRequest(
            f"{_name(prefix, 'prediction_timestamps')}: all timestamps must have a time zone, or none"
        ) from None
    if not after:
        raise InvalidRequest(
            f"{_name(prefix, 'prediction_timestamps', 0)}: must be after the last timestamp {index[-1]}"
        )
    with _calendar_errors(prefix):
        candles, index = _pad_one_row(candles, index, future)
    series = SeriesInput(
        candles=candles,
        timestamps=index,
        future_timestamps=future,
        temperature=sampling.temperature,
        top_k=sampling.top_k,
        top_p=sampling.top_p,
        sample_count=sample_count,
        seed=sampling.seed,
        clean=True,
    )
    return PreparedSeries(
        series,
        len(request.candles),
        None,
        True,
        request.series_id,
        notes,
        repaired,
        model=request.model,
        return_paths=bool(overrides.return_paths),
        sampling=sampling,
    )


def note_sliding(items: Sequence[PreparedSeries], settings: Settings) -> None:
    """A forecast whose window slides (rows + pred_len past its model's max_context, window exact) is
    told so: what it costs and the two ways out (``model.decoding.defaults.sliding_note``)."""
    contexts = model_contexts(settings)
    for item in items:
        s = item.series
        if s.window == "exact":
            note = sliding_note(len(s.candles), s.pred_len, contexts.get(item.model, settings.max_context))
            if note:
                item.notes.append(note)
