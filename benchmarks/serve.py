"""The service under load: N concurrent clients against the real server, three ways of batching side by side.

    python benchmarks/serve.py            # the cases below, about 14 minutes on 2 cores
    python benchmarks/serve.py --quick    # the bundled tiny model, 3-6 s per case: a correctness run

For each mode the script starts the real service (``python -m services.kronos_fastapi``) on a free
127.0.0.1 port: ``step`` (the default: series join and leave the running batch at every decode
step), ``request`` (``KRONOS_BATCHING=request``: a batch is formed once and runs to its end) or
``off`` (request-level with ``KRONOS_MAX_BATCH_SIZE=1``: every series alone). The model
is Kronos-small-shaped with random weights (written to a temporary folder and passed as
``KRONOS_MODEL_PATH``); the requests are windows of real EURUSD hourly candles (backtesting's
EURUSD.csv) with their timestamps, lookback 100 / pred_len 20 and lookback 400 / pred_len 120, one
sample path each. N closed-loop clients (1, 8, 32) each send a request, wait for the answer and send
the next, for a fixed time per case; requests still unanswered at the end are abandoned (the server
drops them at its next decode step) and counted as "unfinished". requests/s counts the answers
(status 200) within that time; latencies are those of the answers.

The mixed case (step and request modes): 4 clients of 100/20 beside 2 clients of 400/120 at once,
against the same 4 clients of 100/20 alone; the short requests' p50/p95 under the mix over their
p50/p95 alone is what a short forecast pays for sharing the server with long ones.

Run it on an otherwise idle machine (``uptime`` load below ~1.2 on 2 cores): two torch processes on
two busy cores slow each other down tenfold, and the numbers then say nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from decode import eurusd  # noqa: E402 — benchmarks/decode.py: EURUSD candles from the backtesting package

from model.nn.synthetic import KRONOS_SMALL, TOKENIZER_BASE, write_random_pair  # noqa: E402

SIZES = {"small": (100, 20), "large": (400, 120)}  # lookback, pred_len
MODES = {
    "step": {"KRONOS_BATCHING": "step"},
    "request": {"KRONOS_BATCHING": "request"},
    "off": {"KRONOS_BATCHING": "request", "KRONOS_MAX_BATCH_SIZE": "1"},
}
MIXED_SHORT, MIXED_LONG = 4, 2  # clients of 100/20 and of 400/120 in the mixed case
WINDOWS = 64  # distinct request bodies per size
HEADERS = {"Content-Type": "application/json"}
START_TIMEOUT_S = 180.0
SETTLE_TIMEOUT_S = 60.0


def request_bodies(frame: pd.DataFrame, lookback: int, pred_len: int) -> list[bytes]:
    """Windows of real candles spread over the file, as /v1/predict/single bodies."""
    ends = np.linspace(lookback, len(frame), WINDOWS, dtype=int)
    bodies = []
    for end in ends:
        window = frame.iloc[end - lookback : end]
        body = {
            "data": window[["open", "high", "low", "close", "volume"]].round(6).to_numpy().tolist(),
            "timestamps": [t.isoformat() for t in window.index],
            "pred_len": pred_len,
        }
        bodies.append(json.dumps(body).encode())
    return bodies


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """The real service in a subprocess on 127.0.0.1, with its stderr in a log file."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        base = {k: v for k, v in os.environ.items() if not k.startswith("KRONOS_")}
        base["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), base.get("PYTHONPATH")]))
        base.update({"KRONOS_HOST": "127.0.0.1", "KRONOS_PORT": str(self.port), **env})
        self._log = open(log, "w")  # noqa: SIM115 — closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "services.kronos_fastapi"], cwd=ROOT, env=base, stdout=self._log, stderr=self._log
        )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(
                    f"the server exited with {self.process.returncode}:\n{self.log_path.read_text()[-3000:]}"
                )
            try:
                if httpx.get(self.url + "/v1/readyz", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"the server was not ready in {START_TIMEOUT_S:.0f} s:\n{self.log_path.read_text()[-3000:]}")

    def metrics(self) -> dict[str, float]:
        """Every sample of /v1/metrics summed over its labels but a histogram's ``le`` (the queue depth and
        the batch counters carry a ``model`` label: one model here, so the sum is that model's value)."""
        values: dict[str, float] = {}
        text = httpx.get(self.url + "/v1/metrics", timeout=30).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if "le" not in sample.labels and "quantile" not in sample.labels:
                    values[sample.name] = values.get(sample.name, 0.0) + sample.value
        return values

    def settle(self) -> None:
        """Wait until the requests abandoned by the last case have left the server."""
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while time.monotonic() < deadline:
            metrics = self.metrics()
            if metrics.get("kronos_http_requests_in_flight", 0) <= 1 and metrics.get("kronos_queue_depth", 0) == 0:
                return
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()


