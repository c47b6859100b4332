"""window="rolling" against the exact sliding window, side by side, on a Kronos-small-shaped model.

    python benchmarks/rolling.py             # about 2 minutes on 2 cores
    python benchmarks/rolling.py --quick     # the bundled tiny model, seconds

Once input + pred_len outgrow max_context (512), the exact path (the reference's arithmetic)
recomputes the whole window for every new token; ``window="rolling"`` keeps the cache and drops the
oldest key/value instead (``model.decoding.engine``). Each case runs both on the same real EURUSD hourly
candles with the same seed, alternately ``--repeats`` times, and prints the median seconds, the
speed-up and how many of the forecast's first steps agree (those before the window slides agree
exactly). What rolling costs in forecast quality is measured on held-out real candles by
``python benchmarks/heldout.py --max-context 256 --window exact rolling``.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere, installed or not

from decode import eurusd, series_from  # noqa: E402

from model import KronosPredictor  # noqa: E402
from model.checkpoints.bundled import bundled_model_path, bundled_tokenizer_path  # noqa: E402
from model.nn.predictor import Kronos  # noqa: E402
from model.nn.synthetic import KRONOS_SMALL, TOKENIZER_BASE, random_pair  # noqa: E402
from model.nn.tokenizer import KronosTokenizer  # noqa: E402

CASES = [(400, 120), (512, 60), (512, 120)]  # lookback, pred_len
QUICK_CASES = [(400, 120), (512, 120)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the bundled tiny model")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    if args.quick:
        model = Kronos.from_pretrained(bundled_model_path())
        tokenizer = KronosTokenizer.from_pretrained(bundled_tokenizer_path())
        predictor = KronosPredictor(model, tokenizer, device="cpu", max_context=512)
        shape = "the bundled model"
    else:
        model, tokenizer = random_pair(KRONOS_SMALL, TOKENIZER_BASE, seed=0)
        predictor = KronosPredictor(model, tokenizer, device="cpu", max_context=512)
        shape = "Kronos-small shape, random weights"
    frame = eurusd()
    print(f"{shape}, max_context {predictor.max_context}, {torch.get_num_threads()} threads, sample_count 1")
    print("| lookback / pred_len | slides (steps) | exact s | rolling s | speed-up | first steps equal |")
    print("|---|---:|---:|---:|---:|---:|")
    for lookback, pred_len in QUICK_CASES if args.quick else CASES:
        exact = series_from(frame, 3000, lookback, pred_len, 1, seed=11)
        rolling = dataclasses.replace(exact, window="rolling")
        times = {"exact": [], "rolling": []}
        out = {}
        for _ in range(args.repeats):
            for name, series in (("exact", exact), ("rolling", rolling)):
                started = time.perf_counter()
                (out[name],) = predictor.forecast([series])
                times[name].append(time.perf_counter() - started)
        fits = max(0, predictor.max_context - lookback)
        same = out["exact"].samples[0] == out["rolling"].samples[0]
        agree = int(np.argmin(same.all(axis=1))) if not same.all() else pred_len
        e, r = statistics.median(times["exact"]), statistics.median(times["rolling"])
        slides = max(0, lookback + pred_len - predictor.max_context)
        print(f"| {lookback} / {pred_len} | {slides} | {e:.2f} | {r:.2f} | {e / r:.1f}x | {agree} (fits: {fits}) |")


if __name__ == "__main__":
    main()
