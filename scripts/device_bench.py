"""The benchmarks on a chosen device, for scripts/device-check.sh: benchmarks/decode.py and
benchmarks/serve.py run on the CPU as written, so this runs them with the device swapped in.

    python scripts/device_bench.py decode --device cuda:0 --shape small [-- decode.py's own flags]
    python scripts/device_bench.py decode --device cuda:0 --shape base -- --repeats 2
    python scripts/device_bench.py serve --device cuda:0 -- --sizes small --clients 8,32,128 --no-ceiling
    python scripts/device_bench.py junit tests.xml [--no-skips]   # a pytest JUnit file's counts; non-zero on failures
    python scripts/device_bench.py env [--device cuda:0]         # versions and where each package comes from

decode: the benchmark's own cases and side-by-side table (the reference's recompute path against the
fast path, same checkpoint, same device), with its predictor built on ``--device`` and, on CUDA, its
peak-memory columns replaced by the growth of ``torch.cuda.max_memory_allocated`` during each call.
``--shape base`` swaps in the Kronos-base shape (d_model 832, 12 layers, 16 heads, ff 2048).
serve: the benchmark's servers get ``KRONOS_DEVICE`` (fallback refused), and each prints the device
its readiness reports. Flags after ``--`` go to the benchmark unchanged.
"""

from __future__ import annotations

import argparse
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"


def _needs(module, *names: str) -> None:
    missing = [n for n in names if not hasattr(module, n)]
    if missing:
        raise SystemExit(f"{module.__file__} no longer has {missing}: update scripts/device_bench.py")


def device_header(device: str) -> None:
    import torch

    line = f"device {device}; torch {torch.__version__}"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SystemExit(f"{device} requested but CUDA is not available here")
        line += f", CUDA {torch.version.cuda}, {torch.cuda.get_device_name(torch.device(device))}"
    print(line, flush=True)


def decode(args: argparse.Namespace, rest: list[str]) -> None:
    sys.path[:0] = [str(ROOT), str(BENCHMARKS)]
    import decode as bench  # benchmarks/decode.py
    import torch

    from model.nn.config import PredictorConfig

    _needs(bench, "KronosPredictor", "KRONOS_SMALL", "run", "main")
    device_header(args.device)
    if args.shape == "base":
        import model.nn.synthetic as synthetic

        base = getattr(synthetic, "KRONOS_BASE", None) or PredictorConfig(
            s1_bits=10, s2_bits=10, n_layers=12, d_model=832, n_heads=16, ff_dim=2048
        )
        bench.KRONOS_SMALL = base  # the config main() builds when not --quick
    print(f"shape {args.shape}: {bench.KRONOS_SMALL}", flush=True)

    predictor_class = bench.KronosPredictor

    def on_device(model, tokenizer, device=None, **kwargs):
        return predictor_class(model, tokenizer, device=args.device, **kwargs)

    bench.KronosPredictor = on_device
    if args.device.startswith("cuda"):
        run = bench.run
        cuda = torch.device(args.device)

        def run_on_gpu(predictor, series, fast):
            torch.cuda.synchronize(cuda)
            torch.cuda.reset_peak_memory_stats(cuda)
            base_bytes = torch.cuda.memory_allocated(cuda)
            seconds, _rss_mib, forecasts = run(predictor, series, fast)
            torch.cuda.synchronize(cuda)
            return seconds, (torch.cuda.max_memory_allocated(cuda) - base_bytes) / 2**20, forecasts

        bench.run = run_on_gpu
        print("peak MiB below: growth of torch.cuda.max_memory_allocated during each call (not host RSS)")
    sys.argv = [str(BENCHMARKS / "decode.py"), *rest]
    bench.main()
    if args.device.startswith("cuda"):
        print(f"GPU memory allocated at most in this process: {torch.cuda.max_memory_allocated(cuda) / 2**20:.0f} MiB")


