"""A real CUDA out-of-memory, and the service's split-and-retry answering every series.

    python scripts/device_oom_check.py --device cuda:0 --out oom.json   # on a GPU (scripts/device-check.sh)
    python scripts/device_oom_check.py --simulate                       # on a CPU: injected errors, logic only

On the GPU: a Kronos-small-shaped predictor with random weights forecasts a batch of series once
with the GPU free (the reference answers, and how much memory the batch and one series need),
then the GPU is filled with plain allocations until less is free than the batch needs but several
series still fit, and the same batch goes through the service's ``forecast_splitting``: the first
attempt must fail with a real allocator error, the halves are retried, and every series must be
answered with the numbers it got with the GPU free. The filler is freed before the script exits.

``--simulate`` runs the same checks on the CPU with a tiny model, the error injected for batches
over a quarter of the series (as the unit tests do): it checks this script, not the GPU.
Exit status 0 when every check holds; the JSON (``--out``) says what was seen either way.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model import Forecast, KronosPredictor, SeriesInput  # noqa: E402
from model.nn.config import PredictorConfig, TokenizerConfig  # noqa: E402
from model.nn.synthetic import KRONOS_SMALL, TOKENIZER_BASE, random_pair  # noqa: E402

MiB = 2**20
# The service's batching code: scheduling/ once it moves there, batching/ (or batching.py) before.
SPLITTING_MODULES = ("services.kronos_fastapi.scheduling", "services.kronos_fastapi.batching")
TINY = PredictorConfig(s1_bits=10, s2_bits=10, n_layers=2, d_model=64, n_heads=4, ff_dim=128)
TINY_TOKENIZER = TokenizerConfig(
    d_in=6, d_model=32, n_heads=4, ff_dim=64, n_enc_layers=2, n_dec_layers=2, s1_bits=10, s2_bits=10
)


def import_splitting():
    """(forecast_splitting, is_out_of_memory, module name) from the first module that has them."""
    tried = []
    for name in SPLITTING_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not name.startswith(exc.name):
                raise  # the module exists but something it imports does not: that is a real failure
            tried.append(f"{name}: absent")
            continue
        if hasattr(module, "forecast_splitting") and hasattr(module, "is_out_of_memory"):
            return module.forecast_splitting, module.is_out_of_memory, name
        tried.append(f"{name}: no forecast_splitting / is_out_of_memory")
    raise SystemExit("the service's split-and-retry was not found: " + "; ".join(tried))


def make_series(count: int, lookback: int, pred_len: int, sample_count: int) -> list[SeriesInput]:
    """Random-walk candles, one seed each, so every series has its own numbers."""
    calendar = pd.date_range("2024-01-01", periods=lookback + pred_len, freq="h")
    out = []
    for i in range(count):
        walk = 100 + np.cumsum(np.random.default_rng(1000 + i).normal(size=(lookback, 1)), axis=0)
        candles = np.hstack([walk, walk + 1, walk - 1, walk + 0.5, np.full((lookback, 1), 1000.0)])
        out.append(
            SeriesInput(
                candles, calendar[:lookback], calendar[lookback:], sample_count=sample_count, seed=10 + i, top_p=0.9
            )
        )
    return out


def peak_need(predictor: KronosPredictor, batch: list[SeriesInput], device: torch.device) -> tuple[float, list]:
    """The forecasts of one call and the most memory it allocated beyond what was allocated before (MiB)."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    forecasts = predictor.forecast(batch)
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - base) / MiB, forecasts


def fill(device: torch.device, leave_mib: float) -> list[torch.Tensor]:
    """Plain allocations (the caching allocator's cudaMalloc) until about ``leave_mib`` is free."""
    torch.cuda.empty_cache()
    blocks: list[torch.Tensor] = []
    chunk = 1024 * MiB
    while chunk >= 2 * MiB:
        free, _ = torch.cuda.mem_get_info(device)
        spare = free - leave_mib * MiB
        if spare < 2 * MiB:
            break
        size = int(min(chunk, spare)) // (2 * MiB) * (2 * MiB)
        try:
            blocks.append(torch.empty(size, dtype=torch.uint8, device=device))
        except torch.cuda.OutOfMemoryError:
            chunk //= 2
    return blocks


