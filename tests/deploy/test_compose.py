"""The three compose files, as a real Compose implementation reads them (`docker-compose config`,
which parses and interpolates without a Docker engine): names, devices, limits, ports, mounts,
profiles, health checks, and that the shell and .env reach the instances."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from deploy_support import REPO, clean_env, require_tool

from services.kronos_fastapi.drain import DRAIN_MARGIN_S
from services.kronos_fastapi.settings import Settings

COMPOSE_FILES = ("docker-compose.cpu.yml", "docker-compose.gpu.yml", "docker-compose.hybrid.yml")
BUNDLED_MOUNT = "./model/bundled/kronos-demo"
# Set by the image (Dockerfile ENV) for every container; not the operator's to change per file.
FIXED_BY_IMAGE = {"KRONOS_HOST", "KRONOS_PORT"}
SETTING_NAMES = {f"KRONOS_{name.upper()}" for name in Settings.model_fields}
# Every file's optional profile "monitoring" (tests/deploy/test_monitoring.py checks them), and the
# "jobs" profile's shared job store (tests/deploy/test_jobs_deploy.py).
MONITORING = {"prometheus", "alertmanager", "grafana"}
OPTIONAL = MONITORING | {"postgres"}


@pytest.fixture(scope="module")
def docker_compose() -> str:
    return require_tool("docker-compose")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the files compose reads, so a developer's own ./.env cannot leak into a test."""
    for name in (*COMPOSE_FILES, "nginx.conf"):
        shutil.copy(REPO / name, tmp_path / name)
    return tmp_path


