"""scripts/device-wheels.sh and scripts/device-check.sh, as far as a machine without a GPU can check them:
shellcheck, the dry-run plan and its time bounds, a run whose steps fail (the others still run, the
summary is written, non-zero exit), the resolution of the wheels for CPython 3.12 when the package
index is reachable, and the Python drivers the check runs (the out-of-memory driver in its simulated
mode, the benchmark wrapper's hooks into benchmarks/decode.py and benchmarks/serve.py)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

ROOT = Path(__file__).resolve().parents[1]
WHEELS = ROOT / "scripts" / "device-wheels.sh"
CHECK = ROOT / "scripts" / "device-check.sh"
SCRIPTS = [WHEELS, CHECK]
LIMIT_S = 480  # the whole device check stays under 8 minutes
STEPS = [
    "install",
    "nvidia-smi-before",
    "gpu-tests",
    "service-cuda",
    "oom",
    "decode-small",
    "decode-base",
    "decode-bf16",
    "serve",
    "universe",
    "nvidia-smi-after",
]
# CI sets this: a missing tool is then a failure, never a silent skip (as in tests/deploy).
REQUIRE_TOOLS = os.environ.get("KRONOS_TEST_REQUIRE_TOOLS") == "1"


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed"
        if REQUIRE_TOOLS:
            pytest.fail(f"{message} (KRONOS_TEST_REQUIRE_TOOLS=1: these tests may not skip)")
        pytest.skip(message)
    return path


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KRONOS_") and k != "OUT"}
    env.update(extra)
    return env


def test_shellcheck_clean():
    shellcheck = require_tool("shellcheck")
    result = subprocess.run(
        [shellcheck, "-x", *map(str, SCRIPTS)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_scripts_are_strict_and_executable():
    for script in SCRIPTS:
        text = script.read_text()
        assert text.startswith("#!/usr/bin/env bash\n")
        assert "set -euo pipefail" in text
        assert script.stat().st_mode & 0o111, f"{script.name} is not executable"


def dry_run(tmp_path: Path) -> str:
    out = tmp_path / "out"
    out.mkdir()
    result = subprocess.run(
        ["bash", str(CHECK), "--dry-run"],
        cwd=tmp_path,
        env=clean_env(OUT=str(out)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert list(out.iterdir()) == [], "--dry-run wrote results"
    return result.stdout


def test_dry_run_lists_every_step_with_a_bound_under_eight_minutes(tmp_path):
    plan = dry_run(tmp_path)
    steps = re.findall(r"^(STEP|SKIP) (\S+) bound=(\d+)s(?: reserve=(\d+)s)? :: (.+)$", plan, re.M)
    assert [name for _, name, *_ in steps] == STEPS, plan
    for kind, name, bound, reserve, note in steps:
        if kind == "STEP":
            assert int(bound) > 0, name
        else:  # a skipped step says why, and what it would be bounded by
            assert int(bound) == 0 and int(reserve) > 0 and note.strip(), name
    total = re.search(r"^TOTAL bound=(\d+)s worst=(\d+)s limit=(\d+)s", plan, re.M)
    assert total, plan
    grace = int(re.search(r"timeout -k (\d+) BOUND", plan).group(1))
    bounds = [int(b) for kind, _, b, _, _ in steps if kind == "STEP"]
    reserves = [int(b) if kind == "STEP" else int(r) for kind, _, b, r, _ in steps]
    assert int(total.group(1)) == sum(b + grace for b in bounds)
    assert int(total.group(2)) == sum(b + grace for b in reserves)
    assert int(total.group(3)) == LIMIT_S
    assert sum(b + grace for b in reserves) < LIMIT_S  # even the steps now skipped would fit


def test_dry_run_commands_do_what_the_issue_asks(tmp_path):
    plan = dry_run(tmp_path)
    blocks = dict(re.findall(r"^(?:STEP|SKIP) (\S+) .*\n((?:    .*\n)*)", plan, re.M))
    assert "--no-index --no-deps" in blocks["install"] and "--target .device-site" in blocks["install"]
    assert "nvidia-smi" in blocks["nvidia-smi-before"] and "nvidia-smi" in blocks["nvidia-smi-after"]
    assert "-m gpu" in blocks["gpu-tests"] and "--no-skips" in blocks["gpu-tests"]
    assert "KRONOS_DEVICE=$DEVICE" in blocks["service-cuda"]
    assert "test_device_readiness.py" in blocks["service-cuda"] and "test_devices_and_cli.py" in blocks["service-cuda"]
    assert "device_oom_check.py --device $DEVICE" in blocks["oom"]
    assert "--shape small" in blocks["decode-small"] and "--shape base" in blocks["decode-base"]
    assert "--clients 8,32,128" in blocks["serve"] and "--modes step,request,off" in blocks["serve"]
    if (ROOT / "benchmarks" / "universe.py").exists():
        assert "benchmarks/universe.py --device $DEVICE" in blocks["universe"]
    # Every file a step names exists.
    for path in set(re.findall(r"\b((?:scripts|benchmarks|tests)/[\w/.-]+\.py)\b", plan)):
        assert (ROOT / path).exists() or path.endswith("universe.py"), path


def test_a_failing_step_does_not_stop_the_others_and_the_summary_is_written(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    result = subprocess.run(
        ["bash", str(CHECK), "--only", "nvidia-smi-before"],
        cwd=tmp_path,
        env=clean_env(OUT=str(out), PYTHON=str(tmp_path / "no-such-python")),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    summary = json.loads((out / "summary.json").read_text())
    status = {s["step"]: s["status"] for s in summary["steps"]}
    assert list(status) == STEPS
    assert status["install"].startswith("FAILED")  # no wheels or no python: it fails ...
    assert status["nvidia-smi-before"] != "not selected"  # ... and the next step still runs
    assert status["decode-small"] == "not selected"
    for step in summary["steps"]:
        if step["status"] not in ("not selected", "skipped"):
            assert isinstance(step["seconds"], float) and step["bound_s"] > 0
    table = (out / "summary.md").read_text()
    assert "| step | status | seconds | bound s |" in table and "| install | FAILED" in table
    files = sorted(p.name for p in out.iterdir())
    assert files == ["logs.tar.gz", "steps.log", "summary.json", "summary.md"]  # the device tool brings back 8
    with tarfile.open(out / "logs.tar.gz") as logs:
        assert "./install.log" in logs.getnames()


def runtime_requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {canonicalize_name(r.name): r for r in map(Requirement, project["dependencies"])}


def shell_array(script: Path, name: str) -> list[str]:
    match = re.search(rf"^{name}=\(([^)]*)\)", script.read_text(), re.M)
    assert match, name
    return match.group(1).split()


def compatible_with_cp312_manylinux_x86_64(wheel: str) -> bool:
    _, _, _, tags = parse_wheel_filename(wheel)
    for tag in tags:
        python_ok = tag.interpreter in ("py3", "py2.py3", "cp312") or (
            tag.abi == "abi3" and tag.interpreter.startswith("cp3") and int(tag.interpreter[3:]) <= 12
        )
        platform_ok = tag.platform == "any" or (
            tag.platform.startswith("manylinux") and tag.platform.endswith("x86_64")
        )
        if python_ok and tag.abi in ("none", "abi3", "cp312") and platform_ok:
            return True
    return False


def index_reachable() -> str | None:
    """Why pip's package index cannot be reached from here, or None when it answers."""
    url = os.environ.get("PIP_INDEX_URL", "")
    if not url:
        got = subprocess.run(
            [sys.executable, "-m", "pip", "config", "get", "global.index-url"], capture_output=True, text=True
        )
        url = got.stdout.strip() if got.returncode == 0 else ""
    if not url:
        from pip._internal.models.index import PyPI  # pip's default index

        url = PyPI.simple_url
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/fastapi/", timeout=20) as response:
            response.read(1)
    except (OSError, urllib.error.URLError) as exc:
        return f"pip's index {url} did not answer ({exc})"
    return None