@dataclass
class Case:
    size: str
    clients: int
    mode: str
    seconds: float
    mix: str = ""  # "alone" or "mixed" for the mixed-load cases
    latencies: list[float] = field(default_factory=list)  # of the 200 answers
    statuses: dict[str, int] = field(default_factory=dict)
    unfinished: int = 0
    series_per_batch: float = float("nan")

    @property
    def ok(self) -> int:
        return self.statuses.get("200", 0)

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status.startswith("5"))

    @property
    def other_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != "200" and not status.startswith("5"))

    @property
    def per_second(self) -> float:
        return self.ok / self.seconds

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) if self.latencies else float("nan")


async def drive(url: str, groups: list[tuple[list[bytes], Case, int]]) -> None:
    """Closed-loop clients for each group (bodies, case, pred_len), all at once, for the cases' time;
    what is unanswered at the end is abandoned."""
    clients = sum(case.clients for _, case, _ in groups)
    seconds = groups[0][1].seconds
    limits = httpx.Limits(max_connections=clients + 2, max_keepalive_connections=clients + 2)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        started = time.perf_counter()
        end = started + seconds
        checked: set[int] = set()

        async def one_client(index: int, bodies: list[bytes], case: Case, pred_len: int) -> None:
            sent = 0
            while time.perf_counter() < end:
                body = bodies[(index + sent * case.clients) % len(bodies)]
                sent += 1
                begun = time.perf_counter()
                try:
                    response = await client.post("/v1/predict/single", content=body, headers=HEADERS)
                    status = str(response.status_code)
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                finished = time.perf_counter()
                if finished > end:
                    case.unfinished += 1  # answered after the case ended: not counted
                    return
                if status == "200" and id(case) not in checked:  # one full check per case
                    checked.add(id(case))
                    if len(response.json()["forecast"]) != pred_len:
                        status = "wrong answer"
                case.statuses[status] = case.statuses.get(status, 0) + 1
                if status == "200":
                    case.latencies.append(finished - begun)

        tasks = {
            asyncio.create_task(one_client(i, bodies, case, pred_len)): case
            for bodies, case, pred_len in groups
            for i in range(case.clients)
        }
        _, pending = await asyncio.wait(tasks, timeout=seconds + 0.5)
        for task in pending:
            tasks[task].unfinished += 1
            task.cancel()  # closes the connection: the server drops the request
        await asyncio.gather(*pending, return_exceptions=True)


def measure(server: Server, frames: dict[str, list[bytes]], cases: list[Case]) -> None:
    """Run cases together (one load), then fill in their model-side averages from the metrics."""
    server.settle()
    before = server.metrics()
    asyncio.run(drive(server.url, [(frames[c.size], c, SIZES[c.size][1]) for c in cases]))
    after = server.metrics()
    step_mode = cases[0].mode.partition(":")[0] == "step"
    name = "kronos_step_rows" if step_mode else "kronos_batch_size"
    count = after.get(f"{name}_count", 0) - before.get(f"{name}_count", 0)
    for case in cases:
        if count:
            case.series_per_batch = (after[f"{name}_sum"] - before[f"{name}_sum"]) / count
        print(
            f"  {case.size:5} N={case.clients:<3} {case.mode:7} {case.mix:6}: {case.per_second:6.2f} req/s, "
            f"p50 {case.percentile(50):6.2f} s, p95 {case.percentile(95):6.2f} s, "
            f"{case.series_per_batch:4.1f} {'rows/step' if step_mode else 'series/batch'}, "
            f"statuses {case.statuses}, unfinished {case.unfinished}, load {os.getloadavg()[0]:.2f}",
            flush=True,
        )