def config(
    docker_compose: str, project: Path, file: str, env: dict[str, str] | None = None, profile: str | None = None
) -> dict:
    argv = [docker_compose, "-f", str(project / file)]
    if profile:
        argv += ["--profile", profile]
    result = subprocess.run(
        [*argv, "config"], cwd=project, env=clean_env(**(env or {})), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def volume(service: dict, target: str) -> tuple[str, str]:
    """(host source, mode) of the bind mount at ``target`` (compose 1.29 prints source:target:mode)."""
    for entry in service["volumes"]:
        source, mount, *mode = entry.split(":")
        if mount == target:
            return source, (mode or ["rw"])[0]
    raise AssertionError(f"nothing mounted at {target}: {service['volumes']}")


def published(service: dict) -> dict[int, str]:
    """container port -> "host_ip:host_port" (compose 1.29 prints host_ip:host_port:container/tcp)."""
    result = {}
    for entry in service["ports"]:
        host_ip, host_port, container = entry.split(":")
        result[int(container.split("/")[0])] = f"{host_ip}:{host_port}"
    return result


def check_instance(service: dict, project: Path, name: str, limits: tuple[float, str], reservations: tuple[str, str]):
    assert service["container_name"] == name
    assert service["image"].startswith("kronos-service:")
    assert service["build"]["context"] == str(project)
    assert service["restart"] == "unless-stopped"
    env = service["environment"]
    assert env["KRONOS_INSTANCE_NAME"] == name
    assert env["KRONOS_MODEL_PATH"] == "/models"
    resources = service["deploy"]["resources"]
    assert (float(resources["limits"]["cpus"]), resources["limits"]["memory"]) == limits
    # torch's thread count is bounded by the CPU limit (not the host's core count).
    assert 1 <= int(env["OMP_NUM_THREADS"]) <= limits[0]
    assert (str(resources["reservations"]["cpus"]), resources["reservations"]["memory"]) == reservations
    # Read-only model mount; without KRONOS_MODEL_HOST_PATH, the bundled model of this checkout.
    source, mode = volume(service, "/models")
    assert mode == "ro"
    assert source == str(project / BUNDLED_MOUNT)
    assert (REPO / BUNDLED_MOUNT / "config.json").is_file()
    assert (REPO / BUNDLED_MOUNT / "tokenizer" / "config.json").is_file()
    # Healthy means ready to forecast. Shell form: Podman's Docker API splits an exec-form check's
    # arguments (tests/deploy/test_containers.py runs these checks for real).
    health = service["healthcheck"]
    assert health["test"][0] == "CMD-SHELL" and "http://127.0.0.1:8000/v1/readyz" in " ".join(health["test"])


def test_cpu_file(docker_compose, project):
    services = config(docker_compose, project, "docker-compose.cpu.yml")["services"]
    assert [name for name in services if name not in OPTIONAL] == ["kronos-api-cpu"]
    cpu = services["kronos-api-cpu"]
    check_instance(cpu, project, "kronos-api-cpu", (2.0, "4G"), ("1.0", "2G"))
    assert cpu["environment"]["KRONOS_DEVICE"] == "cpu"
    assert cpu["build"]["args"]["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert published(cpu) == {8000: "0.0.0.0:8000"}
    assert "devices" not in cpu["deploy"]["resources"]["reservations"]


def test_cpu_torch_index_is_a_variable(docker_compose, project):
    env = {"KRONOS_CPU_TORCH_INDEX_URL": "https://mirror.example/torch-cpu/simple"}
    for file in ("docker-compose.cpu.yml", "docker-compose.hybrid.yml"):
        cpu = config(docker_compose, project, file, env)["services"]["kronos-api-cpu"]
        assert cpu["build"]["args"]["TORCH_INDEX_URL"] == env["KRONOS_CPU_TORCH_INDEX_URL"]


def test_gpu_file_defaults(docker_compose, project):
    services = config(docker_compose, project, "docker-compose.gpu.yml")["services"]
    assert [name for name in services if name not in OPTIONAL] == ["kronos-api-gpu"]
    gpu = services["kronos-api-gpu"]
    check_instance(gpu, project, "kronos-api-gpu", (4.0, "8G"), ("2.0", "4G"))
    assert gpu["environment"]["KRONOS_DEVICE"] == "cuda:0"
    assert gpu["environment"]["NVIDIA_VISIBLE_DEVICES"] == "0"
    assert gpu["deploy"]["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "device_ids": ["0"], "capabilities": ["gpu"]}
    ]
    assert published(gpu) == {8000: "0.0.0.0:8000"}


def test_gpu_file_picks_another_gpu(docker_compose, project):
    env = {"NVIDIA_VISIBLE_DEVICES": "1", "KRONOS_DEVICE": "cuda:0", "KRONOS_GPU_PORT": "8100"}
    gpu = config(docker_compose, project, "docker-compose.gpu.yml", env)["services"]["kronos-api-gpu"]
    assert gpu["environment"]["NVIDIA_VISIBLE_DEVICES"] == "1"
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"] == ["1"]
    assert gpu["environment"]["KRONOS_DEVICE"] == "cuda:0"  # host GPU 1 is cuda:0 inside
    assert published(gpu) == {8000: "0.0.0.0:8100"}


def test_hybrid_file(docker_compose, project):
    services = config(docker_compose, project, "docker-compose.hybrid.yml", profile="loadbalancer")["services"]
    assert set(services) - OPTIONAL == {"kronos-api-cpu", "kronos-api-gpu", "nginx-lb"}
    cpu, gpu, lb = services["kronos-api-cpu"], services["kronos-api-gpu"], services["nginx-lb"]
    check_instance(cpu, project, "kronos-api-cpu", (2.0, "4G"), ("1.0", "2G"))
    check_instance(gpu, project, "kronos-api-gpu", (4.0, "8G"), ("2.0", "4G"))
    assert cpu["environment"]["KRONOS_DEVICE"] == "cpu"
    assert gpu["environment"]["KRONOS_DEVICE"] == "cuda:0"
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
    assert (published(cpu), published(gpu)) == ({8000: "0.0.0.0:8000"}, {8000: "0.0.0.0:8001"})
    # Both instances believe the balancer's X-Forwarded-For (rate limits per real client).
    assert cpu["environment"]["KRONOS_TRUSTED_PROXIES"] == gpu["environment"]["KRONOS_TRUSTED_PROXIES"] == "nginx-lb"

    assert lb["container_name"] == "nginx-lb"
    assert lb["profiles"] == ["loadbalancer"]
    assert "profiles" not in cpu and "profiles" not in gpu
    assert published(lb) == {8080: "0.0.0.0:8080"}
    assert volume(lb, "/etc/nginx/nginx.conf") == (str(project / "nginx.conf"), "ro")
    # Not both healthy: a GPU instance that never gets ready must not keep the balancer from starting.
    assert lb["depends_on"] == {
        "kronos-api-cpu": {"condition": "service_healthy"},
        "kronos-api-gpu": {"condition": "service_started"},
    }


def test_hybrid_device_variable_moves_only_the_gpu_instance(docker_compose, project):
    env = {"KRONOS_DEVICE": "cuda:1", "KRONOS_LB_PORT": "9090", "KRONOS_CPU_THREADS": "2"}
    services = config(docker_compose, project, "docker-compose.hybrid.yml", env, "loadbalancer")["services"]
    assert services["kronos-api-cpu"]["environment"]["OMP_NUM_THREADS"] == "2"
    assert services["kronos-api-gpu"]["environment"]["OMP_NUM_THREADS"] == "4"
    assert services["kronos-api-cpu"]["environment"]["KRONOS_DEVICE"] == "cpu"
    assert services["kronos-api-gpu"]["environment"]["KRONOS_DEVICE"] == "cuda:1"
    assert published(services["nginx-lb"]) == {8080: "0.0.0.0:9090"}


@pytest.mark.parametrize("file", COMPOSE_FILES)
def test_dotenv_is_honoured_and_the_shell_wins(docker_compose, project, file):
    (project / ".env").write_text(
        "KRONOS_MODEL_HOST_PATH=/srv/kronos/Kronos-small\n"
        "KRONOS_LOG_LEVEL=DEBUG\n"
        "KRONOS_RATE_LIMIT_PER_MINUTE=200\n"
        "KRONOS_MAX_REQUEST_SIZE_MB=20\n"
        "KRONOS_API_KEYS=key-one,key-two\n"
        "KRONOS_BIND_ADDRESS=127.0.0.1\n"
    )
    services = config(docker_compose, project, file, {"KRONOS_LOG_LEVEL": "WARNING"})["services"]
    for name in ("kronos-api-cpu", "kronos-api-gpu"):
        if name not in services:
            continue
        service = services[name]
        assert volume(service, "/models") == ("/srv/kronos/Kronos-small", "ro")
        env = service["environment"]
        assert env["KRONOS_LOG_LEVEL"] == "WARNING"  # the shell beats .env, as documented
        assert env["KRONOS_RATE_LIMIT_PER_MINUTE"] == "200"
        assert env["KRONOS_MAX_REQUEST_SIZE_MB"] == "20"
        assert env["KRONOS_API_KEYS"] == "key-one,key-two"
        assert all(address.startswith("127.0.0.1:") for address in published(service).values())


@pytest.mark.parametrize("file", COMPOSE_FILES)
def test_a_folder_of_models_mounted_whole(docker_compose, project, file):
    # The original guide's layout: one host folder with several checkpoints, one picked by path.
    env = {
        "KRONOS_MODEL_HOST_PATH": "/data/ws/kronos/models",
        "KRONOS_MODEL_PATH": "/models/Kronos-small",
        "KRONOS_TOKENIZER_PATH": "/models/Kronos-Tokenizer-base",
    }
    services = config(docker_compose, project, file, env)["services"]
    for name in ("kronos-api-cpu", "kronos-api-gpu"):
        if name in services:
            assert volume(services[name], "/models") == ("/data/ws/kronos/models", "ro")
            assert services[name]["environment"]["KRONOS_MODEL_PATH"] == "/models/Kronos-small"
            assert services[name]["environment"]["KRONOS_TOKENIZER_PATH"] == "/models/Kronos-Tokenizer-base"


@pytest.mark.parametrize("file", COMPOSE_FILES)
def test_every_service_setting_can_be_set_and_none_is_misspelt(docker_compose, project, file):
    services = config(docker_compose, project, file)["services"]
    for name in ("kronos-api-cpu", "kronos-api-gpu"):
        if name not in services:
            continue
        env = services[name]["environment"]
        kronos_names = {key for key in env if key.startswith("KRONOS_")}
        assert kronos_names - SETTING_NAMES == set(), "not a setting of the service"
        assert SETTING_NAMES - FIXED_BY_IMAGE - kronos_names == set(), "a setting the operator cannot reach"
        # Left unset in the shell and .env, a setting stays unset: the service's default applies.
        assert env["KRONOS_MAX_CONTEXT"] is None
        assert env["KRONOS_API_KEYS"] is None


@pytest.mark.parametrize("file", COMPOSE_FILES)
def test_stop_grace_outlasts_the_drain(docker_compose, project, file):
    services = config(docker_compose, project, file, profile="loadbalancer")["services"]
    fields = Settings.model_fields
    drain = fields["shutdown_timeout_s"].default
    assert drain > fields["request_timeout_s"].default  # every admitted request can finish
    for name in ("kronos-api-cpu", "kronos-api-gpu"):
        if name in services:
            assert seconds(services[name]["stop_grace_period"]) > drain + DRAIN_MARGIN_S
    if "nginx-lb" in services:
        lb = services["nginx-lb"]
        assert lb["stop_signal"] == "SIGQUIT"  # nginx's graceful stop; SIGTERM drops what it proxies
        conf = (REPO / "nginx.conf").read_text()
        longest = sum(
            int(re.search(rf"{d} (\d+)s;", conf)[1]) for d in ("proxy_read_timeout", "proxy_next_upstream_timeout")
        )
        assert seconds(lb["stop_grace_period"]) > longest


def seconds(duration: str) -> float:
    """A compose duration (150s, 2m30s) in seconds."""
    units = {"h": 3600, "m": 60, "s": 1}
    return sum(float(n) * units[u] for n, u in re.findall(r"([0-9.]+)([hms])", duration))


def test_pass_through_list_is_the_same_in_every_file():
    blocks = [yaml.safe_load((REPO / file).read_text())["x-kronos-settings"] for file in COMPOSE_FILES]
    assert blocks[0] == blocks[1] == blocks[2]


@pytest.mark.parametrize("file", COMPOSE_FILES)
def test_hub_downloads_go_to_a_model_cache_volume(docker_compose, project, file):
    services = config(docker_compose, project, file)["services"]
    instances = [services[name] for name in ("kronos-api-cpu", "kronos-api-gpu") if name in services]
    for service in instances:
        env = service["environment"]
        assert env["HF_HOME"] == "/cache/huggingface"
        assert volume(service, "/cache/huggingface") == ("kronos-model-cache", "rw")  # a named volume, kept
        assert env["HF_HUB_OFFLINE"] is None and env["HF_TOKEN"] is None  # passed through when set
    hub = config(docker_compose, project, file, {"KRONOS_MODEL_PATH": "NeoQuasar/Kronos-small", "HF_HUB_OFFLINE": "1"})
    for name, service in hub["services"].items():
        if name.startswith("kronos-api"):
            assert service["environment"]["KRONOS_MODEL_PATH"] == "NeoQuasar/Kronos-small"
            assert service["environment"]["HF_HUB_OFFLINE"] == "1"