def test_device_wheels_resolve_every_needed_package_for_python_312():
    unreachable = index_reachable()
    if unreachable:
        pytest.skip(f"{unreachable}: the resolution for CPython 3.12 is not checked")
    try:
        result = subprocess.run(
            ["bash", str(WHEELS), "--resolve-only"],
            cwd=ROOT,
            env=clean_env(PIP_DEFAULT_TIMEOUT="20", PIP_RETRIES="1"),
            capture_output=True,
            text=True,
            timeout=300,
        )
    except subprocess.TimeoutExpired:
        pytest.skip("the package index did not answer within 300 s: resolution not checked")
    assert result.returncode == 0, result.stdout + result.stderr
    resolved = {}
    for line in result.stdout.splitlines()[1:]:
        pin, wheel = line.split()
        name, version = pin.split("==")
        resolved[name] = (version, wheel)

    never = [n for n in resolved if n == "torch" or n == "triton" or n.startswith(("nvidia-", "cuda-"))]
    assert never == [], "torch and its CUDA stack come from the image"
    provided = {canonicalize_name(n) for n in shell_array(WHEELS, "IMAGE_PROVIDED")}
    assert not provided & set(resolved)
    needed = set(runtime_requirements()) - {"torch"} - provided
    needed |= {
        canonicalize_name(n) for n in shell_array(WHEELS, "TEST_PACKAGES") + shell_array(WHEELS, "DATA_PACKAGES")
    }
    needed |= {"starlette", "pydantic-core", "bokeh", "uvloop", "httptools"}  # what the above pull in
    assert needed <= set(resolved), f"not resolved: {sorted(needed - set(resolved))}"
    for name, (version, wheel) in resolved.items():
        assert compatible_with_cp312_manylinux_x86_64(wheel), f"{wheel} does not install on CPython 3.12 x86_64"
        assert (
            canonicalize_name(parse_wheel_filename(wheel)[0]) == name and str(parse_wheel_filename(wheel)[1]) == version
        )
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", (ROOT / "constraints.txt").read_text(), re.M))
    for name, version in pins.items():
        if canonicalize_name(name) in resolved:
            assert resolved[canonicalize_name(name)][0] == version, f"{name} is not at its pin {version}"


