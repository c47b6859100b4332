"""The Dockerfile without a Docker engine: hadolint, the checklist the deployment needs, the
build context (.dockerignore), install commands that match the README's, and its HEALTHCHECK
run for real against a live instance."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys

import pytest
import yaml
from deploy_support import REPO, clean_env, free_port, require_tool

from services.kronos_fastapi.settings import Settings


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    result, pending = [], ""
    for line in (REPO / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, rest = full.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions():
        if keyword == "FROM":
            found.append([])
        if found:
            found[-1].append((keyword, rest))
    return found


def arg_default(name: str) -> str:
    for keyword, rest in instructions():
        if keyword == "ARG" and rest.startswith(f"{name}="):
            return rest.split("=", 1)[1]
    raise AssertionError(f"no ARG {name}")


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    env = {}
    for keyword, rest in stage:
        if keyword == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def test_hadolint_clean():
    hadolint = require_tool("hadolint")
    result = subprocess.run([hadolint, "Dockerfile"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_multi_stage_and_small():
    build, runtime = stages()
    assert build[0][1].endswith("AS build") and runtime[0][1].endswith("AS runtime")
    # The runtime stage gets the built environment and the bundled model, and nothing of the source.
    copies = [rest for keyword, rest in runtime if keyword == "COPY"]
    assert copies == ["--from=build /opt/venv /opt/venv", "model/bundled/kronos-demo /models"]
    assert "PIP_NO_CACHE_DIR=1" in dict(build)["ENV"]


def test_runs_as_a_non_root_user():
    runtime = stages()[-1]
    users = [rest for keyword, rest in runtime if keyword == "USER"]
    assert users == ["10001:10001"]
    assert any(keyword == "RUN" and "useradd" in rest and "--uid 10001" in rest for keyword, rest in runtime)


def test_model_in_models_and_settings_for_a_container():
    env = env_of(stages()[-1])
    assert env["KRONOS_MODEL_PATH"] == "/models"
    assert env["KRONOS_HOST"] == "0.0.0.0"
    assert env["KRONOS_PORT"] == "8000"
    settings = {f"KRONOS_{name.upper()}" for name in Settings.model_fields}
    assert {key for key in env if key.startswith("KRONOS_")} <= settings
    assert ("EXPOSE", "8000") in stages()[-1]


# tomllib is 3.11+; the package supports 3.10.
PYPROJECT = (REPO / "pyproject.toml").read_text()


def test_starts_the_console_script():
    cmd = json.loads(dict(stages()[-1])["CMD"])
    assert cmd == ["kronos-serve"]
    assert re.search(r"^\[project\.scripts\][^\[]*^kronos-serve = ", PYPROJECT, flags=re.MULTILINE | re.DOTALL)


def test_torch_build_is_an_argument_with_the_readme_version_and_cpu_wheels_by_default():
    readme_pin = re.search(
        r"pip install -c constraints.txt torch==([\d.]+) -e \.", (REPO / "README.md").read_text()
    ).group(1)
    assert arg_default("TORCH_VERSION") == readme_pin
    assert arg_default("TORCH_INDEX_URL") == "https://download.pytorch.org/whl/cpu"
    runs = [" ".join(rest.split()) for keyword, rest in stages()[0] if keyword == "RUN"]
    # Every install goes through the repository's lock (constraints.txt).
    torch_install = 'pip install -c constraints.txt "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"'
    assert any(torch_install in run for run in runs)
    assert any(run.startswith('pip install -c constraints.txt --index-url "${PYPI_INDEX_URL}" . ') for run in runs)


def test_torch_pin_is_allowed_by_the_package():
    from packaging.specifiers import SpecifierSet

    torch_spec = re.search(r'^\s*"torch([<>=!~][^"]*)",', PYPROJECT, flags=re.MULTILINE).group(1)
    assert arg_default("TORCH_VERSION") in SpecifierSet(torch_spec)


def healthcheck_argv() -> list[str]:
    rest = dict(stages()[-1])["HEALTHCHECK"]
    assert "--interval=" in rest and "--start-period=" in rest
    argv = json.loads(rest[rest.index("CMD") + 3 :].strip())
    assert "/v1/healthz" in " ".join(argv)
    return argv


def run_check(argv: list[str], **env: str) -> int:
    # The image's python is the venv's; here it is this interpreter.
    argv = [sys.executable if argv[0] == "python" else argv[0], *argv[1:]]
    return subprocess.run(argv, env=clean_env(**env), capture_output=True, timeout=30).returncode


def test_healthcheck_command_works_against_a_live_instance(instances):
    argv = healthcheck_argv()
    assert run_check(argv, KRONOS_PORT=str(instances.cpu.port)) == 0
    assert run_check(argv, KRONOS_PORT=str(free_port())) != 0


@pytest.mark.parametrize("file", ["docker-compose.cpu.yml", "docker-compose.gpu.yml", "docker-compose.hybrid.yml"])
def test_compose_readiness_checks_work_against_a_live_instance(instances, file):
    services = yaml.safe_load((REPO / file).read_text())["services"]
    checks = [s["healthcheck"]["test"] for name, s in services.items() if name.startswith("kronos-api")]
    if not checks:  # the hybrid file keeps it in its shared x-kronos-instance block
        checks = [yaml.safe_load((REPO / file).read_text())["x-kronos-instance"]["healthcheck"]["test"]]
    for check in checks:
        # Shell form, as Podman's Docker API needs: the container's /bin/sh runs the line.
        assert check[0] == "CMD-SHELL" and len(check) == 2
        live = ["sh", "-c", check[1].replace(":8000/", f":{instances.cpu.port}/")]
        dead = ["sh", "-c", check[1].replace(":8000/", f":{free_port()}/")]
        assert run_check(live) == 0
        assert run_check(dead) != 0


def dockerignore_included(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    included = True
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        regex = regex.replace(r"\?", "[^/]").replace(r"\[cod\]", "[cod]")
        parts = path.split("/")
        if any(re.fullmatch(regex, "/".join(parts[:i])) for i in range(1, len(parts) + 1)):
            included = negate
    return included


def test_build_context_holds_what_the_image_needs_and_nothing_else():
    needed = [
        "pyproject.toml",
        "README.md",  # the package's readme, read by the build
        "model/__init__.py",
        "model/bundled/kronos-demo/config.json",
        "model/bundled/kronos-demo/tokenizer/model.safetensors",
        "services/kronos_fastapi/app.py",
    ]
    kept_out = [
        ".env",
        ".git/HEAD",
        "tests/deploy/test_dockerfile.py",
        "benchmarks/decode.py",
        "model/__pycache__/layers.cpython-311.pyc",
        "services/kronos_fastapi/.env",
        "docker-compose.cpu.yml",
        ".venv/bin/python",
    ]
    assert [path for path in needed if not dockerignore_included(path)] == []
    assert [path for path in kept_out if dockerignore_included(path)] == []
    # Every COPY source from the build context exists and is in the context.
    for stage in stages():
        for keyword, rest in stage:
            if keyword == "COPY" and not rest.startswith("--from"):
                for source in rest.split()[:-1]:
                    assert (REPO / source).exists(), source
                    assert dockerignore_included(source), source