def run_mode(mode: str, model_path: Path, args, frames: dict[str, list[bytes]], logs: Path) -> list[Case]:
    batching, _, precision = mode.partition(":")  # e.g. step:bf16 (KRONOS_PRECISION)
    env = {"KRONOS_RATE_LIMIT_PER_MINUTE": "0", "KRONOS_LOG_LEVEL": "WARNING", **MODES[batching]}
    if precision:
        env["KRONOS_PRECISION"] = precision
    if model_path is not None:
        env["KRONOS_MODEL_PATH"] = str(model_path)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    server = Server(env, logs / f"server-{mode.replace(':', '-')}.log")
    cases = []
    try:
        server.wait_ready()
        for size in SIZES:  # warm-up: one request of each shape
            httpx.post(server.url + "/v1/predict/single", content=frames[size][0], headers=HEADERS, timeout=300)
        for size in args.sizes:
            seconds = args.small_seconds if size == "small" else args.large_seconds
            for clients in args.clients if size == "small" else args.large_clients:
                case = Case(size, clients, mode, seconds)
                measure(server, frames, [case])
                cases.append(case)
        if args.mixed and mode != "off":
            alone = Case("small", MIXED_SHORT, mode, args.small_seconds, "alone")
            measure(server, frames, [alone])
            short = Case("small", MIXED_SHORT, mode, args.large_seconds, "mixed")
            long = Case("large", MIXED_LONG, mode, args.large_seconds, "mixed")
            measure(server, frames, [short, long])
            cases += [alone, short, long]
    finally:
        server.stop()
    return cases


