"""deploy-cpu.sh, deploy-gpu.sh, deploy-hybrid.sh: shellcheck, --help, --dry-run, clear failures
when docker, compose, the engine, a GPU or the NVIDIA runtime is missing, and full runs against a
stub docker whose containers are the real instances and nginx of the routing tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from deploy_support import REPO, clean_env, free_port, require_tool

SCRIPTS = ("deploy-cpu.sh", "deploy-gpu.sh", "deploy-hybrid.sh")
# What the scripts call besides docker and nvidia-smi; everything else is kept off PATH.
HOST_TOOLS = ("bash", "curl", "sed", "grep", "head", "tail", "tr", "sleep", "dirname", "cat")

DOCKER_STUB = """#!/usr/bin/env bash
# A docker client whose engine is a script: logs its arguments, answers what the scripts ask.
echo "docker $*" >> "{log}"
case "$1" in
  info)
    {engine_check}
    if [[ "$*" == *Runtimes* ]]; then echo '{runtimes}'; else echo "Server Version: stub"; fi ;;
  compose)
    shift
    [[ "$1" == version ]] && {{ {compose_version}; }}
    while [[ "$1" == -f || "$1" == --profile ]]; do shift 2; done
    case "$1" in
      port) case "$2" in {port_cases} *) exit 1 ;; esac ;;
      ps) echo "NAME  STATUS"; echo "stub  running (healthy)" ;;
      *) : ;;
    esac ;;
  exec) echo "GPU 0: Stub GPU (UUID: GPU-stub)" ;;
