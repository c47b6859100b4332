"""Forecast quality on held-out *instruments*: markets a checkpoint never saw, against naive baselines.

The bundled kronos-demo's model card table comes from here (``python benchmarks/forecast_quality.py
--heldout`` runs this with the same arguments). Default series: the held-out instruments of
``model/training/corpus.py`` (SP500 and NASDAQ daily candles from the ``arch`` package), none of
whose candles were trained on; or give OHLCV CSV files.

Per series, ``--windows`` forecast origins t are spread evenly over the whole series; each forecast
sees the ``--lookback`` candles before t and forecasts ``--pred-len`` candles with ``--samples``
sample paths. Scored on the close at every horizon h = 1..pred_len, in % of the last known close:

- MAE of the forecast (the mean of the paths, what the service returns) and of the baselines:
  **last** value (the close at t - 1) and **drift** (the line through the first and last close
  of the lookback window, extended h steps); "MAE / last" is the mean over horizons of the
  per-horizon ratio (the issue's "at every horizon on average"), with the worst horizon beside it;
- direction accuracy: sign of (forecast - last close) against the actual sign (zero moves skipped);
- CRPS of the sample paths (the ensemble estimator mean|X - y| - mean|X - X'| / 2), and of the
  baselines' ensembles: the last close (or the drift line) moved by every empirical h-step log
  return of the lookback window (centred on zero for drift);
- 10-90% coverage: how often the actual close lies in the 10%-90% quantile band (80% is calibrated).

``--grid T:TOP_P ...`` scores several sampling settings on the same origins (the table the
service's defaults for ``quantiles`` requests follow). ``--window exact rolling`` with a
``--max-context`` below lookback + pred_len scores the reference's sliding window against the rolling
cache (``SeriesInput.window``) on the same origins and seeds. ``--precision fp32 bf16 int8`` scores
reduced precision (``KronosPredictor(precision=)``) on the same origins and seeds, and ``--seeds 0 1000``
scores more seeds, so that fp32's own seed-to-seed spread stands beside the precisions' differences. Run::

    python benchmarks/forecast_quality.py --heldout                          # the model card's table
    python benchmarks/heldout.py --grid 1.0:1.0 1.0:0.9 1.3:1.0 1.6:1.0      # band calibration
    python benchmarks/heldout.py --max-context 128 --window exact rolling    # what rolling costs in quality
    python benchmarks/heldout.py --precision fp32 bf16 int8 --seeds 0 1000     # what bf16 / int8 cost
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model import Kronos, KronosPredictor, KronosTokenizer, SeriesInput  # noqa: E402
from model.checkpoints.bundled import bundled_model_path  # noqa: E402
from model.evaluation import crps_from_samples, drift_forecast, last_value_forecast  # noqa: E402
from model.training.corpus import heldout_series  # noqa: E402
from model.training.data import CandleSeries, load_csv  # noqa: E402

CLOSE = 3
BAND = (0.1, 0.9)
METHODS = ("kronos", "last", "drift")


def crps_ensemble(members: np.ndarray, actual: float) -> float:
    """CRPS of an ensemble (m,) for one outcome, by the service's metric code (model/evaluation/)."""
    return float(crps_from_samples(np.asarray(members, dtype=np.float64)[:, None], np.array([actual]))[0])


def baseline_ensembles(closes: np.ndarray, horizon: int) -> dict[str, tuple[float, np.ndarray]]:
    """(point, ensemble) of the last-value and drift baselines at one horizon, from a lookback of closes."""
    last = last_value_forecast(closes, horizon)[-1]
    drift = drift_forecast(closes, horizon)[-1]  # the same baselines as /v1/backtest (model/evaluation/)
    # The ensembles: the lookback's own h-step moves around each point (an empirical band; /v1/backtest's
    # band is the log-normal historical-volatility one).
    moves = np.log(closes[horizon:] / closes[:-horizon]) if len(closes) > horizon else np.zeros(1)
    return {"last": (last, last * np.exp(moves)), "drift": (drift, drift * np.exp(moves - moves.mean()))}


