"""The deployment docs say what was tested: every curl they show is run against the real balancer
and instances (with the answer the text promises), the guide's commands are all there, every
compose variable and build argument is documented, and the Prometheus configs scrape what they say."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml
from deploy_support import REPO, clean_env, free_port, nginx_argv, render_nginx_conf, require_tool

GUIDE = (REPO / "DEPLOYMENT_DEVICE_OPTIONS.md").read_text()
README = (REPO / "README.md").read_text()
DEPLOY_SECTION = README[README.index("<!-- section:deploy -->") : README.index("<!-- /section:deploy -->")]
DOCS = {"DEPLOYMENT_DEVICE_OPTIONS.md": GUIDE, "README.md (deploy section)": DEPLOY_SECTION}

# The original guide's commands and names an operator will type; each must appear in our docs
# ("docker-compose" and "docker compose" count as the same).
GUIDE_COMMANDS = [
    "docker-compose -f docker-compose.cpu.yml up -d",
    "docker-compose -f docker-compose.gpu.yml up -d",
    "docker-compose -f docker-compose.hybrid.yml up -d",
    "docker-compose -f docker-compose.hybrid.yml --profile loadbalancer up -d",
    "docker-compose -f docker-compose.cpu.yml logs -f",
    "docker-compose -f docker-compose.cpu.yml down",
    "docker-compose -f docker-compose.gpu.yml down",
    "docker-compose -f docker-compose.hybrid.yml --profile loadbalancer down",
    "docker-compose -f docker-compose.hybrid.yml stop",
    "docker-compose -f docker-compose.hybrid.yml logs -f kronos-api-cpu",
    "docker-compose -f docker-compose.hybrid.yml logs -f kronos-api-gpu",
    "docker-compose -f docker-compose.hybrid.yml logs -f nginx-lb",
    "docker-compose -f docker-compose.hybrid.yml exec nginx-lb nginx -t",
    "docker-compose -f docker-compose.hybrid.yml exec nginx-lb nginx -s reload",
    "docker ps | grep kronos-api-cpu",
    "docker ps | grep kronos",
    "docker exec kronos-api-gpu nvidia-smi",
    "watch -n 1 'docker exec kronos-api-gpu nvidia-smi'",
    "docker stats kronos-api-cpu",
    "docker stats kronos-api-gpu",
    "nvidia-smi",
    "curl http://localhost:8080/v1/healthz",
    "curl http://localhost:8080/v1/metrics",
    "jq '.device'",
    "X-Kronos-Device: cpu",
    "X-Kronos-Device: gpu",
    "X-Backend-Used",
    "export NVIDIA_VISIBLE_DEVICES=1",
    "export KRONOS_MAX_CONTEXT=256",
    "export KRONOS_DEFAULT_PRED_LEN=60",
    "KRONOS_LB_PORT",
    "KRONOS_MODEL_HOST_PATH",
    "./deploy-cpu.sh",
    "./deploy-gpu.sh",
    "./deploy-hybrid.sh --with-lb",
]


def normalized(text: str) -> str:
    return text.replace("docker-compose -f", "docker compose -f")


@pytest.mark.parametrize("command", GUIDE_COMMANDS)
def test_the_guides_commands_are_documented(command):
    assert normalized(command) in normalized(GUIDE)


def test_readme_section_points_to_the_guide_and_the_scripts():
    for needed in (
        "DEPLOYMENT_DEVICE_OPTIONS.md",
        "./deploy-cpu.sh",
        "./deploy-gpu.sh",
        "./deploy-hybrid.sh --with-lb",
    ):
        assert needed in DEPLOY_SECTION


def test_every_compose_variable_is_documented():
    used = set()
    for file in ("docker-compose.cpu.yml", "docker-compose.gpu.yml", "docker-compose.hybrid.yml"):
        used |= set(re.findall(r"\$\{(\w+)", (REPO / file).read_text()))
    table_rows = {row.split("|")[1].strip().strip("`") for row in GUIDE.splitlines() if row.startswith("| `")}
    assert used - table_rows == set()


def test_build_arguments_are_documented_with_their_defaults():
    dockerfile = (REPO / "Dockerfile").read_text()
    for name, default in re.findall(r"^ARG (\w+)=(\S+)$", dockerfile, flags=re.MULTILINE):
        assert f"| `{name}` | `{default}` |" in GUIDE


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL)


def documented_curls(text: str) -> list[tuple[str, list[str], str]]:
    """(the command as shown, its arguments, the comment lines just above it) for each curl."""
    found = []
    for block in bash_blocks(text):
        lines = block.splitlines()
        comments: list[str] = []
        i = 0
        while i < len(lines):
            line = lines[i]
            if line.strip().startswith("#"):
                comments.append(line)
                i += 1
                continue
            if not line.startswith("curl "):
                comments = []
                i += 1
                continue
            command = line
            while True:  # continuation lines and multi-line quoted bodies
                try:
                    tokens = shlex.split(command.replace("\\\n", " "), comments=True)
                    if not command.endswith("\\"):
                        break
                except ValueError:
                    pass
                i += 1
                command += "\n" + lines[i]
            if "|" in tokens:
                tokens = tokens[: tokens.index("|")]
            found.append((command, tokens[1:], "\n".join(comments)))
            comments = []
            i += 1
    return found


def test_the_docs_show_the_routing_curls():
    shown = [command for command, _, _ in documented_curls(GUIDE)]
    assert sum("localhost:8080/v1/predict" in command for command in shown) >= 5


def local_url_map(balancer, instances) -> dict[str, str]:
    return {
        "http://localhost:8080": balancer.url,
        "http://localhost:8000": instances.cpu.url,
        "http://localhost:8001": instances.gpu.url,
        "http://kronos-api-cpu:8000": instances.cpu.url,
        "http://kronos-api-gpu:8000": instances.gpu.url,
    }


@pytest.mark.parametrize("doc", list(DOCS))
def test_every_documented_curl_answers_as_the_docs_say(doc, balancer, instances, tmp_path):
    curl = require_tool("curl")
    urls = local_url_map(balancer, instances)
    ran = 0
    for shown, args, comments in documented_curls(DOCS[doc]):
        targets = [prefix for prefix in urls if any(arg.startswith(prefix) for arg in args)]
        if not targets:
            continue  # not one of our endpoints (e.g. a package repository)
        args = [urls[targets[0]] + arg[len(targets[0]) :] if arg.startswith(targets[0]) else arg for arg in args]
        headers, body = tmp_path / "headers", tmp_path / "body"
        result = subprocess.run(
            [curl, *args, "-sS", "--max-time", "60", "-D", str(headers), "-o", str(body)],
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert result.returncode == 0, (shown, result.stderr)
        head = headers.read_text()
        status = re.findall(r"^HTTP/[\d.]+ (\d{3})", head, flags=re.MULTILINE)[-1]
        expected_status = re.search(r"HTTP (\d{3})", comments)
        assert status == (expected_status.group(1) if expected_status else "200"), (shown, head, body.read_text())
        expected_backend = re.search(r"X-Backend-Used: (\w+)", comments)
        if expected_backend:
            used = re.search(r"^x-backend-used: (\w+)", head, flags=re.MULTILINE | re.IGNORECASE)
            assert used and used.group(1) == expected_backend.group(1), (shown, head)
        if '"device": "cpu"' in comments:
            assert '"device":"cpu"' in body.read_text().replace(" ", "")
        ran += 1
    assert ran >= (10 if doc == "DEPLOYMENT_DEVICE_OPTIONS.md" else 1)


def test_documented_routing_maps_load_in_nginx(nginx_bin, tmp_path):
    """Each documented replacement for the default-route map, swapped into nginx.conf, passes nginx -t."""
    maps = [b for b in re.findall(r"```nginx\n(.*?)```", GUIDE, flags=re.DOTALL) if "$kronos_default_route" in b]
    assert maps
    rendered = render_nginx_conf(free_port(), free_port(), free_port())
    current = re.search(r"    map \$uri \$kronos_default_route \{.*?\n    \}\n", rendered, flags=re.DOTALL).group(0)
    for block in maps:
        (tmp_path / "nginx.conf").write_text(rendered.replace(current, block))
        result = subprocess.run(nginx_argv(nginx_bin, tmp_path, "-t"), capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, (block, result.stderr)


def yaml_blocks(text: str) -> list[dict]:
    return [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", text, flags=re.DOTALL)]


def test_prometheus_config_on_the_compose_network():
    network = next(c for c in yaml_blocks(DEPLOY_SECTION) if c["scrape_configs"][0]["job_name"] == "kronos")
    job = network["scrape_configs"][0]
    assert job["metrics_path"] == "/v1/metrics"
    targets = {group["labels"]["kronos_instance"]: group["targets"] for group in job["static_configs"]}
    assert targets == {"cpu": ["kronos-api-cpu:8000"], "gpu": ["kronos-api-gpu:8000"]}


def test_prometheus_config_through_the_balancer_scrapes_each_instance(balancer):
    config = next(c for c in yaml_blocks(DEPLOY_SECTION) if c["scrape_configs"][0]["job_name"] == "kronos-cpu")
    for job in config["scrape_configs"]:
        (group,) = job["static_configs"]
        assert group["targets"] == ["kronos-host:8080"]
        response = httpx.get(balancer.url + job["metrics_path"], timeout=10.0)
        assert response.status_code == 200
        assert response.headers["X-Kronos-Instance"] == f"kronos-api-{group['labels']['kronos_instance']}"
        assert "kronos_http_requests_total" in response.text


def test_measured_figures_are_filled_in():
    assert "RESOURCE_TABLE" not in GUIDE
    assert Path(REPO / "tests/deploy/measure_resources.py").is_file()
