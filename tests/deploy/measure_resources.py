"""Measure one CPU instance's memory, CPU and latency: the figures in DEPLOYMENT_DEVICE_OPTIONS.md.

    python tests/deploy/measure_resources.py [--shape bundled|small|base] [--models 1|2] [--repeats 5] [--threads 2]

Starts a real instance on a loopback port (as the container runs it), with the bundled model or a
random-weight checkpoint of the published Kronos-small / Kronos-base shape (same size and speed
as the real weights; forecasts are noise), and reports resident memory after start-up (the model
loaded, warmed up, its KV slab allocated: what an idle instance holds) and at its peak under load,
CPU time, and latency of a few request sizes. ``--models 2`` serves the checkpoint twice
(KRONOS_MODELS, two model threads and two KV slabs) and sends every request to both. Not a test:
pytest skips it.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil
from deploy_support import ServiceInstance

from model.nn.config import PredictorConfig
from model.nn.synthetic import KRONOS_SMALL, TOKENIZER_BASE, write_random_pair

# Kronos-base as published: d_model 832, 12 layers, ff_dim 2048 (heads: 832 = 16 x 52).
KRONOS_BASE = PredictorConfig(s1_bits=10, s2_bits=10, n_layers=12, d_model=832, n_heads=16, ff_dim=2048)
SHAPES = {"small": KRONOS_SMALL, "base": KRONOS_BASE}


def candles(rows: int) -> list[list[float]]:
    return [[100 + i % 7, 105 + i % 7, 98 + i % 7, 102 + i % 7, 1000.0 + i] for i in range(rows)]


REQUESTS = {
    "guide single (2 rows, pred_len 10)": (
        "/v1/predict/single",
        {"data": [[100.0, 105.0, 98.0, 102.0], [102.0, 108.0, 101.0, 107.0]], "pred_len": 10},
    ),
    "single (400 rows, pred_len 120)": ("/v1/predict/single", {"data": candles(400), "pred_len": 120, "seed": 1}),
    "batch of 4 (400 rows, pred_len 120)": (
        "/v1/predict/batch",
        {"batch": [{"data": candles(400), "pred_len": 120, "seed": i} for i in range(4)]},
    ),
}


def cpu_seconds(process: psutil.Process) -> float:
    """CPU time the service process used so far (all its threads): less sensitive than wall time
    to other jobs on the machine."""
    times = process.cpu_times()
    return times.user + times.system


class PeakRss:
    """Samples the process's resident memory every 50 ms while running."""

    def __init__(self, pid: int):
        self.process = psutil.Process(pid)
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def _for_model(body: dict, name: str) -> dict:
    """The request for model ``name`` (a batch names it in every item)."""
    if "batch" in body:
        return {"batch": [{**item, "model": name} for item in body["batch"]]}
    return {**body, "model": name}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=["bundled", "small", "base"], default="bundled")
    parser.add_argument("--models", type=int, choices=[1, 2], default=1, help="models served (KRONOS_MODELS)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", default="2", help="OMP_NUM_THREADS (the CPU compose default, KRONOS_CPU_THREADS)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        settings = {"KRONOS_DEVICE": "cpu", "KRONOS_REQUEST_TIMEOUT_S": "600", "OMP_NUM_THREADS": args.threads}
        source = "bundled"
        if args.shape != "bundled":
            folder = Path(tmp) / f"kronos-{args.shape}-random"
            write_random_pair(folder, SHAPES[args.shape], TOKENIZER_BASE, seed=0)
            settings["KRONOS_MODEL_PATH"] = source = str(folder)
        names = ["first", "second"][: args.models]
        if args.models > 1:
            settings["KRONOS_MODELS"] = ",".join(f"{name}={source}" for name in names)
        instance = ServiceInstance(f"measure-{args.shape}", Path(tmp))
        started = time.monotonic()
        instance.start_on_a_free_port(**settings)
        try:
            instance.wait_ready(timeout_s=300)
            ready_s = time.monotonic() - started
            process = psutil.Process(instance.process.process.pid)
            # Every model ready (readyz follows the default one only).
            deadline = time.monotonic() + 300
            while any(m["state"] != "ready" for m in httpx.get(f"{instance.url}/v1/models").json()["models"]):
                assert time.monotonic() < deadline, "a model never became ready"
                time.sleep(0.2)
            ready_s = time.monotonic() - started
            rss_ready = process.memory_info().rss
            slab = httpx.get(f"{instance.url}/v1/readyz").json()["batching"]["kv_cache_bytes"]
            peak = PeakRss(process.pid)
            print(
                f"shape {args.shape}, {args.models} model(s), OMP_NUM_THREADS={args.threads}: "
                f"ready in {ready_s:.1f} s, RSS after start-up {rss_ready / 2**20:.0f} MiB "
                f"(KV slab {slab / 2**20:.0f} MiB per model)"
            )
            with httpx.Client(base_url=instance.url, timeout=900) as client:
                for label, (path, body) in REQUESTS.items():
                    times, cpu_times = [], []
                    for _ in range(args.repeats):
                        for name in names:
                            named = body if args.models == 1 else _for_model(body, name)
                            cpu0, t0 = cpu_seconds(process), time.perf_counter()
                            response = client.post(path, json=named)
                            times.append(time.perf_counter() - t0)
                            cpu_times.append(cpu_seconds(process) - cpu0)
                            response.raise_for_status()
                    print(
                        f"  {label}: wall median {statistics.median(times):.2f} s "
                        f"(min {min(times):.2f}, max {max(times):.2f}); "
                        f"CPU time median {statistics.median(cpu_times):.2f} s"
                    )
            print(f"  peak RSS under load {peak.stop() / 2**20:.0f} MiB; cores {psutil.cpu_count()}")
        finally:
            instance.stop()


if __name__ == "__main__":
    main()