@dataclass
class Tally:
    """Per-horizon lists of scores for one setting, pooled over origins (and series)."""

    pred_len: int
    abs_pct: dict = field(default_factory=dict)
    crps_pct: dict = field(default_factory=dict)
    covered: dict = field(default_factory=dict)
    direction: dict = field(default_factory=dict)

    def __post_init__(self):
        for part in (self.abs_pct, self.crps_pct, self.covered):
            for m in METHODS:
                part[m] = [[] for _ in range(self.pred_len)]
        for m in ("kronos", "drift"):
            self.direction[m] = [[] for _ in range(self.pred_len)]

    def extend(self, other: Tally) -> None:
        for part in ("abs_pct", "crps_pct", "covered", "direction"):
            mine, theirs = getattr(self, part), getattr(other, part)
            for m in mine:
                for h in range(self.pred_len):
                    mine[m][h].extend(theirs[m][h])

    def summary(self) -> dict:
        def per_h(part, m):
            return np.array([np.mean(v) if v else math.nan for v in part[m]])

        mae = {m: per_h(self.abs_pct, m) for m in METHODS}
        ratio = mae["kronos"] / mae["last"]
        out = {"origins": len(self.abs_pct["kronos"][0])}
        for m in METHODS:
            out[f"mae_pct_{m}"] = float(np.mean(mae[m]))
            out[f"crps_pct_{m}"] = float(np.mean(per_h(self.crps_pct, m)))
            out[f"coverage_{m}"] = float(np.mean(per_h(self.covered, m)))
        for m in ("kronos", "drift"):
            out[f"dir_acc_{m}"] = float(np.nanmean(per_h(self.direction, m)))
        out["mae_ratio_last"] = float(np.mean(ratio))
        out["mae_ratio_last_worst_h"] = float(np.max(ratio))
        out["mae_ratio_drift"] = float(np.mean(mae["kronos"] / mae["drift"]))
        out["mae_ratio_last_by_h"] = [float(r) for r in ratio]
        out["coverage_kronos_by_h"] = [float(c) for c in per_h(self.covered, "kronos")]
        return out


def origins(n: int, lookback: int, pred_len: int, windows: int) -> list[int]:
    """Evenly spread forecast origins with a full lookback before and pred_len candles after."""
    first, last = lookback, n - pred_len
    if last < first:
        return []
    return sorted(set(np.linspace(first, last, windows).round().astype(int).tolist()))


def score_series(
    predictor: KronosPredictor,
    s: CandleSeries,
    temperature: float,
    top_p: float,
    args: argparse.Namespace,
    window: str = "exact",
    seed: int = 0,
) -> Tally:
    tally = Tally(args.pred_len)
    ts = origins(len(s), args.lookback, args.pred_len, args.windows)
    for chunk_start in range(0, len(ts), args.chunk):
        chunk = ts[chunk_start : chunk_start + args.chunk]
        inputs = [
            SeriesInput(
                candles=s.candles[t - args.lookback : t],
                timestamps=s.timestamps[t - args.lookback : t],
                future_timestamps=s.timestamps[t : t + args.pred_len],
                temperature=temperature,
                top_p=top_p,
                sample_count=args.samples,
                seed=seed + t,
                window=window,
            )
            for t in chunk
        ]
        for t, forecast in zip(chunk, predictor.forecast(inputs)):
            closes = s.candles[t - args.lookback : t, CLOSE].astype(np.float64)
            last = closes[-1]
            for h in range(1, args.pred_len + 1):
                actual = float(s.candles[t + h - 1, CLOSE])
                paths = forecast.samples[:, h - 1, CLOSE]
                ensembles = {"kronos": (float(forecast.mean[h - 1, CLOSE]), paths)}
                ensembles.update(baseline_ensembles(closes, h))
                for m, (point, members) in ensembles.items():
                    lo, hi = np.quantile(members, BAND)
                    tally.abs_pct[m][h - 1].append(100 * abs(point - actual) / abs(last))
                    tally.crps_pct[m][h - 1].append(100 * crps_ensemble(members, actual) / abs(last))
                    tally.covered[m][h - 1].append(bool(lo <= actual <= hi))
                    if m in tally.direction and actual != last:
                        tally.direction[m][h - 1].append(bool(np.sign(point - last) == np.sign(actual - last)))
    return tally


def evaluate(
    predictor: KronosPredictor,
    series: list[CandleSeries],
    temperature: float,
    top_p: float,
    args,
    window: str = "exact",
    seed: int = 0,
) -> dict:
    pooled, rows = Tally(args.pred_len), {}
    for s in series:
        tally = score_series(predictor, s, temperature, top_p, args, window, seed)
        rows[Path(s.name).stem] = tally.summary()
        pooled.extend(tally)
    rows["all"] = pooled.summary()
    return rows


def _pct(v: float) -> str:
    return "—" if math.isnan(v) else f"{100 * v:.1f}%"


def markdown(rows: dict) -> str:
    lines = [
        "| series | origins | MAE % kronos | MAE % last | MAE % drift | MAE / last (mean over h; worst h) "
        "| dir. acc. kronos | dir. acc. drift | CRPS % kronos | CRPS % last | CRPS % drift "
        "| 10-90% cov. kronos | cov. last | cov. drift |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['origins']} | {r['mae_pct_kronos']:.2f} | {r['mae_pct_last']:.2f} | "
            f"{r['mae_pct_drift']:.2f} | {r['mae_ratio_last']:.3f}; {r['mae_ratio_last_worst_h']:.3f} | "
            f"{_pct(r['dir_acc_kronos'])} | {_pct(r['dir_acc_drift'])} | {r['crps_pct_kronos']:.2f} | "
            f"{r['crps_pct_last']:.2f} | {r['crps_pct_drift']:.2f} | {_pct(r['coverage_kronos'])} | "
            f"{_pct(r['coverage_last'])} | {_pct(r['coverage_drift'])} |"
        )
    return "\n".join(lines)