def test_the_out_of_memory_driver_in_its_simulated_mode(tmp_path):
    report_path = tmp_path / "oom.json"
    result = subprocess.run(
        [sys.executable, "scripts/device_oom_check.py", "--simulate", "--out", str(report_path)],
        cwd=ROOT,
        env=clean_env(OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(report_path.read_text())
    assert report["ok"] and report["simulated"] and report["first_attempt_out_of_memory"]
    assert report["answered"] == report["series"] == report["equal_to_reference"]
    assert report["splitting_module"].startswith("services.kronos_fastapi.")
    assert report["model_calls"] > 1 and all(s["out_of_memory"] for s in report["splits"])
    assert "injected (simulated)" in result.stdout


def test_the_out_of_memory_driver_refuses_a_cpu_without_simulate():
    result = subprocess.run(
        [sys.executable, "scripts/device_oom_check.py", "--device", "cpu"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and "needs a CUDA device" in result.stderr


def test_the_benchmark_wrapper_still_fits_the_benchmarks():
    """device_bench.py swaps the device into benchmarks/decode.py and serve.py through these names."""
    code = (
        "import sys; sys.path[:0] = ['benchmarks', '.']\n"
        "import decode, serve\n"
        "for m, names in ((decode, ['KronosPredictor', 'KRONOS_SMALL', 'run', 'main']),"
        " (serve, ['MODES', 'Server', 'main'])):\n"
        "    missing = [n for n in names if not hasattr(m, n)]\n"
        "    assert not missing, (m.__name__, missing)\n"
        "assert hasattr(serve.Server, 'wait_ready') and set(serve.MODES) == {'step', 'request', 'off'}\n"
        "import inspect; assert 'KRONOS_SMALL' in inspect.getsource(decode.main)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_the_junit_counter(tmp_path):
    def junit(**counts: int) -> Path:
        path = tmp_path / f"{'-'.join(f'{k}{v}' for k, v in counts.items())}.xml"
        attrs = " ".join(f'{k}="{v}"' for k, v in counts.items())
        path.write_text(f'<testsuites><testsuite name="pytest" {attrs}/></testsuites>')
        return path

    def run(*args) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "scripts/device_bench.py", "junit", *map(str, args)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert run(junit(tests=3, failures=0, errors=0, skipped=1)).returncode == 0
    assert run(junit(tests=3, failures=0, errors=0, skipped=1), "--no-skips").returncode != 0
    assert run(junit(tests=3, failures=1, errors=0, skipped=0)).returncode != 0
    assert run(junit(tests=0, failures=0, errors=0, skipped=0)).returncode != 0
