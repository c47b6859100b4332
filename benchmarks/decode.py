"""Recompute (the reference's algorithm) vs our fast decoder, side by side, on a Kronos-small-shaped model.

    python benchmarks/decode.py            # the issue's cases and a no-sliding row (about 7 minutes on 2 cores)
    python benchmarks/decode.py --quick    # smaller shapes, seconds
    python benchmarks/decode.py --precision bf16 int8   # fp32 against reduced precision instead (fast path only)

Weights are random (Kronos-small / Kronos-Tokenizer-base shapes from SPEC); the input is real
EURUSD hourly candles from the `backtesting` package. Each case runs both paths with the same
seed and checks that the forecasts are equal. Peak memory is the largest resident-set growth
seen during the call (sampled every 2 ms).

This machine's speed drifts by 10-30% over minutes (shared memory bandwidth), and the two paths
feel it differently: the recompute path is compute-bound, the fast path's one-token steps are
bound by reading weights. So the headline case (sample_count 1) runs both paths alternately
``--repeats`` times (default 3) and reports the median of each, with every run printed; the
costlier cases run once.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere, installed or not

from model import KronosPredictor, SeriesInput  # noqa: E402
from model.nn.config import PredictorConfig, TokenizerConfig  # noqa: E402
from model.nn.synthetic import KRONOS_SMALL, TOKENIZER_BASE, random_pair  # noqa: E402


def eurusd() -> pd.DataFrame:
    import backtesting.test

    frame = pd.read_csv(Path(backtesting.test.__file__).parent / "EURUSD.csv", index_col=0, parse_dates=True)
    frame.columns = [c.lower() for c in frame.columns]
    return frame


class PeakRSS:
    """Largest growth of this process's resident memory while the block runs."""

    def __enter__(self):
        self.process = psutil.Process()
        self.base = self.peak = self.process.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    def _watch(self):
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.002)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def mib(self) -> float:
        return (self.peak - self.base) / 2**20


def series_from(frame: pd.DataFrame, end: int, lookback: int, pred_len: int, sample_count: int, seed: int):
    window = frame.iloc[end - lookback : end]
    step = window.index[-1] - window.index[-2]
    return SeriesInput(
        candles=window[["open", "high", "low", "close", "volume"]].to_numpy(),
        timestamps=window.index,
        future_timestamps=pd.date_range(window.index[-1] + step, periods=pred_len, freq=step),
        temperature=1.0,
        top_p=0.9,
        sample_count=sample_count,
        seed=seed,
    )


