"""Is the forecast any good? A Kronos checkpoint against naive baselines on real candles, with raw and
calibrated band coverage: the same windows and the same metric code (``model/evaluation/``) as
``POST /v1/backtest``.

For every series, window j (j = 0 … windows - 1) has origin ``n - pred_len - j * step``; it forecasts
from the ``lookback`` rows before the origin (with their real timestamps, and the real timestamps of
the rows it forecasts) and is scored on the closes of rows ``[origin, origin + pred_len)``. Window j
uses seed ``seed + j``. Baselines: last value (persistence) and drift, each with a historical-
volatility band. The 10-90 band is calibrated split-conformally from earlier windows only.

    python benchmarks/forecast_quality.py                                  # bundled model, GOOG and EURUSD
    python benchmarks/forecast_quality.py --model runs/mine --lookback 256 --pred-len 20 --paths 20 \\
        --windows 15 a.csv b.csv --json quality.json

Series are CSV files (timestamp column + open, high, low, close[, volume[, amount]]) or the names of
the ``backtesting`` package's candles (GOOG daily, EURUSD hourly, BTCUSD monthly). ``--reconstruction``
adds the tokenizer's round-trip error on the last ``--val-fraction`` of each series. ``--heldout`` runs
the kronos-demo model card's table on the instruments it never saw instead (benchmarks/heldout.py)::

    python benchmarks/forecast_quality.py --heldout --temperature 1.1 --top-p 0.95
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model import Kronos, KronosPredictor, KronosTokenizer, SeriesInput  # noqa: E402
from model.checkpoints.bundled import bundled_model_path  # noqa: E402
from model.evaluation import backtest_report, backtest_windows, symmetric_pairs  # noqa: E402
from model.training.data import CandleSeries, backtesting_csv_paths, load_csv, normalize_window  # noqa: E402
from model.training.losses import tokenizer_losses  # noqa: E402

CLOSE = 3
BACKTESTING_NAMES = ("GOOG", "EURUSD", "BTCUSD")


def load_series(spec: str) -> CandleSeries:
    if spec.upper() in BACKTESTING_NAMES:
        (path,) = backtesting_csv_paths([spec.upper()])
        return load_csv(path)
    return load_csv(spec)


def backtest_series(predictor: KronosPredictor, series: CandleSeries, args: argparse.Namespace) -> dict:
    """The backtest report (as /v1/backtest computes it) of one series."""
    windows = backtest_windows(len(series), args.pred_len, args.windows, args.step or args.pred_len, args.lookback)
    inputs = [
        SeriesInput(
            candles=series.candles[w.start : w.origin],
            timestamps=series.timestamps[w.start : w.origin],
            future_timestamps=series.timestamps[w.origin : w.origin + args.pred_len],
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            sample_count=args.paths,
            seed=args.seed + w.index,
        )
        for w in windows
    ]
    forecasts = []
    for first in range(0, len(inputs), args.chunk):
        forecasts += predictor.forecast(inputs[first : first + args.chunk])
    closes = series.candles[:, CLOSE].astype(np.float64)
    report = backtest_report(
        np.stack([f.samples[:, :, CLOSE] for f in forecasts]),
        np.stack([closes[w.origin : w.origin + args.pred_len] for w in windows]),
        [closes[w.start : w.origin] for w in windows],
        [w.origin for w in windows],
        args.quantiles,
        calibrate=True,
        point=np.stack([f.mean[:, CLOSE] for f in forecasts]),
    )
    report["scored_rows"] = len(series) - windows[-1].origin
    report["rows"] = len(series)
    del report["window_mae"]
    return report


@torch.no_grad()
def reconstruction(tokenizer: KronosTokenizer, s: CandleSeries, args: argparse.Namespace) -> dict[str, float]:
    """Tokenizer round trip on the held-out rows (the last ``--val-fraction``), in chunks of pred_len,
    each normalized with the lookback before it: MSE of the six normalized features from the full code
    and from the coarse (s1-only) code, and the close's absolute error in % after de-normalization."""
    first, chunk = s.split(args.val_fraction), args.pred_len
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


def _num(value: float | None, digits: int = 3) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}g}"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _band(metrics: dict, pair: tuple[float, float], key: str) -> float | None:
    for entry in metrics["coverage"]:
        if (entry["lower"], entry["upper"]) == pair:
            return entry.get(key)
    return None