def serve(args: argparse.Namespace, rest: list[str]) -> None:
    sys.path[:0] = [str(ROOT), str(BENCHMARKS)]
    import httpx
    import serve as bench  # benchmarks/serve.py

    _needs(bench, "MODES", "Server", "main")
    device_header(args.device)
    for env in bench.MODES.values():
        env.update({"KRONOS_DEVICE": args.device, "KRONOS_DEVICE_FALLBACK": "refuse"})
    wait_ready = bench.Server.wait_ready

    def wait_ready_and_say(self):
        wait_ready(self)
        body = httpx.get(self.url + "/v1/readyz", timeout=10).json()
        print(f"  server ready; its readiness reports device {body.get('device')!r}", flush=True)
        if body.get("device") != args.device:
            raise SystemExit(f"the server runs on {body.get('device')!r}, not {args.device!r}")

    bench.Server.wait_ready = wait_ready_and_say
    sys.argv = [str(BENCHMARKS / "serve.py"), *rest]
    bench.main()


def junit(args: argparse.Namespace, rest: list[str]) -> None:
    totals = dict.fromkeys(("tests", "failures", "errors", "skipped"), 0)
    for path in args.files:
        root = ET.parse(path).getroot()
        for suite in root.iter("testsuite"):
            for key in totals:
                totals[key] += int(suite.get(key, 0))
    print(", ".join(f"{v} {k}" for k, v in totals.items()))
    if totals["tests"] == 0:
        raise SystemExit("no test ran")
    if totals["failures"] or totals["errors"]:
        raise SystemExit("some tests failed")
    if args.no_skips and totals["skipped"]:
        raise SystemExit("some tests were skipped (on the GPU, none of these may skip)")


ENV_PACKAGES = (
    "torch",
    "numpy",
    "pandas",
    "pyarrow",
    "PIL",
    "fastapi",
    "starlette",
    "pydantic",
    "uvicorn",
    "safetensors",
    "huggingface_hub",
    "exchange_calendars",
    "sqlalchemy",
    "backtesting",
    "pytest",
    "hypothesis",
    "httpx",
)


def env(args: argparse.Namespace, rest: list[str]) -> None:
    """Which version of each package runs, and from where (the carried wheels or the image)."""
    import importlib
    import platform

    sys.path.insert(0, str(ROOT))
    print(f"python {platform.python_version()} at {sys.executable}")
    failed = []
    for name in (*ENV_PACKAGES, "model", "services.kronos_fastapi"):
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 — report every package, then fail
            failed.append(name)
            print(f"  {name:24} NOT IMPORTABLE: {type(exc).__name__}: {exc}")
            continue
        where = str(Path(module.__file__ or "?").resolve())
        if ".device-site" in where:
            origin = "carried"  # installed from the wheels scripts/device-wheels.sh fetched
        else:
            origin = "repo" if where.startswith(str(ROOT)) else "image"
        print(f"  {name:24} {getattr(module, '__version__', '-'):20} {origin:8} {where}")
    device_header(args.device)
    if failed:
        raise SystemExit(f"not importable: {failed}")


def main() -> None:
    argv = sys.argv[1:]
    rest: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, rest = argv[:at], argv[at + 1 :]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("decode", help="benchmarks/decode.py on --device")
    p.add_argument("--device", default="cuda:0")
    p.add_argument("--shape", choices=["small", "base"], default="small")
    p.set_defaults(run=decode)
    p = commands.add_parser("serve", help="benchmarks/serve.py with its servers on --device")
    p.add_argument("--device", default="cuda:0")
    p.set_defaults(run=serve)
    p = commands.add_parser("env", help="package versions and origins; fails without the device")
    p.add_argument("--device", default="cuda:0")
    p.set_defaults(run=env)
    p = commands.add_parser("junit", help="a pytest JUnit XML file's counts")
    p.add_argument("files", nargs="+")
    p.add_argument("--no-skips", action="store_true", help="a skipped test counts as a failure")
    p.set_defaults(run=junit)
    args = parser.parse_args(argv)
    args.run(args, rest)


if __name__ == "__main__":
    main()
