"""/v1/jobs as deployed: through the project's nginx.conf to both instances in turn (they share one
job store, as the hybrid compose file's kronos-jobs volume gives them), uploads up to the jobs limit;
the compose files' job store (a volume, the "jobs" profile's Postgres); the image's jobs folder; and
Kubernetes, where jobs are off unless components/jobs reads a shared Postgres URL from a Secret."""

from __future__ import annotations

import re
import shutil
import subprocess
import time

import httpx
import pytest
import yaml
from deploy_support import REPO, clean_env, require_tool
from k8s_support import POOLS, env_of, one, render, render_with_component, settings_of
from test_k8s import validate

from services.kronos_fastapi.settings import Settings

COMPOSE_FILES = ("docker-compose.cpu.yml", "docker-compose.gpu.yml", "docker-compose.hybrid.yml")
JOBS_DIR = "/var/lib/kronos/jobs"
CONF = (REPO / "nginx.conf").read_text()
ROWS = [[100.0, 105.0, 98.0, 102.0], [102.0, 108.0, 101.0, 107.0]]


# --- nginx ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lb(balancer) -> httpx.Client:
    with httpx.Client(base_url=balancer.url, timeout=60.0) as client:
        yield client


def test_the_jobs_location_allows_the_services_upload_limit():
    location = re.search(r"location /v1/jobs \{(.*?)\n        \}", CONF, flags=re.DOTALL).group(1)
    default_mib = Settings.model_fields["jobs_max_upload_mb"].default
    assert f"client_max_body_size {int(default_mib)}m;" in location
    assert f'"limit_bytes":{int(default_mib * 1024 * 1024)}' in CONF  # what nginx's own 413 states
    upstream = re.search(r"upstream kronos_jobs \{(.*?)\}", CONF, flags=re.DOTALL).group(1)
    assert "backup" not in upstream and upstream.count("server ") == 2  # both instances, in turn


def test_a_job_made_through_the_balancer_is_answered_by_either_instance(lb):
    items = [{"custom_id": f"i{i}", "data": ROWS, "pred_len": 2, "seed": i} for i in range(4)]
    created = lb.post("/v1/jobs", json={"items": items})
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    answered = set()
    deadline = time.monotonic() + 60
    while True:
        response = lb.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text  # whichever instance: one shared store
        answered.add(response.headers["X-Backend-Used"])
        if response.json()["status"] == "succeeded" and len(answered) == 2:
            break
        assert time.monotonic() < deadline, (response.json(), answered)
        time.sleep(0.05)
    assert answered == {"cpu", "gpu"}
    lines = lb.get(f"/v1/jobs/{job_id}/results").text.splitlines()
    assert len(lines) == 4


def test_an_upload_over_the_request_limit_reaches_an_instance_and_over_the_jobs_limit_does_not(lb):
    padded = b'{"items": [], "pad": "' + b"x" * (12 * 1024 * 1024) + b'"}'  # over 10m, under 100m
    response = lb.post("/v1/jobs", content=padded, headers={"content-type": "application/json"})
    assert response.status_code == 422 and "pad" in response.json()["error"]["message"]
    assert response.headers["X-Backend-Used"] in ("cpu", "gpu")
    huge = lb.post("/v1/jobs", content=b"x" * (101 * 1024 * 1024), headers={"content-type": "text/csv"})
    assert huge.status_code == 413 and huge.headers["X-Backend-Used"] == "none"
    assert "100m" in huge.json()["error"]["message"]


# --- compose and the image -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def docker_compose() -> str:
    return require_tool("docker-compose")