def same(a: Forecast, b: Forecast) -> tuple[bool, float]:
    diff = float(np.max(np.abs(a.samples - b.samples)))
    scale = float(np.max(np.abs(b.samples))) or 1.0
    return a.seed == b.seed and bool(np.allclose(a.samples, b.samples, rtol=1e-4, atol=1e-5 * scale)), diff


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--simulate", action="store_true", help="CPU, tiny model, injected errors: logic only")
    parser.add_argument("--series", type=int, default=32, help="series in the batch (default 32)")
    parser.add_argument("--lookback", type=int, default=400)
    parser.add_argument("--pred-len", type=int, default=30)
    parser.add_argument("--samples", type=int, default=8, help="sample paths per series")
    parser.add_argument(
        "--leave", type=float, default=0.4, help="free memory left by the filler, as a share of the batch's need"
    )
    parser.add_argument("--out", type=Path, help="write the findings here as JSON")
    args = parser.parse_args()

    forecast_splitting, is_out_of_memory, module = import_splitting()
    device = torch.device("cpu" if args.simulate else args.device)
    if device.type != "cuda" and not args.simulate:
        raise SystemExit(f"a real out-of-memory needs a CUDA device, not {device} (--simulate: the logic on a CPU)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"{device} requested but CUDA is not available here (use --simulate on a CPU)")
    config, tokenizer_config = (TINY, TINY_TOKENIZER) if args.simulate else (KRONOS_SMALL, TOKENIZER_BASE)
    if args.simulate:
        args.lookback, args.pred_len = min(args.lookback, 40), min(args.pred_len, 5)
        args.series, args.samples = min(args.series, 8), min(args.samples, 2)
    model, tokenizer = random_pair(config, tokenizer_config, seed=0)
    predictor = KronosPredictor(model, tokenizer, device=device, max_context=512)
    series = make_series(args.series, args.lookback, args.pred_len, args.samples)
    report: dict = {
        "splitting_module": module,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "simulated": args.simulate,
        "model": "tiny" if args.simulate else "Kronos-small shape, random weights",
        "series": args.series,
        "lookback": args.lookback,
        "pred_len": args.pred_len,
        "sample_paths_per_series": args.samples,
    }
    print(f"split-and-retry from {module}; {report['device_name']}, torch {torch.__version__}", flush=True)

    predictor.forecast(series[:1])  # warm-up: kernels, workspaces, the prepared weights
    if device.type == "cuda":
        need_one, _ = peak_need(predictor, series[:1], device)
        need_all, reference = peak_need(predictor, series, device)
        leave = max(need_all * args.leave, 4 * need_one)
        report.update(need_one_mib=round(need_one, 1), need_batch_mib=round(need_all, 1), leave_free_mib=round(leave))
        if leave >= need_all:
            report["error"] = "the batch is too small against one series to fill memory between them; raise --series"
            return finish(report, args.out, ok=False)
        total = torch.cuda.mem_get_info(device)[1]
        blocks = fill(device, leave)
        free_after_fill = torch.cuda.mem_get_info(device)[0]
        report.update(
            gpu_total_mib=round(total / MiB),
            filler_mib=round(sum(b.numel() for b in blocks) / MiB),
            free_after_fill_mib=round(free_after_fill / MiB),
        )
        print(
            f"one series needs {need_one:.0f} MiB, the batch {need_all:.0f} MiB; filled "
            f"{report['filler_mib']} MiB of {report['gpu_total_mib']}, {report['free_after_fill_mib']} MiB free",
            flush=True,
        )

        def predict(batch, **kwargs):
            return predictor.forecast(batch, **kwargs)

    else:  # --simulate: the error injected above a quarter of the batch's sample paths
        reference = predictor.forecast(series)
        most_rows = max(1, args.series * args.samples // 4)
        blocks = []

        def predict(batch, **kwargs):
            if sum(s.sample_count for s in batch) > most_rows:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
            return predictor.forecast(batch, **kwargs)

    splits: list[dict] = []
    calls = {"n": 0}

    def counted(batch, **kwargs):
        calls["n"] += 1
        return predict(batch, **kwargs)

    def on_split(exc: BaseException, size: int) -> None:  # keep no reference to the exception
        first_line = (str(exc).splitlines() or [""])[0][:200]
        splits.append(
            {"series": size, "error": type(exc).__name__, "message": first_line, "out_of_memory": is_out_of_memory(exc)}
        )

    started = time.perf_counter()
    try:
        outcomes = forecast_splitting(counted, series, on_split)
    finally:
        blocks.clear()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    seconds = time.perf_counter() - started

    answered = [isinstance(o, Forecast) for o in outcomes]
    compared = [same(o, r) if isinstance(o, Forecast) else (False, float("nan")) for o, r in zip(outcomes, reference)]
    failures = [f"{type(o).__name__}: {str(o)[:200]}" for o in outcomes if not isinstance(o, Forecast)]
    report.update(
        seconds=round(seconds, 3),
        model_calls=calls["n"],
        splits=splits,
        first_attempt_out_of_memory=bool(splits) and splits[0]["series"] == args.series and splits[0]["out_of_memory"],
        answered=sum(answered),
        unanswered=failures,
        equal_to_reference=sum(ok for ok, _ in compared),
        max_abs_diff=max((d for _, d in compared), default=float("nan")),
    )
    ok = report["first_attempt_out_of_memory"] and all(answered) and all(ok for ok, _ in compared)
    print(
        f"first attempt out of memory: {report['first_attempt_out_of_memory']}; {len(splits)} splits, "
        f"{calls['n']} model calls, {seconds:.2f} s; answered {sum(answered)}/{len(series)}, "
        f"equal to the reference {report['equal_to_reference']}/{len(series)} "
        f"(max |diff| {report['max_abs_diff']:.3g})",
        flush=True,
    )
    return finish(report, args.out, ok)


def finish(report: dict, out: Path | None, ok: bool) -> int:
    report["ok"] = bool(ok)
    text = json.dumps(report, indent=2, default=str)
    if out is not None:
        out.write_text(text + "\n")
    print(text)
    kind = "an injected (simulated) out-of-memory" if report.get("simulated") else "a real CUDA out-of-memory"
    print(f"OK: every series answered after {kind} split the batch" if ok else "FAILED: see above", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
