"""What the calls return: a forecast and a backtest as DataFrames, with the server's JSON kept in ``raw``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from .frames import SeriesShape, candle_frame, parse_stamps

SCALAR_METRICS = ("mae", "rmse", "mape", "direction_accuracy", "crps", "brier")


@dataclass
class ForecastResult:
    """One series' forecast.

    - ``frame``: the mean forecast, indexed by the forecast timestamps (``step`` without input timestamps),
      with the input's candle columns under the input's names;
    - ``bands``: quantiles of close, one column per level (``bands[0.1]``), same index (None without
      ``quantiles``); ``quantiles``: per-column quantile frames by level (each column on its own);
    - ``paths``: the sample paths (``return_paths=True``): the candle columns indexed by ``(path, timestamp)``;
    - ``p_up``: per step, the share of paths closing above the last input close (None with one path);
    - ``seed``: send it back to get the same forecast; ``model``: the served model's name;
      ``model_version``, ``device``, ``notes``, ``elapsed_ms``; ``raw``: the answer as JSON.
    """

    frame: pd.DataFrame
    bands: pd.DataFrame | None
    quantiles: dict[float, pd.DataFrame]
    paths: pd.DataFrame | None
    p_up: pd.Series | None
    seed: int
    model: str | None
    model_version: str | None
    device: str | None
    notes: list[str]
    repaired_candles: int
    elapsed_ms: float | None
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_body(
        cls, body: dict[str, Any], shape: SeriesShape, served: dict[str, Any] | None = None
    ) -> ForecastResult:
        served = served if served is not None else body
        frame = candle_frame(body["forecast"], shape)
        bands = None
        if body.get("close_quantiles"):
            bands = pd.DataFrame({float(b["level"]): b["close"] for b in body["close_quantiles"]}, index=frame.index)
            bands.columns.name = "level"
        quantiles = {float(q["level"]): candle_frame(q["forecast"], shape) for q in body.get("quantiles") or []}
        p_up = pd.Series(body["p_up"], index=frame.index, name="p_up") if body.get("p_up") is not None else None
        return cls(
            frame=frame,
            bands=bands,
            quantiles=quantiles,
            paths=paths_frame(body.get("paths"), frame.index, shape),
            p_up=p_up,
            seed=int(body["seed"]),
            model=body.get("model_name") or served.get("model_name"),
            model_version=served.get("model"),
            device=served.get("device"),
            notes=list(body.get("notes") or []),
            repaired_candles=int(body.get("repaired_candles") or 0),
            elapsed_ms=served.get("elapsed_ms"),
            raw=body,
        )


def paths_frame(paths: list[list[dict[str, Any]]] | None, index: pd.Index, shape: SeriesShape) -> pd.DataFrame | None:
    """The sample paths (``return_paths``: sample_count lists of pred_len candles, as ``forecast``'s rows) as
    one frame indexed by ``(path, <the forecast's index>)``, in the input's column names."""
    if not paths:
        return None
    frames = [
        pd.DataFrame(
            {name: [r.get(c) for r in path] for c, name in shape.columns.items()}, index=index, dtype="float64"
        )
        for path in paths
    ]
    return pd.concat(frames, keys=range(len(frames)), names=["path", index.name])


@dataclass
class BacktestResult:
    """A backtest: the model's scores against the naive baselines on the caller's own history.

    - ``metrics``: the model's headline scores (mae, rmse, mape, direction_accuracy, crps, brier) as a Series;
    - ``baselines``: the same scores for the model and each baseline (rows ``model``, ``last_value``,
      ``drift``), side by side;
    - ``skill``: per baseline, 1 - model / baseline for mae and crps (above 0: the model is better);
    - ``windows``: one row per window (origin, timestamp, seed, mae), newest first;
    - ``per_horizon``, ``coverage`` (the bands' nominal vs observed), ``reliability``: DataFrames;
      ``raw``: the answer as JSON.
    """

    metrics: pd.Series
    baselines: pd.DataFrame
    skill: pd.DataFrame
    windows: pd.DataFrame
    per_horizon: pd.DataFrame
    coverage: pd.DataFrame
    reliability: pd.DataFrame
    pred_len: int
    sample_count: int
    step: int
    lookback: int
    model: str | None
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_body(cls, body: dict[str, Any], shape: SeriesShape | None = None) -> BacktestResult:
        metrics = body["metrics"]
        rows = {"model": metrics, **body["baselines"]}
        scores = pd.DataFrame({name: {k: m.get(k) for k in SCALAR_METRICS} for name, m in rows.items()}).T
        skill = pd.DataFrame({name: m["skill"] for name, m in body["baselines"].items()}).T
        per_horizon = pd.DataFrame(
            [{k: v for k, v in h.items() if k != "coverage"} for h in metrics.get("per_horizon", [])]
        )
        if not per_horizon.empty:
            per_horizon = per_horizon.set_index("step")
        windows = pd.DataFrame(body["windows"], columns=["origin", "timestamp", "seed", "mae"])
        if shape is not None and shape.has_timestamps and windows["timestamp"].notna().all() and len(windows):
            windows["timestamp"] = parse_stamps(windows["timestamp"].tolist(), shape)
        return cls(
            metrics=pd.Series({k: metrics.get(k) for k in SCALAR_METRICS}, name="model", dtype="float64"),
            baselines=scores.astype("float64"),
            skill=skill.astype("float64"),
            windows=windows,
            per_horizon=per_horizon,
            coverage=pd.DataFrame(metrics.get("coverage", [])),
            reliability=pd.DataFrame(metrics.get("reliability", [])),
            pred_len=body["pred_len"],
            sample_count=body["sample_count"],
            step=body["step"],
            lookback=body["lookback"],
            model=body.get("model_name"),
            raw=body,
        )