esac
"""
NVIDIA_SMI_STUB = """#!/usr/bin/env bash
for i in $(seq 1 {gpus}); do echo "GPU $((i - 1)): Stub GPU (UUID: GPU-stub-$i)"; done
"""


class Toolbox:
    """A PATH with the host tools the scripts need, plus stub docker / nvidia-smi when asked."""

    def __init__(
        self,
        root: Path,
        *,
        docker: bool = True,
        compose_plugin: bool = True,
        engine: bool = True,
        runtimes: str = '{"nvidia":{"path":"nvidia-container-runtime"},"runc":{"path":"runc"}}',
        gpus: int | None = 1,
        ports: dict[str, int] | None = None,
    ):
        self.bin = root / "bin"
        self.bin.mkdir(parents=True)
        self.log = root / "docker.log"
        self.log.touch()
        for tool in HOST_TOOLS:
            (self.bin / tool).symlink_to(require_tool(tool))
        if docker:
            port_cases = " ".join(f"{service}) echo 127.0.0.1:{port} ;;" for service, port in (ports or {}).items())
            stub = DOCKER_STUB.format(
                log=self.log,
                engine_check="" if engine else self._engine_down(),
                runtimes=runtimes,
                compose_version='echo "Docker Compose version v2.stub"; exit 0'
                if compose_plugin
                else "echo \"docker: 'compose' is not a docker command.\" >&2; exit 1",
                port_cases=port_cases,
            )
            self._script("docker", stub)
        if gpus is not None:
            self._script("nvidia-smi", NVIDIA_SMI_STUB.format(gpus=gpus))
            (self.bin / "seq").symlink_to(require_tool("seq"))

    @staticmethod
    def _engine_down() -> str:
        return 'echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock." >&2; exit 1'

    def _script(self, name: str, text: str) -> None:
        path = self.bin / name
        path.write_text(text)
        path.chmod(0o755)

    def run(self, script: str, *args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
        """The script with the toolbox's PATH; published on loopback unless ``env`` says otherwise (the
        scripts refuse an open API on every interface: test_up_refuses_an_open_api_on_every_interface)."""
        return subprocess.run(
            [str(REPO / script), *args],
            env=clean_env(PATH=str(self.bin), **{"KRONOS_BIND_ADDRESS": "127.0.0.1", **env}),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def docker_calls(self) -> list[str]:
        return self.log.read_text().splitlines()


def compose_calls(box: Toolbox, verb: str) -> list[str]:
    return [call for call in box.docker_calls() if call.startswith("docker compose") and f" {verb}" in call]


def test_shellcheck_clean():
    shellcheck = require_tool("shellcheck")
    result = subprocess.run(
        [shellcheck, "-x", *SCRIPTS, "deploy-common.sh"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_scripts_are_strict_and_executable():
    for script in SCRIPTS:
        text = (REPO / script).read_text()
        assert text.startswith("#!/usr/bin/env bash\n")
        assert "set -euo pipefail" in text
        assert (REPO / script).stat().st_mode & 0o111


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(tmp_path, script):
    result = Toolbox(tmp_path, docker=False, gpus=None).run(script, "--help")
    assert result.returncode == 0
    for word in (
        "up",
        "down",
        "logs",
        "status",
        "--dry-run",
        "--timeout",
        "--open",
        script.replace("deploy-", "docker-compose."),
    ):
        assert word.replace(".sh", ".yml") in result.stdout
    assert ("--with-lb" in result.stdout) == (script == "deploy-hybrid.sh")


@pytest.mark.parametrize("script", SCRIPTS)
def test_dry_run_needs_no_docker_and_prints_the_commands(tmp_path, script):
    result = Toolbox(tmp_path, docker=False, gpus=None).run(script, "--dry-run")
    assert result.returncode == 0, result.stderr
    file = REPO / script.replace("deploy-", "docker-compose.").replace(".sh", ".yml")
    assert f"+ docker compose -f {file} build\n" in result.stdout
    assert f"+ docker compose -f {file} up -d\n" in result.stdout
    assert "/v1/readyz" in result.stdout


def test_dry_run_hybrid_with_lb(tmp_path):
    result = Toolbox(tmp_path, docker=False, gpus=None).run("deploy-hybrid.sh", "--dry-run", "--with-lb", "--no-build")
    assert result.returncode == 0, result.stderr
    assert "--profile loadbalancer up -d" in result.stdout
    assert " build" not in result.stdout
    for expected in ("single ... (expect X-Backend-Used: cpu)", "batch ... (expect X-Backend-Used: gpu)"):
        assert expected in result.stdout
    assert result.stdout.count("X-Kronos-Device") == 2


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("down",), "--profile loadbalancer down"),  # nginx-lb too, or the network stays in use
        (("logs", "nginx-lb"), "--profile loadbalancer logs -f --tail 200 nginx-lb"),
        (("status",), "--profile loadbalancer ps"),
    ],
)
def test_dry_run_subcommands(tmp_path, args, expected):
    result = Toolbox(tmp_path, docker=False, gpus=None).run("deploy-hybrid.sh", "--dry-run", *args)
    assert result.returncode == 0, result.stderr
    assert expected in result.stdout


def test_compose_override_and_v1_fallback(tmp_path):
    box = Toolbox(tmp_path, docker=False, gpus=None)
    (box.bin / "docker-compose").symlink_to(require_tool("bash"))  # any executable will do for detection
    assert "+ docker-compose -f " in box.run("deploy-cpu.sh", "--dry-run").stdout
    result = subprocess.run(
        [str(REPO / "deploy-cpu.sh"), "--dry-run", "down"],
        env=clean_env(PATH=str(box.bin), KRONOS_COMPOSE="podman compose"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "+ podman compose -f " in result.stdout


@pytest.mark.parametrize(
    ("script", "box_options", "message"),
    [
        ("deploy-cpu.sh", {"docker": False, "gpus": None}, "docker not found"),
        ("deploy-gpu.sh", {"docker": False, "gpus": 1}, "docker not found"),
        ("deploy-hybrid.sh", {"docker": False, "gpus": 1}, "docker not found"),
        ("deploy-cpu.sh", {"compose_plugin": False}, "neither 'docker compose'"),
        ("deploy-cpu.sh", {"engine": False}, "cannot reach the Docker engine"),
        ("deploy-gpu.sh", {"gpus": None}, "nvidia-smi not found"),
        ("deploy-hybrid.sh", {"gpus": None}, "nvidia-smi not found"),
        ("deploy-gpu.sh", {"gpus": 0}, "nvidia-smi lists no GPU"),
        ("deploy-gpu.sh", {"runtimes": '{"runc":{"path":"runc"}}'}, "Docker has no NVIDIA runtime"),
        ("deploy-hybrid.sh", {"runtimes": '{"runc":{"path":"runc"}}'}, "NVIDIA Container Toolkit"),
    ],
)
def test_clear_failure_and_nothing_started(tmp_path, script, box_options, message):
    box = Toolbox(tmp_path, **box_options)
    result = box.run(script)
    assert result.returncode != 0
    assert result.stderr.startswith("error: ") and message in result.stderr, result.stderr
    assert compose_calls(box, "up") == [] and compose_calls(box, "build") == []


def test_gpu_checks_come_before_docker(tmp_path):
    box = Toolbox(tmp_path, gpus=None)
    assert "nvidia-smi not found" in box.run("deploy-gpu.sh").stderr
    assert box.docker_calls() == []


def test_bad_arguments(tmp_path):
    box = Toolbox(tmp_path, docker=False, gpus=None)
    for args, message in [
        (("--bogus",), "unknown option '--bogus'"),
        (("--timeout", "soon"), "positive whole number"),
        (("--with-lb",), "deploy-hybrid.sh only"),
        (("up", "down"), "one command at a time"),
    ]:
        result = box.run("deploy-cpu.sh", "--dry-run", *args)
        assert result.returncode != 0 and message in result.stderr, (args, result.stderr)


def test_cpu_up_waits_for_readiness_and_prints_the_url(tmp_path, instances):
    box = Toolbox(tmp_path, gpus=None, ports={"kronos-api-cpu": instances.cpu.port})
    result = box.run("deploy-cpu.sh", "--timeout", "30")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "kronos-api-cpu is ready" in result.stdout
    assert f"kronos-api-cpu: http://127.0.0.1:{instances.cpu.port}" in result.stdout
    file = REPO / "docker-compose.cpu.yml"
    assert compose_calls(box, "build") == [f"docker compose -f {file} build"]
    assert compose_calls(box, "up") == [f"docker compose -f {file} up -d"]


def test_up_gives_up_after_the_timeout_and_shows_the_logs(tmp_path):
    box = Toolbox(tmp_path, gpus=None, ports={"kronos-api-cpu": free_port()})  # nothing listens
    result = box.run("deploy-cpu.sh", "--no-build", "--timeout", "2")
    assert result.returncode == 1
    assert "kronos-api-cpu is not ready after 2s" in result.stderr
    assert compose_calls(box, "logs") and compose_calls(box, "build") == []


def test_hybrid_with_lb_checks_the_routing_through_nginx(tmp_path, instances, balancer):
    ports = {"kronos-api-cpu": instances.cpu.port, "kronos-api-gpu": instances.gpu.port, "nginx-lb": balancer.port}
    box = Toolbox(tmp_path, ports=ports)
    result = box.run("deploy-hybrid.sh", "--with-lb", "--no-build", "--timeout", "30")
    assert result.returncode == 0, result.stdout + result.stderr
    for line in ("single", "batch", "batch + X-Kronos-Device: cpu", "single + X-Kronos-Device: gpu"):
        expected = "gpu" if line in ("batch", "single + X-Kronos-Device: gpu") else "cpu"
        assert f"  {line:<32} -> {expected:<4} ok" in result.stdout
    assert "Routing check: all 4 as expected" in result.stdout
    # Both instances run on CPU here: the script says so instead of passing it off as a GPU.
    assert "kronos-api-gpu is ready but serves on 'cpu'" in result.stderr
    assert compose_calls(box, "up")[0].endswith("--profile loadbalancer up -d")


def test_hybrid_routing_check_fails_loudly_when_routing_is_wrong(tmp_path, instances):
    # "nginx-lb" is really the cpu instance: no X-Backend-Used, so no route is as expected.
    ports = {"kronos-api-cpu": instances.cpu.port, "kronos-api-gpu": instances.gpu.port, "nginx-lb": instances.cpu.port}
    result = Toolbox(tmp_path, ports=ports).run("deploy-hybrid.sh", "--with-lb", "--no-build", "--timeout", "30")
    assert result.returncode == 1
    assert "Routing check: 4 of 4 not as expected" in result.stderr
    assert "no X-Backend-Used" in result.stdout


def test_shared_code_is_not_run_directly():
    result = subprocess.run(["bash", str(REPO / "deploy-common.sh")], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "run one of those" in result.stderr


def test_no_host_docker_leaks_into_the_toolbox(tmp_path):
    # The failure tests mean something only if the toolbox hides the host's docker.
    box = Toolbox(tmp_path, docker=False, gpus=None)
    assert shutil.which("docker", path=str(box.bin)) is None
    assert shutil.which("docker-compose", path=str(box.bin)) is None


@pytest.mark.parametrize(("keys", "expected"), [("key-one, key-two", "key-one"), ("solo", "solo"), ("", "")])
def test_routing_check_uses_the_first_api_key(keys, expected):
    # With KRONOS_API_KEYS set, the routing check's requests must carry a key or get 401s.
    result = subprocess.run(
        [
            "bash",
            "-c",
            f'KRONOS_MODE=hybrid; source "{REPO}/deploy-common.sh"; KRONOS_ROOT=/nonexistent; routing_api_key',
        ],
        env=clean_env(KRONOS_API_KEYS=keys),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected


PODMAN_COMPOSE_STUB = """#!/usr/bin/env bash
# podman-compose as the scripts meet it: `port` prints the host port alone, not HOST:PORT.
echo "podman-compose $*" >> "{log}"
while [[ "$1" == -f || "$1" == --profile ]]; do shift 2; done
case "$1" in
  port) [[ "$2" == kronos-api-cpu ]] && echo {port} ;;
  ps) echo "NAME  STATUS"; echo "kronos-api-cpu  running" ;;
