"""Forecast quality on held-out candles: a Kronos checkpoint against naive baselines, plus tokenizer reconstruction.

For every series, the last ``--val-fraction`` of the rows (by time) is held out, as ``kronos-train``
holds it out. Forecast origins t lie in that part; each forecast sees the ``--lookback`` candles
before t (history, which may reach into the training part) and is scored on the close at t + h - 1,
the h-step-ahead close, for h in ``--horizons``:

- MAE, as a percentage of the last known close (so that series of different prices pool);
- directional accuracy: the sign of (forecast close - last close) against the actual sign
  (moves of exactly zero are skipped; the last-value baseline predicts no move, so it has none);
- coverage of the 10-90% band: how often the actual close falls inside it (80% is calibrated).
  Kronos's band comes from its sample paths; each baseline's from the empirical h-step log
  returns of the same lookback window (centred on zero for the drift baseline).

Baselines: last value (the close at t - 1) and drift (the straight line through the first and
last close of the lookback window, extended h steps). Run::

    python benchmarks/forecast_quality.py                       # the bundled model on the backtesting data
    python benchmarks/forecast_quality.py --model runs/mine a.csv b.csv --json quality.json
    python benchmarks/forecast_quality.py --heldout             # held-out instruments (benchmarks/heldout.py)
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
from model.bundled import bundled_model_path  # noqa: E402
from model.training.data import CandleSeries, backtesting_csv_paths, load_csv, normalize_window  # noqa: E402
from model.training.losses import tokenizer_losses  # noqa: E402

CLOSE = 3
BAND = (0.1, 0.9)


@dataclass
class Scores:
    """Per-origin errors for one (series, horizon), pooled later across series."""

    abs_pct: dict[str, list[float]] = field(default_factory=lambda: {"kronos": [], "last": [], "drift": []})
    direction: dict[str, list[bool]] = field(default_factory=lambda: {"kronos": [], "drift": []})
    covered: dict[str, list[bool]] = field(default_factory=lambda: {"kronos": [], "last": [], "drift": []})

    def extend(self, other: Scores) -> None:
        for part in ("abs_pct", "direction", "covered"):
            mine, theirs = getattr(self, part), getattr(other, part)
            for k in mine:
                mine[k].extend(theirs[k])

    def row(self) -> dict[str, float]:
        out = {"origins": len(self.abs_pct["kronos"])}
        out.update({f"mae_pct_{k}": float(np.mean(v)) for k, v in self.abs_pct.items()})
        out.update({f"dir_acc_{k}": float(np.mean(v)) if v else math.nan for k, v in self.direction.items()})
        out.update({f"coverage_{k}": float(np.mean(v)) for k, v in self.covered.items()})
        return out


def origins_for(n: int, first: int, horizon: int, max_origins: int) -> range:
    last = n - horizon  # the last origin whose h-th candle exists
    if last < first:
        return range(0)
    stride = max(1, math.ceil((last - first + 1) / max_origins))
    return range(first, last + 1, stride)


def baseline_forecasts(closes: np.ndarray, horizon: int) -> dict[str, tuple[float, float, float]]:
    """(point, band low, band high) of the last-value and drift baselines from a lookback of closes."""
    last = closes[-1]
    slope = (closes[-1] - closes[0]) / max(len(closes) - 1, 1)
    log_moves = np.log(closes[horizon:] / closes[:-horizon]) if len(closes) > horizon else np.zeros(1)
    low, high = np.quantile(log_moves, BAND)
    centred_low, centred_high = np.quantile(log_moves - log_moves.mean(), BAND)
    drift = last + horizon * slope
    return {
        "last": (last, last * math.exp(low), last * math.exp(high)),
        "drift": (drift, drift * math.exp(centred_low), drift * math.exp(centred_high)),
    }


def score_series(
    predictor: KronosPredictor, s: CandleSeries, horizon: int, args: argparse.Namespace
) -> Scores:
    scores = Scores()
    first = s.split(args.val_fraction)
    origins = list(origins_for(len(s), first, horizon, args.max_origins))
    for chunk_start in range(0, len(origins), args.chunk):
        chunk = origins[chunk_start : chunk_start + args.chunk]
        inputs = []
        for t in chunk:
            lo = max(0, t - args.lookback)
            inputs.append(
                SeriesInput(
                    candles=s.candles[lo:t],
                    timestamps=s.timestamps[lo:t],
                    future_timestamps=s.timestamps[t : t + horizon],
                    temperature=args.temperature,
                    top_p=args.top_p,
                    sample_count=args.samples,
                    seed=args.seed + t,
                )
            )
        forecasts = predictor.forecast(inputs)
        for t, forecast in zip(chunk, forecasts):
            lo = max(0, t - args.lookback)
            last = float(s.candles[t - 1, CLOSE])
            actual = float(s.candles[t + horizon - 1, CLOSE])
            paths = forecast.samples[:, horizon - 1, CLOSE]
            points = {"kronos": (float(forecast.mean[horizon - 1, CLOSE]), *np.quantile(paths, BAND))}
            points.update(baseline_forecasts(s.candles[lo:t, CLOSE].astype(np.float64), horizon))
            for name, (point, band_lo, band_hi) in points.items():
                scores.abs_pct[name].append(100 * abs(point - actual) / abs(last))
                scores.covered[name].append(bool(band_lo <= actual <= band_hi))
                if name in scores.direction and actual != last:
                    scores.direction[name].append(bool(np.sign(point - last) == np.sign(actual - last)))
    return scores


@torch.no_grad()
def reconstruction(tokenizer: KronosTokenizer, s: CandleSeries, args: argparse.Namespace) -> dict[str, float]:
    """Tokenizer round trip on the held-out rows, each chunk normalized with the lookback before it.

    MSE of all six normalized features from the full code and from the coarse (s1-only) code, and
    the close's absolute error in % of the close after de-normalization.
    """
    first, chunk = s.split(args.val_fraction), max(args.horizons)
    sums = {"mse_full": 0.0, "mse_coarse": 0.0, "close_abs_pct": 0.0}
    rows = 0
    for start in range(first, len(s), chunk):
        lo, stop = max(0, start - args.lookback), min(start + chunk, len(s))
        raw = s.candles[lo:stop]
        x = torch.from_numpy(normalize_window(raw, start - lo, 5.0))[None]
        mask = torch.zeros(1, stop - lo, dtype=torch.bool)
        mask[0, start - lo :] = True
        losses = tokenizer_losses(tokenizer, x, mask)
        s1, s2 = tokenizer.encode(x)
        decoded = tokenizer.decode(s1, s2)[0, start - lo :, CLOSE].numpy()
        context = raw[: start - lo, CLOSE]
        close = decoded * (context.std() + 1e-5) + context.mean()
        actual = raw[start - lo :, CLOSE]
        n = stop - start
        sums["mse_full"] += float(losses.recon_full) * n
        sums["mse_coarse"] += float(losses.recon_coarse) * n
        sums["close_abs_pct"] += float(np.sum(100 * np.abs(close - actual) / np.abs(actual)))
        rows += n
    return {k: v / rows for k, v in sums.items()} | {"rows": rows}


def _pct(v: float) -> str:
    return "—" if math.isnan(v) else f"{100 * v:.1f}%"


def markdown(results: dict) -> str:
    lines = [
        "| series | h | origins | MAE % kronos | MAE % last | MAE % drift | dir. acc. kronos | dir. acc. drift "
        "| 10-90% cov. kronos | cov. last | cov. drift |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for h, per_series in results["forecast"].items():
        for name, r in per_series.items():
            lines.append(
                f"| {name} | {h} | {r['origins']} | {r['mae_pct_kronos']:.2f} | {r['mae_pct_last']:.2f} | "
                f"{r['mae_pct_drift']:.2f} | {_pct(r['dir_acc_kronos'])} | {_pct(r['dir_acc_drift'])} | "
                f"{_pct(r['coverage_kronos'])} | {_pct(r['coverage_last'])} | {_pct(r['coverage_drift'])} |"
            )
    lines += [
        "",
        "| series | held-out rows | MSE full code (normalized) | MSE coarse s1 code (normalized) | close error % |",
        "|---|---|---|---|---|",
    ]
    for name, r in results["reconstruction"].items():
        lines.append(
            f"| {name} | {r['rows']} | {r['mse_full']:.4f} | {r['mse_coarse']:.4f} | {r['close_abs_pct']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--heldout" in argv:  # held-out instruments (the model card's table): benchmarks/heldout.py
        from heldout import main as heldout_main

        return heldout_main([a for a in argv if a != "--heldout"])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csv", nargs="*", help="OHLCV CSV files (default: backtesting's GOOG, EURUSD, BTCUSD)")
    parser.add_argument("--model", default=str(bundled_model_path()), help="predictor folder (default: bundled)")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder (default: MODEL/tokenizer)")
    parser.add_argument("--val-fraction", type=float, default=0.15)
    parser.add_argument("--horizons", type=int, nargs="+", default=[1, 5, 20])
    parser.add_argument("--lookback", type=int, default=128)
    parser.add_argument("--samples", type=int, default=20, help="sample paths per forecast")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--max-origins", type=int, default=100, help="per series and horizon (evenly spaced)")
    parser.add_argument("--chunk", type=int, default=25, help="forecasts per batch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)

    paths = args.csv or backtesting_csv_paths()
    series = [load_csv(p) for p in paths]
    model = Kronos.from_pretrained(args.model)
    tokenizer = KronosTokenizer.from_pretrained(args.tokenizer or Path(args.model) / "tokenizer")
    predictor = KronosPredictor(model, tokenizer, device="cpu", max_context=args.lookback + max(args.horizons))
    began = time.perf_counter()
    results: dict = {"settings": {k: v for k, v in vars(args).items() if k not in ("csv", "json")}, "forecast": {}}
    for h in args.horizons:
        pooled, per_series = Scores(), {}
        for s in series:
            scores = score_series(predictor, s, h, args)
            per_series[Path(s.name).stem] = scores.row()
            pooled.extend(scores)
        per_series["all"] = pooled.row()
        results["forecast"][str(h)] = per_series
    results["reconstruction"] = {Path(s.name).stem: reconstruction(tokenizer, s, args) for s in series}
    results["seconds"] = time.perf_counter() - began
    print(markdown(results))
    print(f"\n({results['seconds']:.0f} s; lookback {args.lookback}, {args.samples} paths, T {args.temperature}, "
          f"top_p {args.top_p})")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