def run(predictor: KronosPredictor, series, fast: bool):
    with PeakRSS() as memory:
        start = time.perf_counter()
        forecasts = predictor.forecast(series, fast=fast)
        seconds = time.perf_counter() - start
    return seconds, memory.mib, forecasts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny shapes, for a smoke run")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs of each path for sample_count 1")
    parser.add_argument(
        "--precision", nargs="+", default=None, choices=["bf16", "int8"], help="time these against fp32 instead"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.precision:
        return precision_main(args)

    if args.quick:
        predictor_config = PredictorConfig(s1_bits=10, s2_bits=10, n_layers=2, d_model=64, n_heads=4, ff_dim=128)
        tokenizer_config = TokenizerConfig(
            d_in=6, d_model=32, n_heads=4, ff_dim=64, n_enc_layers=2, n_dec_layers=2, s1_bits=10, s2_bits=10
        )
        lookback, pred_len, mixed = 100, 20, [(60, 10), (100, 20), (30, 5), (80, 15)]
    else:
        predictor_config, tokenizer_config = KRONOS_SMALL, TOKENIZER_BASE
        lookback, pred_len = 400, 120
        mixed = [(400, 120), (100, 20), (250, 60), (512, 30), (64, 120), (300, 90), (450, 40), (180, 120)]

    model, tokenizer = random_pair(predictor_config, tokenizer_config, seed=0)
    predictor = KronosPredictor(model, tokenizer, device="cpu", max_context=512)
    frame = eurusd()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, model {predictor_config}")

    cases = [
        (
            f"lookback {lookback} / pred_len {pred_len}, sample_count 1",
            lambda: [series_from(frame, 3000, lookback, pred_len, 1, 1)],
            max(1, args.repeats),
        ),
        (
            # The same forecast with 8 fewer input rows never outgrows the 512-token window, so no
            # step has to recompute it: this row isolates what the 7 sliding steps above cost.
            f"lookback {lookback - 8} / pred_len {pred_len}, sample_count 1 (fits the window: no sliding step)",
            lambda: [series_from(frame, 3000, lookback - 8, pred_len, 1, 1)],
            1,
        ),
        (
            f"lookback {lookback} / pred_len {pred_len}, sample_count 5",
            lambda: [series_from(frame, 3000, lookback, pred_len, 5, 2)],
            1,
        ),
        (
            f"batch of {len(mixed)} mixed series (lookback/pred_len {', '.join(f'{a}/{b}' for a, b in mixed)})",
            lambda: [series_from(frame, 1000 + 400 * i, a, b, 1, 10 + i) for i, (a, b) in enumerate(mixed)],
            1,
        ),
    ]
    predictor.forecast(cases[0][1](), fast=True)  # warm-up (allocator, kernels, prepared weights)

    rows = []
    for name, make_series, repeats in cases:
        slow_runs, fast_runs = [], []
        for _ in range(repeats):  # alternate, so a slow phase of the machine hits both paths
            slow_runs.append(run(predictor, make_series(), fast=False))
            fast_runs.append(run(predictor, make_series(), fast=True))
        slow_s = statistics.median(r[0] for r in slow_runs)
        fast_s = statistics.median(r[0] for r in fast_runs)
        slow_mem = max(r[1] for r in slow_runs)
        fast_mem = max(r[1] for r in fast_runs)
        equal = all(
            np.allclose(a.samples, b.samples, rtol=1e-4, atol=1e-6 * np.abs(a.samples).max())
            for slow_run, fast_run in zip(slow_runs, fast_runs)
            for a, b in zip(slow_run[2], fast_run[2])
        )
        rows.append((name, slow_s, fast_s, slow_s / fast_s, slow_mem, fast_mem, equal))
        runs = (
            ""
            if repeats == 1
            else " (median of {}: {} / {})".format(
                repeats,
                ", ".join(f"{r[0]:.2f}" for r in slow_runs),
                ", ".join(f"{r[0]:.2f}" for r in fast_runs),
            )
        )
        print(
            f"{name}{runs}\n  recompute {slow_s:8.2f} s  peak +{slow_mem:7.1f} MiB\n"
            f"  fast      {fast_s:8.2f} s  peak +{fast_mem:7.1f} MiB\n"
            f"  speed-up  {slow_s / fast_s:8.1f}x   outputs equal: {equal}",
            flush=True,
        )

    print("\n| case | recompute s | fast s | speed-up | recompute peak MiB | fast peak MiB | equal |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, slow_s, fast_s, ratio, slow_mem, fast_mem, equal in rows:
        print(f"| {name} | {slow_s:.2f} | {fast_s:.2f} | {ratio:.1f}x | {slow_mem:.0f} | {fast_mem:.0f} | {equal} |")
    if not all(r[-1] for r in rows):
        raise SystemExit("fast and recompute outputs differ")


PRECISION_CASES = [(392, 120, 8), (392, 120, 1), (100, 20, 1)]  # lookback, pred_len, sample paths


def precision_main(args) -> None:
    """The fast path in fp32 against each reduced precision: the same forecasts (same seed), run
    alternately ``--repeats`` times, medians; and how many leading forecast steps equal fp32's."""
    model, tokenizer = random_pair(KRONOS_SMALL, TOKENIZER_BASE, seed=0)
    names = ["fp32", *args.precision]
    predictors = {p: KronosPredictor(model, tokenizer, device="cpu", max_context=512, precision=p) for p in names}
    frame = eurusd()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, Kronos-small shape, random weights")
    rows = []
    for lookback, pred_len, paths in PRECISION_CASES:
        series = [series_from(frame, 3000, lookback, pred_len, paths, 1)]
        for p in names:  # warm-up: kernels, the prepared weights of every precision
            predictors[p].forecast(series)
        runs = {p: [] for p in names}
        samples = {}
        for _ in range(max(1, args.repeats)):
            for p in names:
                started = time.perf_counter()
                (forecast,) = predictors[p].forecast(series)
                runs[p].append(time.perf_counter() - started)
                samples[p] = forecast.samples
        medians = {p: statistics.median(r) for p, r in runs.items()}
        for p in args.precision:
            same = (samples[p] == samples["fp32"]).all(axis=-1)  # (paths, pred_len): the step's candle equal
            leading = int(np.mean([np.argmin(row) if not row.all() else len(row) for row in same]))
            rows.append((f"{lookback}/{pred_len}, {paths} paths", p, medians["fp32"], medians[p], leading, pred_len))
            print(
                f"{lookback}/{pred_len}, {paths} paths: fp32 {medians['fp32']:.2f} s, {p} {medians[p]:.2f} s "
                f"({medians['fp32'] / medians[p]:.2f}x; runs {', '.join(f'{r:.2f}' for r in runs[p])} / fp32 "
                f"{', '.join(f'{r:.2f}' for r in runs['fp32'])}); leading steps equal to fp32 {leading} of {pred_len}",
                flush=True,
            )
    print("\n| case | precision | fp32 s | s | speed-up | leading steps equal to fp32 (mean over paths) |")
    print("|---|---|---:|---:|---:|---:|")
    for case, p, base, s, leading, pred_len in rows:
        print(f"| {case} | {p} | {base:.2f} | {s:.2f} | {base / s:.2f}x | {leading} of {pred_len} |")


if __name__ == "__main__":
    main()
