"""How much batching can gain on this machine at best: the parts of a forecast no batch can share.

    python benchmarks/ceiling.py                 # Kronos-small shape, 100/20, 8 and 32 concurrent series
    python benchmarks/ceiling.py --lookback 400 --pred-len 120
    python benchmarks/ceiling.py --precision bf16   # the same with opt-in bf16 (KronosPredictor(precision=))

A forecast served alone costs ``alone`` (the request-level path with one series: what the ``off``
mode of ``benchmarks/serve.py`` runs per request). Batching shares only its decode steps, and a step
of N rows costs more than a step of one, measured here (``step``): on a 2-core CPU an 8-row fp32 step
is about 2x a 1-row one and a 32-row step about 5x (measured 2026-12-02: 5.3-5.9, 11.3-11.7 and
27-28 ms). What grows with the rows, and bounds the engine now:

- the products: a 1-row product is bound by reading the weights; from 8 rows on they are bound by
  arithmetic (at 32 rows ~9.7 ms of a step at ~165 GFLOP/s, near what MKL reaches on 2 cores);
- attention: every row reads its own fp32 keys and values, and only its live columns; at 32 rows of
  ~176 columns that is ~207 MB a step, more than the weights, at this machine's 25-50 GB/s (~8 ms);
- sampling (a sort of the vocabulary per row, 1.8 ms at 32 rows) and the dependency head.

Opt-in bf16 runs the products on bf16 kernels (attention and its cache stay fp32): 8.8 / 23.2 ms at
8 / 32 rows; int8 weight-only helps a 1-row step most (3.1 ms) and a 32-row step not at all (30 ms).
The rest is paid once per series however many run beside it:

- admit: the input checked and turned into model features, and the tokenizer's encoder pass;
- prefill: the predictor over the whole context, which is compute-bound already for one series
  (batching 4 contexts of 100 rows takes 4 times one);
- tokenizer decode: the decoder pass over the window that turns tokens back into candles.

With N series decoding together, one series' share of the decode steps is (pred_len - 1) x step(N) / N,
so with this engine the throughput of N clients can reach at most alone / (admit + prefill + decode +
(pred_len - 1) x step(N) / N) times the unbatched one: the ceiling this script prints, measured side
by side in one run with the step-level engine (``model.decoding.engine.DecodeEngine``) the service runs; with
free decode steps, alone / (admit + prefill + decode) bounds any scheduler that does not also make
those parts cheaper. HTTP parsing and JSON are not counted: they are unshared too.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from decode import eurusd, series_from  # noqa: E402 — benchmarks/decode.py: EURUSD candles, windows of them

from model.decoding.engine import DecodeEngine  # noqa: E402
from model.decoding.pipeline import KronosPredictor, SeriesInput  # noqa: E402
from model.nn.synthetic import KRONOS_SMALL, TOKENIZER_BASE, random_pair  # noqa: E402


def _series(frame: pd.DataFrame, index: int, lookback: int, pred_len: int) -> SeriesInput:
    """The index-th window of real candles (decode.py's ``series_from``), spread over the file."""
    end = lookback + 50 + index * 97 % (len(frame) - lookback - 100)
    return series_from(frame, end, lookback, pred_len, sample_count=1, seed=index)


def _median_ms(fn, reps: int) -> float:
    fn()  # warm
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def measure(predictor: KronosPredictor, lookback: int, pred_len: int, clients: list[int], reps: int = 5) -> dict:
    """The parts of one forecast in ms, and the decode step of each N in ``clients``."""
    frame = eurusd()
    one = _series(frame, 0, lookback, pred_len)
    slots = max(clients)
    out = {"alone": _median_ms(lambda: predictor.forecast([one]), reps)}

    engine = DecodeEngine(predictor, slots=slots)

    def admit():
        engine.admit("x", one)
        engine.remove("x")

    out["admit"] = _median_ms(admit, reps)

    first_steps = []  # a lone series' first step: its whole context, and its first token
    for _ in range(reps + 1):
        engine.admit("x", one)
        started = time.perf_counter()
        engine.step()
        first_steps.append(time.perf_counter() - started)
        engine.remove("x")
    out["prefill"] = 1000 * statistics.median(first_steps[1:])
    engine.admit("x", one)
    entry = engine.series["x"]
    out["tokenizer decode"] = _median_ms(lambda: engine._forecast(entry), reps)  # the window back to candles
    engine.remove("x")

    steps = {}
    for n in clients:  # n series decoding together; room for the steps timed (pred_len x 3)
        for i in range(n):
            engine.admit(i, _series(frame, i, lookback, 3 * pred_len))
        while any(entry.state != "decode" for entry in engine.series.values()):
            engine.step()
        steps[n] = _median_ms(engine.step, reps=min(10, pred_len))
        for key in engine.keys():
            engine.remove(key)
    out["step"] = steps
    return out


def report(parts: dict, pred_len: int) -> list[str]:
    unshared = parts["admit"] + parts["prefill"] + parts["tokenizer decode"]
    lines = [
        f"one forecast alone: {parts['alone']:.1f} ms; paid once per series whatever the batch: admit "
        f"{parts['admit']:.1f} + prefill {parts['prefill']:.1f} + tokenizer decode {parts['tokenizer decode']:.1f} "
        f"= {unshared:.1f} ms ({100 * unshared / parts['alone']:.0f}% of it): even if decode steps cost nothing, "
        f"batching could give at most {parts['alone'] / unshared:.1f}x the unbatched throughput"
    ]
    for n, step in parts["step"].items():
        share = (pred_len - 1) * step / n
        lines.append(
            f"{n} series decoding together: {step:.1f} ms per step, {share:.1f} ms of steps per series -> "
            f"at most {parts['alone'] / (unshared + share):.1f}x the unbatched throughput"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lookback", type=int, default=100)
    parser.add_argument("--pred-len", type=int, default=20)
    parser.add_argument("--clients", default="8,32", help="series decoding together, comma-separated")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "int8"])
    args = parser.parse_args()
    model, tokenizer = random_pair(KRONOS_SMALL, TOKENIZER_BASE, seed=0)
    predictor = KronosPredictor(model, tokenizer, device="cpu", max_context=512, precision=args.precision)
    with torch.inference_mode():
        parts = measure(predictor, args.lookback, args.pred_len, [int(n) for n in args.clients.split(",")], args.reps)
    print(
        f"Kronos-small shape, random weights, {args.lookback}/{args.pred_len}, {torch.get_num_threads()} threads, "
        f"{args.precision}"
    )
    print("\n".join(report(parts, args.pred_len)))


if __name__ == "__main__":
    main()