esac
"""


def test_podman_compose_port_form_and_engine(tmp_path, instances):
    box = Toolbox(tmp_path, docker=False, gpus=None)
    box._script("podman-compose", PODMAN_COMPOSE_STUB.format(log=box.log, port=instances.cpu.port))
    box._script("podman", f'echo "podman $*" >> "{box.log}"\n')
    for env in ({"KRONOS_COMPOSE": "podman-compose"}, {}):  # named, and found on PATH without docker
        result = subprocess.run(
            [str(REPO / "deploy-cpu.sh"), "--no-build", "--timeout", "30"],
            env=clean_env(PATH=str(box.bin), KRONOS_BIND_ADDRESS="127.0.0.1", **env),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"kronos-api-cpu: http://127.0.0.1:{instances.cpu.port}" in result.stdout
    calls = box.docker_calls()
    assert "podman info" in calls  # the engine check asks podman, not docker
    assert f"podman-compose -f {REPO / 'docker-compose.cpu.yml'} up -d" in calls


def test_compose_override_files_are_layered(tmp_path):
    box = Toolbox(tmp_path, docker=False, gpus=None)
    result = subprocess.run(
        [str(REPO / "deploy-hybrid.sh"), "--dry-run"],
        env=clean_env(
            PATH=str(box.bin), KRONOS_BIND_ADDRESS="127.0.0.1", KRONOS_COMPOSE_OVERRIDE="/srv/site.yml:/srv/gpu.yml"
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    file = REPO / "docker-compose.hybrid.yml"
    assert f"+ docker compose -f {file} -f /srv/site.yml -f /srv/gpu.yml up -d" in result.stdout


# --- an open API on the network only when asked -----------------------------------------------------


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("bind", [None, "0.0.0.0", "192.0.2.10"])
def test_up_refuses_an_open_api_on_every_interface(tmp_path, script, bind):
    # The compose files publish on KRONOS_BIND_ADDRESS, 0.0.0.0 when unset; no key means no auth.
    box = Toolbox(tmp_path)
    env = {"KRONOS_BIND_ADDRESS": bind} if bind else {"KRONOS_BIND_ADDRESS": ""}
    result = box.run(script, **env)
    assert result.returncode == 1
    assert result.stderr.startswith("error: refusing to publish an open API on "), result.stderr
    assert "KRONOS_API_KEYS" in result.stderr and "--open" in result.stderr
    assert compose_calls(box, "up") == [] and compose_calls(box, "build") == []
    assert "refusing to publish an open API" in box.run(script, "--dry-run", **env).stderr  # also in a dry run


@pytest.mark.parametrize(
    ("args", "env", "warned"),
    [
        (("--open",), {"KRONOS_BIND_ADDRESS": "0.0.0.0"}, True),  # said so: it goes ahead, with a warning
        ((), {"KRONOS_BIND_ADDRESS": "0.0.0.0", "KRONOS_API_KEYS": "key-one"}, False),  # keys: not open
        ((), {"KRONOS_BIND_ADDRESS": "127.0.0.1"}, False),  # this host only
        ((), {"KRONOS_BIND_ADDRESS": "::1"}, False),
    ],
)
def test_up_goes_ahead_with_keys_loopback_or_open(tmp_path, args, env, warned):
    result = Toolbox(tmp_path, docker=False, gpus=None).run("deploy-hybrid.sh", "--dry-run", *args, **env)
    assert result.returncode == 0, result.stderr
    assert ("WARNING: publishing an open API on 0.0.0.0" in result.stderr) == warned


@pytest.mark.parametrize(
    ("dotenv", "ok"),
    [
        ("KRONOS_API_KEYS=key-one\n", True),
        ('KRONOS_API_KEYS="key-one, key-two"\n', True),
        ("KRONOS_BIND_ADDRESS=127.0.0.1\n", True),
        ("KRONOS_API_KEYS=\nKRONOS_LOG_LEVEL=INFO\n", False),
        ("", False),
    ],
)
def test_exposure_check_reads_dotenv_as_compose_does(tmp_path, dotenv, ok):
    (tmp_path / ".env").write_text(dotenv)
    result = subprocess.run(
        ["bash", "-c", f'KRONOS_MODE=cpu; source "{REPO}/deploy-common.sh"; KRONOS_ROOT="{tmp_path}"; check_exposure'],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (result.returncode == 0) == ok, result.stderr
