"""Interactive requests beside a job: does a big /v1/jobs job slow down the people using the service?

    python benchmarks/jobs_fairness.py            # Kronos-small shape (random weights), 500 items, ~4 minutes
    python benchmarks/jobs_fairness.py --quick    # the bundled tiny model, 200 items, ~1 minute

The real service (``python -m services.kronos_fastapi``, step-level batching, KRONOS_JOBS_MAX_SHARE
at its default unless ``--share``) on a free 127.0.0.1 port, and benchmarks/serve.py's mixed-load
client: 4 closed-loop clients of 100-row/20-step forecasts beside 2 of 400/120, real EURUSD hourly
candles. Twice for the same time: with no job, then while a job of ``--items`` items (100-row windows,
pred_len 20 by default, ``--item-size large`` for 400/120) runs. The short requests' p95 with the job
over their p95 without is what an interactive user pays for a job running beside them (goal: at
most 1.5x); the job's items/s during the second run is what the job still gets.

Job items queue behind every interactive series and hold at most KRONOS_JOBS_MAX_SHARE of the batch
budgets (services/kronos_fastapi/batching/common.py); on a CPU a decode step's time grows with the
rows in it, so the share is also how much the job slows each interactive step.
Run it on an otherwise idle machine (see serve.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve import SIZES, Case, Server, drive, eurusd, request_bodies  # noqa: E402 — benchmarks/serve.py

from model.nn.synthetic import KRONOS_SMALL, TOKENIZER_BASE, write_random_pair  # noqa: E402

SHORT_CLIENTS, LONG_CLIENTS = 4, 2


def job_items(bodies: list[bytes], count: int) -> list[dict]:
    items = []
    for i in range(count):
        body = json.loads(bodies[i % len(bodies)])
        items.append({"custom_id": f"item-{i}", **body, "seed": i})
    return items


def run_load(server: Server, frames: dict[str, list[bytes]], seconds: float, label: str) -> tuple[Case, Case]:
    server.settle()
    short = Case("small", SHORT_CLIENTS, "step", seconds, label)
    long = Case("large", LONG_CLIENTS, "step", seconds, label)
    asyncio.run(drive(server.url, [(frames["small"], short, SIZES["small"][1]), (frames["large"], long, 120)]))
    for case in (short, long):
        print(
            f"  {label:8} {case.size:5} x{case.clients}: {case.per_second:5.2f} req/s, "
            f"p50 {case.percentile(50):5.2f} s, p95 {case.percentile(95):5.2f} s, statuses {case.statuses}, "
            f"load {os.getloadavg()[0]:.2f}",
            flush=True,
        )
    return short, long


def counts(server: Server, job_id: str) -> dict:
    return httpx.get(f"{server.url}/v1/jobs/{job_id}", timeout=30).json()["counts"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the bundled tiny model")
    parser.add_argument("--items", type=int, help="items in the job (default 500; quick 200)")
    parser.add_argument("--item-size", choices=list(SIZES), default="small", help="small (100/20) or large (400/120)")
    parser.add_argument("--seconds", type=float, help="seconds per load (default 40; quick 10)")
    parser.add_argument("--share", type=float, help="KRONOS_JOBS_MAX_SHARE (default: the service's, 0.5)")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS of the server")
    args = parser.parse_args()
    items = args.items or (200 if args.quick else 500)
    seconds = args.seconds or (10.0 if args.quick else 40.0)
    load = os.getloadavg()[0]
    print(f"{os.cpu_count()} cores, load average {load:.2f}", flush=True)
    frame = eurusd()
    frames = {size: request_bodies(frame, *shape) for size, shape in SIZES.items()}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kronos-jobs-bench-") as tmp:
        env = {
            "KRONOS_RATE_LIMIT_PER_MINUTE": "0",
            "KRONOS_LOG_LEVEL": "WARNING",
            "KRONOS_JOBS_DIR": str(Path(tmp) / "jobs"),
            "KRONOS_JOBS_MAX_ITEMS": str(max(items, 10000)),
        }
        if not args.quick:
            model_path = Path(tmp) / "kronos-small-random"
            write_random_pair(model_path, KRONOS_SMALL, TOKENIZER_BASE, seed=0)
            env["KRONOS_MODEL_PATH"] = str(model_path)
        if args.share:
            env["KRONOS_JOBS_MAX_SHARE"] = str(args.share)
        if args.threads:
            env["OMP_NUM_THREADS"] = str(args.threads)
        server = Server(env, Path(tmp) / "server.log")
        try:
            server.wait_ready()
            for size in SIZES:  # warm-up
                httpx.post(server.url + "/v1/predict/single", content=frames[size][0], timeout=300)
            alone, alone_long = run_load(server, frames, seconds, "no job")
            created = httpx.post(
                server.url + "/v1/jobs", json={"items": job_items(frames[args.item_size], items)}, timeout=300
            )
            assert created.status_code == 202, created.text
            job_id = created.json()["id"]
            deadline = time.monotonic() + 60
            while counts(server, job_id)["completed"] < 1:  # the job is running
                assert time.monotonic() < deadline, "the job never started"
                time.sleep(0.1)
            before = counts(server, job_id)["completed"]
            mixed, mixed_long = run_load(server, frames, seconds, "with job")
            done = counts(server, job_id)["completed"] - before
            httpx.post(f"{server.url}/v1/jobs/{job_id}/cancel", timeout=30)
        finally:
            server.stop()
    ratio = mixed.percentile(95) / alone.percentile(95)
    model = "the bundled model (tiny)" if args.quick else "Kronos-small shape, random weights"
    lookback, pred_len = SIZES[args.item_size]
    print(
        f"\n{model}; {os.cpu_count()} cores; load average {load:.2f} before, {os.getloadavg()[0]:.2f} after; "
        f"{time.perf_counter() - started:.0f} s in all; job of {items} items of {lookback}/{pred_len}, "
        f"KRONOS_JOBS_MAX_SHARE {args.share or 0.5}\n"
    )
    print("| load | 100/20 p50 / p95 s | 100/20 req/s | 400/120 p50 / p95 s | 400/120 req/s | job items/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, short, long, rate in (
        ("no job", alone, alone_long, ""),
        ("with job", mixed, mixed_long, f"{done / seconds:.2f}"),
    ):
        print(
            f"| {label} | {short.percentile(50):.2f} / {short.percentile(95):.2f} | {short.per_second:.2f} | "
            f"{long.percentile(50):.2f} / {long.percentile(95):.2f} | {long.per_second:.2f} | {rate} |"
        )
    print(f"\nshort requests' p95 with the job: {ratio:.2f}x their p95 without (goal: <= 1.5x)")
    errors = sum(c.server_errors for c in (alone, alone_long, mixed, mixed_long))
    if errors:
        raise SystemExit(f"{errors} 5xx answers")


if __name__ == "__main__":
    main()
