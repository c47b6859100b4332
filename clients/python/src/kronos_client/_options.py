"""The keyword options of the calls, typed once for both clients (``**options: Unpack[ForecastOptions]``)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, TypedDict


class SamplingOptions(TypedDict, total=False):
    """What every forecast takes (the predict request's fields; the server's defaults when left out)."""

    sample_count: int  # sample paths; the forecast is their mean
    quantiles: Sequence[float]  # levels of the close bands, e.g. (0.1, 0.5, 0.9); needs sample_count >= 2
    seed: int  # the same seed gives the same forecast (ForecastResult.seed is the one used)
    T: float  # sampling temperature
    top_p: float
    top_k: int
    calendar: str  # exchange calendar (XNYS, XLON, ...): exact sessions and holidays; needs timestamps
    freq: str  # pandas frequency continued from the last timestamp (5min, h, D, B)
    window: Literal["exact", "rolling"]
    repair_input: bool  # widen invalid input candles' high/low instead of a 422 naming the row
    timestamp_column: str  # the column holding the times (default: the DatetimeIndex, or timestamps/date/...)


class ForecastOptions(SamplingOptions, total=False):
    model: str  # a model of GET /v1/models (default: the server's default)
    return_paths: bool  # also return every sample path (ForecastResult.paths)


class BacktestOptions(SamplingOptions, total=False):
    model: str
    calibrate: bool  # also score bands calibrated on each window's earlier windows


class ManyOptions(SamplingOptions, total=False):
    id_column: str  # the long table's id column (default "id")
    model: str
    via: Literal["auto", "batch", "job"]  # auto: a job above job_threshold series when the server has /v1/jobs
    job_threshold: int
    on_error: Literal["collect", "raise"]  # collect: refused series in attrs["errors"], the rest forecast
    progress: bool  # a progress bar of series done


class JobOptions(SamplingOptions, total=False):
    kind: Literal["forecast", "backtest"]
    pred_len: int
    id_column: str
    model: str
    upload: Literal["jsonl", "csv", "parquet"]  # send a file (multipart) instead of a JSON body
    windows: int  # backtest jobs: the backtest's fields
    step: int
    lookback: int
    calibrate: bool


def check_options(call: str, given: Mapping[str, Any], *allowed: Iterable[str]) -> None:
    """TypeError for an option the call does not take, before anything is sent (``sample_cont`` would be a
    422 from the server anyway; this says it sooner, with the name meant)."""
    names = set().union(*allowed)
    for name in given:
        if name not in names:
            close = difflib.get_close_matches(name, sorted(names), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TypeError(f"{call}() got an unexpected keyword argument {name!r}{hint}")