def table(cases: list[Case]) -> str:
    lines = [
        "| request | clients | batching | requests/s | vs off | p50 s | p95 s | p99 s | 200 | 5xx | other errors "
        "| unfinished | rows/step or series/batch |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    by_key = {(c.size, c.clients, c.mode): c for c in cases if not c.mix}
    for size, (lookback, pred_len) in SIZES.items():
        for clients in sorted({c.clients for c in cases if c.size == size and not c.mix}):
            off = by_key.get((size, clients, "off"))
            for mode in dict.fromkeys(c.mode for c in cases):
                c = by_key.get((size, clients, mode))
                if c is None:
                    continue
                speed_up = f"{c.per_second / off.per_second:.1f}x" if mode != "off" and off and off.per_second else ""
                lines.append(
                    f"| {lookback}/{pred_len} | {clients} | {mode} | {c.per_second:.2f} | {speed_up} | "
                    f"{c.percentile(50):.2f} | {c.percentile(95):.2f} | {c.percentile(99):.2f} | {c.ok} | "
                    f"{c.server_errors} | {c.other_errors} | {c.unfinished} | {c.series_per_batch:.1f} |"
                )
    return "\n".join(lines)


def mixed_table(cases: list[Case]) -> str:
    lines = [
        "| batching | 100/20 alone p50 / p95 s | 100/20 mixed p50 / p95 s | mixed / alone p95 | 100/20 req/s "
        "alone / mixed | 400/120 mixed p50 / p95 s | 400/120 req/s | 5xx |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mode in dict.fromkeys(c.mode for c in cases):
        got = {(c.size, c.mix): c for c in cases if c.mode == mode and c.mix}
        if len(got) < 3:
            continue
        alone, short, long = got["small", "alone"], got["small", "mixed"], got["large", "mixed"]
        ratio = short.percentile(95) / alone.percentile(95)
        lines.append(
            f"| {mode} | {alone.percentile(50):.2f} / {alone.percentile(95):.2f} | {short.percentile(50):.2f} / "
            f"{short.percentile(95):.2f} | {ratio:.1f}x | {alone.per_second:.2f} / {short.per_second:.2f} | "
            f"{long.percentile(50):.2f} / {long.percentile(95):.2f} | {long.per_second:.2f} | "
            f"{alone.server_errors + short.server_errors + long.server_errors} |"
        )
    return "\n".join(lines)


def ceiling_lines() -> list[str]:
    """benchmarks/ceiling.py's bound for 100/20 at 8 and 32 clients, with this script's model shape."""
    import torch
    from ceiling import measure, report

    from model.decoding.pipeline import KronosPredictor
    from model.nn.synthetic import random_pair

    model, tokenizer = random_pair(KRONOS_SMALL, TOKENIZER_BASE, seed=0)
    predictor = KronosPredictor(model, tokenizer, device="cpu", max_context=512)
    lookback, pred_len = SIZES["small"]
    with torch.inference_mode():
        parts = measure(predictor, lookback, pred_len, [8, 32])
    del predictor, model, tokenizer
    return [f"ceiling, {lookback}/{pred_len}: {line}" for line in report(parts, pred_len)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the bundled tiny model, 3-6 s per case")
    parser.add_argument("--clients", default="1,8,32", help="concurrent clients per 100/20 case, comma-separated")
    parser.add_argument("--large-clients", default="1,8", help="concurrent clients per 400/120 case")
    parser.add_argument("--sizes", default="small,large", help="request sizes: small (100/20), large (400/120)")
    parser.add_argument(
        "--modes", default="step,request,off", help="any of step, request, off, each optionally :bf16 or :int8"
    )
    parser.add_argument("--no-mixed", dest="mixed", action="store_false", help="skip the mixed-load case")
    parser.add_argument("--small-seconds", type=float, help="seconds per case, lookback 100 (default 20; quick 3)")
    parser.add_argument("--large-seconds", type=float, help="seconds per case, lookback 400 (default 40; quick 6)")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS of the server (default: torch's choice)")
    parser.add_argument(
        "--no-ceiling", dest="ceiling", action="store_false", help="skip benchmarks/ceiling.py's in-process bound"
    )
    args = parser.parse_args()
    args.clients = [int(n) for n in args.clients.split(",")]
    args.large_clients = [int(n) for n in args.large_clients.split(",")]
    args.sizes = args.sizes.split(",")
    args.modes = args.modes.split(",")
    args.small_seconds = args.small_seconds or (3.0 if args.quick else 20.0)
    args.large_seconds = args.large_seconds or (6.0 if args.quick else 40.0)

    load = os.getloadavg()[0]
    print(f"{os.cpu_count()} cores, load average {load:.2f}", flush=True)
    if load > 1.2 and not args.quick:
        print("WARNING: the machine is busy; these timings will not mean much", flush=True)
    started = time.perf_counter()
    bound = []
    if args.ceiling and not args.quick:  # what batching can gain here at best, before the servers run
        bound = ceiling_lines()
        print("\n".join(bound), flush=True)
    frame = eurusd()
    frames = {size: request_bodies(frame, *shape) for size, shape in SIZES.items()}
    with tempfile.TemporaryDirectory(prefix="kronos-serve-bench-") as tmp:
        model_path = None  # --quick: the bundled model
        if not args.quick:
            model_path = Path(tmp) / "kronos-small-random"
            write_random_pair(model_path, KRONOS_SMALL, TOKENIZER_BASE, seed=0)
        cases = []
        for mode in args.modes:
            print(f"batching {mode}:", flush=True)
            cases += run_mode(mode, model_path, args, frames, Path(tmp))
    model = "the bundled model (tiny)" if args.quick else "Kronos-small shape, random weights"
    print(
        f"\n{model}; {os.cpu_count()} cores; load average {load:.2f} before, {os.getloadavg()[0]:.2f} after; "
        f"{time.perf_counter() - started:.0f} s in all\n"
    )
    print(table(cases))
    print()
    print(mixed_table(cases))
    if bound:
        print("\nThe ceiling (benchmarks/ceiling.py, in-process, same run):\n" + "\n".join(bound))
    small = {(c.clients, c.mode): c for c in cases if c.size == "small" and not c.mix}
    large = {(c.clients, c.mode): c for c in cases if c.size == "large" and not c.mix}
    print()
    for mode in [m for m in args.modes if m != "off"]:
        if (8, mode) in small and (8, "off") in small and small[8, "off"].per_second:
            ratio = small[8, mode].per_second / small[8, "off"].per_second
            print(f"100/20, 8 clients, {mode}-level: {ratio:.1f}x the unbatched throughput (goal: >= 3x)")
        mixed = {(c.size, c.mix): c for c in cases if c.mode == mode and c.mix}
        if len(mixed) == 3:
            ratio = mixed["small", "mixed"].percentile(95) / mixed["small", "alone"].percentile(95)
            print(f"mixed load, {mode}-level: short p95 is {ratio:.1f}x its p95 alone (goal: <= 3x)")
    for clients in sorted({n for n, _ in large}):
        if (clients, "step") in large and (clients, "request") in large:
            step, request = large[clients, "step"], large[clients, "request"]
            print(
                f"400/120, {clients} clients: step {step.per_second:.2f} req/s p95 {step.percentile(95):.2f} s, "
                f"request {request.per_second:.2f} req/s p95 {request.percentile(95):.2f} s"
            )
    if any(c.server_errors for c in cases if c.mode != "off"):
        raise SystemExit("5xx answers with batching on")


if __name__ == "__main__":
    main()