def _fields(key: str) -> list[str]:
    """T, top_p, window, precision, seed of a grid key ("T:top_p[:window][:precision][:seed N]")."""
    t, p, *rest = key.split(":")
    window = next((x for x in rest if x in ("exact", "rolling")), "exact")
    precision = next((x for x in rest if x in ("fp32", "bf16", "int8")), "fp32")
    seed = next((x.removeprefix("seed ") for x in rest if x.startswith("seed ")), "")
    return [t, p, window, precision, seed]


def grid_markdown(grid: dict) -> str:
    lines = [
        "| T | top_p | window | precision | seed | MAE % kronos | MAE / last | dir. acc. | CRPS % kronos | CRPS % last "
        "| 10-90% cov. kronos | cov. at h=1 | cov. at last h |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, rows in grid.items():
        r = rows["all"]
        t, p, window, precision, seed = _fields(key)
        by_h = r["coverage_kronos_by_h"]
        lines.append(
            f"| {t} | {p} | {window} | {precision} | {seed} | {r['mae_pct_kronos']:.3f} | "
            f"{r['mae_ratio_last']:.3f} | {_pct(r['dir_acc_kronos'])} | {r['crps_pct_kronos']:.3f} | "
            f"{r['crps_pct_last']:.2f} | "
            f"{_pct(r['coverage_kronos'])} | {_pct(by_h[0])} | {_pct(by_h[-1])} |"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csv", nargs="*", help="OHLCV CSV files (default: the corpus's held-out SP500 and NASDAQ)")
    parser.add_argument("--model", default=str(bundled_model_path()), help="predictor folder (default: bundled)")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder (default: MODEL/tokenizer)")
    parser.add_argument("--lookback", type=int, default=256)
    parser.add_argument("--pred-len", type=int, default=20)
    parser.add_argument("--samples", type=int, default=20, help="sample paths per forecast")
    parser.add_argument("--windows", type=int, default=40, help="forecast origins per series (evenly spread)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--grid", nargs="+", default=None, metavar="T:TOP_P", help="score several settings")
    parser.add_argument("--chunk", type=int, default=20, help="forecasts per batch")
    parser.add_argument(
        "--max-context", type=int, default=None, help="the predictor's window (default: lookback + pred_len, no slide)"
    )
    parser.add_argument(
        "--window",
        nargs="+",
        default=["exact"],
        choices=["exact", "rolling"],
        help="exact and/or rolling (same origins)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="several seeds (default: --seed)")
    parser.add_argument(
        "--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16", "int8"], help="arithmetic(s) to score"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 is fastest on a busy CPU)")
    parser.add_argument("--json", default=None, help="also write the results here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    series = [load_csv(p) for p in args.csv] if args.csv else heldout_series()
    model = Kronos.from_pretrained(args.model)
    tokenizer = KronosTokenizer.from_pretrained(args.tokenizer or Path(args.model) / "tokenizer")
    context = args.max_context or args.lookback + args.pred_len
    predictors = {
        precision: KronosPredictor(model, tokenizer, device="cpu", max_context=context, precision=precision)
        for precision in args.precision
    }
    began = time.perf_counter()
    settings = [tuple(map(float, g.split(":"))) for g in args.grid] if args.grid else [(args.temperature, args.top_p)]
    seeds = args.seeds or [args.seed]
    grid, seconds = {}, {}
    for t, p in settings:
        for window in args.window:
            for precision, predictor in predictors.items():
                for seed in seeds:
                    key = f"{t:g}:{p:g}" + ("" if window == "exact" else f":{window}")
                    key += ("" if precision == "fp32" else f":{precision}") + ("" if seeds == [0] else f":seed {seed}")
                    started = time.perf_counter()
                    grid[key] = evaluate(predictor, series, t, p, args, window, seed)
                    seconds[key] = time.perf_counter() - started
                    print(f"{key}: {seconds[key]:.0f} s", file=sys.stderr, flush=True)
    results = {"settings": {k: v for k, v in vars(args).items() if k not in ("csv", "json")}, "grid": grid}
    results["seconds"] = time.perf_counter() - began
    results["seconds_by_setting"] = seconds
    for key, rows in grid.items():
        t, p, window, precision, seed = _fields(key)
        label = f"T {t}, top_p {p}, window {window}" + ("" if precision == "fp32" else f", {precision}")
        print(f"{label}{'' if not seed else f', seed {seed}'} ({seconds[key]:.0f} s):\n{markdown(rows)}\n")
    if len(grid) > 1:
        print(grid_markdown(grid) + "\n")
    names = ", ".join(Path(s.name).stem for s in series)
    print(
        f"({results['seconds']:.0f} s; {names}; max_context {context}; lookback {args.lookback}, "
        f"pred_len {args.pred_len}, "
        f"{args.samples} paths, {args.windows} windows per series, seed {args.seed})"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
