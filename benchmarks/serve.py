"""The service under load: N concurrent clients against the real server, batching on and off, side by side.

    python benchmarks/serve.py            # the cases below, about 7 minutes on 2 cores
    python benchmarks/serve.py --quick    # the bundled tiny model, 3-6 s per case: a correctness run

For each mode the script starts the real service (``python -m services.kronos_fastapi``) on a free
127.0.0.1 port: batching on (the default settings) or off (``KRONOS_MAX_BATCH_SIZE=1``). The model
is Kronos-small-shaped with random weights (written to a temporary folder and passed as
``KRONOS_MODEL_PATH``); the requests are windows of real EURUSD hourly candles (backtesting's
EURUSD.csv) with their timestamps, lookback 100 / pred_len 20 and lookback 400 / pred_len 120, one
sample path each. N closed-loop clients (1, 8, 32) each send a request, wait for the answer and send
the next, for a fixed time per case; requests still unanswered at the end are abandoned (the server
drops them at its next decode step) and counted as "unfinished". requests/s counts the answers
(status 200) within that time; latencies are those of the answers.

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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from decode import eurusd  # noqa: E402 — benchmarks/decode.py: EURUSD candles from the backtesting package

from model.synthetic import KRONOS_SMALL, TOKENIZER_BASE, write_random_pair  # noqa: E402

SIZES = {"small": (100, 20), "large": (400, 120)}  # lookback, pred_len
MODES = {"on": {}, "off": {"KRONOS_MAX_BATCH_SIZE": "1"}}
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
        """The unlabelled samples of /v1/metrics (enough for the queue and batch counters)."""
        values = {}
        for line in httpx.get(self.url + "/v1/metrics", timeout=30).text.splitlines():
            if line and not line.startswith("#") and "{" not in line:
                name, value = line.rsplit(" ", 1)
                values[name] = float(value)
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


async def drive(url: str, bodies: list[bytes], case: Case, pred_len: int) -> None:
    """N closed-loop clients for ``case.seconds``; what is unanswered at the end is abandoned."""
    limits = httpx.Limits(max_connections=case.clients + 2, max_keepalive_connections=case.clients + 2)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        started = time.perf_counter()
        end = started + case.seconds
        checked = False

        async def one_client(index: int) -> None:
            nonlocal checked
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
                if status == "200" and not checked:  # one full check per case: pred_len forecast rows
                    checked = True
                    if len(response.json()["forecast"]) != pred_len:
                        status = "wrong answer"
                case.statuses[status] = case.statuses.get(status, 0) + 1
                if status == "200":
                    case.latencies.append(finished - begun)

        tasks = [asyncio.create_task(one_client(i)) for i in range(case.clients)]
        _, pending = await asyncio.wait(tasks, timeout=case.seconds + 0.5)
        case.unfinished += len(pending)
        for task in pending:
            task.cancel()  # closes the connection: the server drops the request
        await asyncio.gather(*pending, return_exceptions=True)


def run_mode(mode: str, model_path: Path, args, frames: dict[str, list[bytes]], logs: Path) -> list[Case]:
    env = {"KRONOS_RATE_LIMIT_PER_MINUTE": "0", "KRONOS_LOG_LEVEL": "WARNING", **MODES[mode]}
    if model_path is not None:
        env["KRONOS_MODEL_PATH"] = str(model_path)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    server = Server(env, logs / f"server-{mode}.log")
    cases = []
    try:
        server.wait_ready()
        for size in SIZES:  # warm-up: one request of each shape
            httpx.post(server.url + "/v1/predict/single", content=frames[size][0], headers=HEADERS, timeout=300)
        for size in args.sizes:
            pred_len = SIZES[size][1]
            for clients in args.clients:
                seconds = args.small_seconds if size == "small" else args.large_seconds
                case = Case(size, clients, mode, seconds)
                server.settle()
                before = server.metrics()
                asyncio.run(drive(server.url, frames[size], case, pred_len))
                after = server.metrics()
                batches = after["kronos_batch_size_count"] - before["kronos_batch_size_count"]
                if batches:
                    case.series_per_batch = (after["kronos_batch_size_sum"] - before["kronos_batch_size_sum"]) / batches
                print(
                    f"  {size:5} N={clients:<3} batching {mode:3}: {case.per_second:6.2f} req/s, "
                    f"p50 {case.percentile(50):6.2f} s, {case.series_per_batch:4.1f} series/batch, "
                    f"statuses {case.statuses}, unfinished {case.unfinished}, load {os.getloadavg()[0]:.2f}",
                    flush=True,
                )
                cases.append(case)
    finally:
        server.stop()
    return cases


def table(cases: list[Case]) -> str:
    lines = [
        "| request | clients | batching | requests/s | speed-up | p50 s | p95 s | p99 s | 200 | 5xx | other errors "
        "| unfinished | series/batch |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    by_key = {(c.size, c.clients, c.mode): c for c in cases}
    for size, (lookback, pred_len) in SIZES.items():
        for clients in sorted({c.clients for c in cases}):
            off = by_key.get((size, clients, "off"))
            for mode in ("on", "off"):
                c = by_key.get((size, clients, mode))
                if c is None:
                    continue
                speed_up = f"{c.per_second / off.per_second:.1f}x" if mode == "on" and off and off.per_second else ""
                lines.append(
                    f"| {lookback}/{pred_len} | {clients} | {mode} | {c.per_second:.2f} | {speed_up} | "
                    f"{c.percentile(50):.2f} | {c.percentile(95):.2f} | {c.percentile(99):.2f} | {c.ok} | "
                    f"{c.server_errors} | {c.other_errors} | {c.unfinished} | {c.series_per_batch:.1f} |"
                )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the bundled tiny model, 3-6 s per case")
    parser.add_argument("--clients", default="1,8,32", help="concurrent clients per case, comma-separated")
    parser.add_argument("--sizes", default="small,large", help="request sizes: small (100/20), large (400/120)")
    parser.add_argument("--modes", default="on,off", help="batching on, off, or both")
    parser.add_argument("--small-seconds", type=float, help="seconds per case, lookback 100 (default 20; quick 3)")
    parser.add_argument("--large-seconds", type=float, help="seconds per case, lookback 400 (default 40; quick 6)")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS of the server (default: torch's choice)")
    args = parser.parse_args()
    args.clients = [int(n) for n in args.clients.split(",")]
    args.sizes = args.sizes.split(",")
    args.modes = args.modes.split(",")
    args.small_seconds = args.small_seconds or (3.0 if args.quick else 20.0)
    args.large_seconds = args.large_seconds or (6.0 if args.quick else 40.0)

    load = os.getloadavg()[0]
    print(f"{os.cpu_count()} cores, load average {load:.2f}", flush=True)
    if load > 1.2 and not args.quick:
        print("WARNING: the machine is busy; these timings will not mean much", flush=True)
    started = time.perf_counter()
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
    on = [c for c in cases if c.mode == "on"]
    small = {(c.clients, c.mode): c for c in cases if c.size == "small"}
    if (8, "on") in small and (8, "off") in small and small[8, "off"].per_second:
        ratio = small[8, "on"].per_second / small[8, "off"].per_second
        print(f"\nlookback 100 / pred_len 20, 8 clients: batching gives {ratio:.1f}x the throughput (target: 3x)")
    if any(c.server_errors for c in on):
        raise SystemExit("5xx answers with batching on")


if __name__ == "__main__":
    main()