def markdown(results: dict, pair: tuple[float, float]) -> str:
    band = f"{round(100 * pair[0])}-{round(100 * pair[1])}"
    lines = [
        f"| series | forecast | MAE | MAPE | dir. acc. | CRPS | {band} cov. | calibrated | Brier | skill MAE "
        "| skill CRPS |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, report in results["series"].items():
        rows = [("model", report["metrics"])] + list(report["baselines"].items())
        for forecaster, m in rows:
            calibrated = _band(m, pair, "observed_calibrated")
            skill = m.get("skill", {})
            lines.append(
                f"| {name} | {forecaster} | {_num(m['mae'])} | {_num(m['mape'])}% | {_pct(m['direction_accuracy'])} "
                f"| {_num(m['crps'])} | {_pct(_band(m, pair, 'observed'))} | "
                f"{'—' if forecaster != 'model' else _pct(calibrated)} | {_num(m['brier'])} | "
                f"{_num(skill.get('mae'), 2) if skill else '—'} | {_num(skill.get('crps'), 2) if skill else '—'} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--heldout" in argv:  # held-out instruments (the model card's table): benchmarks/heldout.py
        from heldout import main as heldout_main

        return heldout_main([a for a in argv if a != "--heldout"])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("series", nargs="*", default=["GOOG", "EURUSD"], help="CSV files or GOOG, EURUSD, BTCUSD")
    parser.add_argument("--model", default=str(bundled_model_path()), help="predictor folder (default: bundled)")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder (default: MODEL/tokenizer)")
    parser.add_argument("--lookback", type=int, default=256, help="rows of context per window")
    parser.add_argument("--pred-len", type=int, default=10, help="candles forecast per window")
    parser.add_argument("--windows", type=int, default=30, help="windows per series, newest first")
    parser.add_argument("--step", type=int, default=None, help="rows between origins (default pred-len)")
    parser.add_argument("--paths", type=int, default=20, help="sample paths per window")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--top-p", type=float, default=0.9, help="the service's default; 1.0 keeps the full spread")
    parser.add_argument("--quantiles", type=float, nargs="+", default=[0.1, 0.5, 0.9])
    parser.add_argument("--seed", type=int, default=0, help="window j uses seed + j")
    parser.add_argument("--chunk", type=int, default=64, help="windows per model batch")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None, help="also write every metric here")
    parser.add_argument("--reconstruction", action="store_true", help="also the tokenizer's round trip")
    parser.add_argument("--val-fraction", type=float, default=0.15, help="held-out rows for --reconstruction")
    args = parser.parse_args(argv)
    pairs = symmetric_pairs(args.quantiles)
    if not pairs:
        parser.error("--quantiles needs a symmetric pair, e.g. 0.1 0.9")

    torch.manual_seed(args.seed)
    model = Kronos.from_pretrained(args.model)
    tokenizer = KronosTokenizer.from_pretrained(args.tokenizer or Path(args.model) / "tokenizer")
    predictor = KronosPredictor(model, tokenizer, device=args.device, max_context=max(512, args.lookback))
    began = time.perf_counter()
    settings = {k: v for k, v in vars(args).items() if k not in ("series", "json")}
    results: dict = {"settings": settings, "series": {}}
    loaded = [load_series(spec) for spec in args.series]
    for series in loaded:
        results["series"][Path(series.name).stem] = backtest_series(predictor, series, args)
    if args.reconstruction:
        results["reconstruction"] = {Path(s.name).stem: reconstruction(tokenizer, s, args) for s in loaded}
    results["seconds"] = time.perf_counter() - began
    widest = pairs[-1] if (0.1, 0.9) not in pairs else (0.1, 0.9)
    print(markdown(results, widest))
    scored = ", ".join(f"{name}: last {r['scored_rows']} of {r['rows']} rows" for name, r in results["series"].items())
    print(
        f"\n({results['seconds']:.0f} s; {args.windows} windows of {args.pred_len}, lookback {args.lookback}, "
        f"{args.paths} paths, T {args.temperature}, top_p {args.top_p}; scored on {scored}; model {args.model})"
    )
    if args.reconstruction:
        print("\n| series | held-out rows | MSE full code (normalized) | MSE coarse s1 code | close error % |")
        print("|---|---|---|---|---|")
        for name, r in results["reconstruction"].items():
            print(f"| {name} | {r['rows']} | {r['mse_full']:.4f} | {r['mse_coarse']:.4f} | {r['close_abs_pct']:.3f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