def _config(docker_compose: str, tmp_path, file: str, env: dict | None = None) -> dict:
    shutil.copy(REPO / file, tmp_path / file)
    shutil.copy(REPO / "nginx.conf", tmp_path / "nginx.conf")
    result = subprocess.run(
        [docker_compose, "-f", str(tmp_path / file), "--profile", "jobs", "config"],
        cwd=tmp_path,
        env=clean_env(**(env or {})),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


@pytest.mark.parametrize("file", COMPOSE_FILES)
def test_compose_keeps_the_job_store_and_offers_a_shared_postgres(docker_compose, tmp_path, file):
    url = "postgresql://kronos:pw@kronos-postgres:5432/kronos"
    config = _config(docker_compose, tmp_path, file, {"KRONOS_JOBS_DATABASE_URL": url})
    services = config["services"]
    instances = [s for name, s in services.items() if name.startswith("kronos-api-")]
    for instance in instances:
        assert f"kronos-jobs:{JOBS_DIR}:rw" in instance["volumes"]  # the SQLite store outlives the container
        assert instance["environment"]["KRONOS_JOBS_DATABASE_URL"] == url  # passed through from the shell
    postgres = services["postgres"]
    assert postgres["profiles"] == ["jobs"] and postgres["image"].startswith("postgres:")
    assert "kronos-postgres:/var/lib/postgresql/data:rw" in postgres["volumes"]
    assert "ports" not in postgres  # only the project's network reaches it
    assert postgres["environment"]["POSTGRES_PASSWORD"] == ""  # no default: the image refuses to start so
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert {"kronos-jobs", "kronos-postgres"} <= set(config["volumes"])


def test_the_image_gives_the_service_user_a_jobs_folder():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert f"KRONOS_JOBS_DIR={JOBS_DIR}" in dockerfile
    assert f"mkdir -p {JOBS_DIR} && chown 10001:10001 {JOBS_DIR}" in dockerfile


# --- Kubernetes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", ["cpu", "gpu", "hybrid"])
def test_kubernetes_serves_no_jobs_without_a_shared_store(overlay):
    docs = render(overlay)
    assert settings_of(docs)["KRONOS_JOBS_ENABLED"] == "false"
    for name in POOLS:
        if any(d["kind"] == "Deployment" and d["metadata"]["name"] == name for d in docs):
            assert "KRONOS_JOBS_DATABASE_URL" not in env_of(one(docs, "Deployment", name))


def test_components_jobs_requires_the_database_secret(tmp_path):
    docs = render_with_component(tmp_path, "hybrid", "jobs")
    validate(docs)
    assert settings_of(docs)["KRONOS_JOBS_ENABLED"] == "true"
    for name in POOLS:
        env = env_of(one(docs, "Deployment", name))
        reference = env["KRONOS_JOBS_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
        assert reference == {"name": "kronos-jobs-database", "key": "KRONOS_JOBS_DATABASE_URL", "optional": False}
        assert "KRONOS_API_KEYS" in env  # the component adds to the pools' env, it does not replace it


def test_components_jobs_scales_the_cpu_pool_on_the_job_backlog_too(tmp_path):
    docs = render_with_component(tmp_path, "cpu", "jobs")
    validate(docs)
    queue, backlog = one(docs, "HorizontalPodAutoscaler", "kronos-api-cpu")["spec"]["metrics"]
    assert queue["pods"]["metric"]["name"] == "kronos_queue_depth"  # the base's metric stays
    assert backlog["type"] == "External"
    assert backlog["external"]["metric"] == {"name": "kronos_jobs_backlog_items"}
    assert backlog["external"]["target"] == {"type": "AverageValue", "averageValue": "200"}
    # The Prometheus adapter serves it: an external rule of that name, per namespace, and the max of
    # the pods' values (each pod reports the whole shared store's backlog: a sum would count it per pod).
    adapter = yaml.safe_load((REPO / "deploy/monitoring/prometheus-adapter/rules.yaml").read_text())
    (rule,) = adapter["externalRules"]
    assert re.fullmatch(rule["name"]["matches"], "kronos_jobs_backlog_items")
    assert rule["name"]["as"] == "kronos_jobs_backlog_items"
    assert "kronos_jobs_backlog_items{" in rule["seriesQuery"]
    assert {label: o["resource"] for label, o in rule["resources"]["overrides"].items()} == {"namespace": "namespace"}
    query = rule["metricsQuery"]
    assert query.startswith("max(") and "sum(" not in query and "by (<<.GroupBy>>)" in query
    # Without components/jobs the pool scales on its queue alone (test_k8s checks that overlay in full).
    assert len(one(render("cpu"), "HorizontalPodAutoscaler", "kronos-api-cpu")["spec"]["metrics"]) == 1
