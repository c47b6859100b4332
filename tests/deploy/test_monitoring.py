"""The monitoring that ships with the service (deploy/monitoring): Prometheus configurations and
alert rules checked and unit-tested by promtool, the Kubernetes and compose scrape jobs finding
the right targets with the labels the autoscaler and dashboard use, the Prometheus adapter rule
serving the HPA's metric, the compose files' `monitoring` profile, and every metric the rules,
the dashboard and the adapter name exported by a live instance's /v1/metrics."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml
from deploy_support import REPO, clean_env, require_tool
from k8s_support import (
    MONITORING,
    POOLS,
    container,
    label_values_metric,
    metric_names,
    one,
    pick,
    render,
    selector_labels,
)
from prometheus_client.parser import text_string_to_metric_families

PROMETHEUS = MONITORING / "prometheus"
RULES = PROMETHEUS / "rules" / "kronos-alerts.yml"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "kronos.json"
ADAPTER = MONITORING / "prometheus-adapter" / "rules.yaml"
COMPOSE_FILES = ("docker-compose.cpu.yml", "docker-compose.gpu.yml", "docker-compose.hybrid.yml")
# Labels Prometheus attaches to every scraped series of the job (target labels), not the service.
TARGET_LABELS = {"job", "instance", "pool", "namespace", "pod"}
# Prometheus's own series about each scrape.
PROMETHEUS_OWN = {"up"}


@pytest.fixture(scope="module")
def promtool() -> str:
    return require_tool("promtool")


def run(argv: list[str], cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120)


# --- promtool -------------------------------------------------------------------------------------


def test_promtool_check_rules(promtool):
    result = run([promtool, "check", "rules", str(RULES)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_promtool_test_rules(promtool):
    result = run([promtool, "test", "rules", "tests/kronos-alerts.test.yml"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_check_compose_config(promtool):
    result = run([promtool, "check", "config", "prometheus-compose.yml"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout


def test_promtool_check_kubernetes_config(promtool, tmp_path):
    """The whole file where promtool knows Kubernetes service discovery; Debian's build of
    Prometheus leaves that discovery out, and then everything but the discovery block is checked
    (the same job with a static target in its place; the discovery itself: the next test)."""
    config = PROMETHEUS / "prometheus-kubernetes.yml"
    result = run([promtool, "check", "config", str(config)])
    if "kubernetes_sd_configs not found" in result.stdout + result.stderr:
        data = yaml.safe_load(config.read_text())
        (job,) = data["scrape_configs"]
        sd = job.pop("kubernetes_sd_configs")
        assert sd == [{"role": "pod", "namespaces": {"names": ["kronos"]}}]
        job["static_configs"] = [{"targets": ["10.0.0.1:8000"]}]
        data["rule_files"] = [str(PROMETHEUS / pattern) for pattern in data["rule_files"]]
        copy = tmp_path / "prometheus-kubernetes.yml"
        copy.write_text(yaml.safe_dump(data))
        result = run([promtool, "check", "config", str(copy)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout


# --- service discovery, as Prometheus relabels it ---------------------------------------------------


def relabel(labels: dict[str, str], configs: list[dict]) -> dict[str, str] | None:
    """Prometheus's relabelling (the actions these configs use), None for a dropped target."""
    labels = dict(labels)
    for config in configs:
        action = config.get("action", "replace")
        value = config.get("separator", ";").join(labels.get(name, "") for name in config.get("source_labels", []))
        match = re.fullmatch(config.get("regex", "(.*)"), value)
        if action == "keep" and not match:
            return None
        if action == "drop" and match:
            return None
        if action == "replace" and match:
            replacement = config.get("replacement", "$1")
            # Prometheus's $1 / ${1} as Python's \g<1>.
            template = re.sub(r"\$\{(\d+)\}|\$(\d+)", lambda g: rf"\g<{g.group(1) or g.group(2)}>", replacement)
            result = match.expand(template)
            if result:
                labels[config["target_label"]] = result
            else:
                labels.pop(config["target_label"], None)
        assert action in {"keep", "drop", "replace"}, action
    return labels


def scrape_targets(job: dict, discovered: list[dict[str, str]]) -> list[dict[str, str]]:
    """The targets of ``job`` and their final labels, from what discovery found."""
    targets = []
    for meta in discovered:
        labels = relabel(
            {"job": job["job_name"], "__metrics_path__": job["metrics_path"], **meta}, job["relabel_configs"]
        )
        if labels is not None:
            labels.setdefault("instance", labels["__address__"])
            targets.append(labels)
    return targets


def kubernetes_pods() -> list[dict[str, str]]:
    """What Prometheus's pod discovery reports for three pods of each Deployment of the hybrid
    overlay (two running, one evicted): one target per declared container port."""
    found = []
    for deployment in pick(render("hybrid"), "Deployment"):
        template = deployment["spec"]["template"]
        # Two running pods, and one evicted (phase Failed: its object stays until deleted).
        for index, phase in enumerate(("Running", "Running", "Failed")):
            pod = f"{deployment['metadata']['name']}-5d9c7b-{index}"
            for c in template["spec"]["containers"]:
                for port in c["ports"]:
                    meta = {
                        "__address__": f"10.1.0.{index}:{port['containerPort']}",
                        "__meta_kubernetes_namespace": deployment["metadata"]["namespace"],
                        "__meta_kubernetes_pod_phase": phase,
                        "__meta_kubernetes_pod_name": pod,
                        "__meta_kubernetes_pod_container_name": c["name"],
                        "__meta_kubernetes_pod_container_port_name": port["name"],
                    }
                    for key, value in template["metadata"]["labels"].items():
                        meta["__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", key)] = value
                    found.append(meta)
    return found


def test_kubernetes_job_scrapes_every_pool_pod_and_nothing_else():
    config = yaml.safe_load((PROMETHEUS / "prometheus-kubernetes.yml").read_text())
    (job,) = config["scrape_configs"]
    targets = scrape_targets(job, kubernetes_pods())
    deployments = {d["metadata"]["name"]: d for d in pick(render("hybrid"), "Deployment")}
    # The running pool pods only: not the router's, not an evicted one (it would be "down").
    assert sorted(t["pod"] for t in targets) == sorted(f"{name}-5d9c7b-{i}" for name in POOLS for i in range(2))
    for target in targets:
        name = target["pod"].rsplit("-", 2)[0]
        assert target["pool"] == POOLS[name]
        assert target["namespace"] == "kronos"
        assert target["instance"] == target["pod"]
        assert target["job"] == "kronos"
        # The path and port the pods serve their metrics on.
        assert target["__metrics_path__"] == "/v1/metrics"
        assert target["__address__"].endswith(f":{container(deployments[name])['ports'][0]['containerPort']}")


def test_compose_job_names_each_instance_and_its_pool():
    config = yaml.safe_load((PROMETHEUS / "prometheus-compose.yml").read_text())
    (job,) = config["scrape_configs"]
    (sd,) = job["dns_sd_configs"]
    assert sd["port"] == 8000 and sd["type"] == "A"
    found = [{"__address__": f"172.18.0.{i}:8000", "__meta_dns_name": name} for i, name in enumerate(sd["names"])]
    targets = scrape_targets(job, found)
    assert [(t["instance"], t["pool"], t["__metrics_path__"]) for t in targets] == [
        ("kronos-api-cpu", "cpu-pool", "/v1/metrics"),
        ("kronos-api-gpu", "gpu-pool", "/v1/metrics"),
    ]
    # Those are the compose files' service names.
    for file in COMPOSE_FILES:
        services = yaml.safe_load((REPO / file).read_text())["services"]
        assert {name for name in services if name.startswith("kronos-api-")} <= set(sd["names"])


def test_adapter_rule_serves_the_hpa_metric_per_pod():
    (rule,) = yaml.safe_load(ADAPTER.read_text())["rules"]
    hpa = one(render("cpu"), "HorizontalPodAutoscaler", "kronos-api-cpu")
    pods_metric = next(m for m in hpa["spec"]["metrics"] if m["type"] == "Pods")["pods"]["metric"]["name"]
    assert re.fullmatch(rule["name"]["matches"], pods_metric) and rule["name"]["as"] == pods_metric
    assert metric_names(rule["seriesQuery"]) == {pods_metric}
    overrides = rule["resources"]["overrides"]
    assert {label: o["resource"] for label, o in overrides.items()} == {"namespace": "namespace", "pod": "pod"}
    # The Kubernetes job gives every series those labels, so the adapter can map them to pods.
    (job,) = yaml.safe_load((PROMETHEUS / "prometheus-kubernetes.yml").read_text())["scrape_configs"]
    target = scrape_targets(job, kubernetes_pods())[0]
    assert set(overrides) <= set(target)
    assert "<<.Series>>" in rule["metricsQuery"] and "<<.LabelMatchers>>" in rule["metricsQuery"]
    assert "by (<<.GroupBy>>)" in rule["metricsQuery"]


# --- what the rules and the dashboard name --------------------------------------------------------


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def rule_exprs() -> dict[str, str]:
    """Each alert's expression (those of an alert with several rules, one per line)."""
    exprs: dict[str, str] = {}
    for rule in rules():
        exprs[rule["alert"]] = "\n".join(filter(None, (exprs.get(rule["alert"]), rule["expr"])))
    return exprs


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")


def test_every_alert_says_what_it_means_and_where_its_runbook_is():
    guide = (REPO / "DEPLOYMENT_DEVICE_OPTIONS.md").read_text()
    anchors = {_anchor(h) for h in re.findall(r"^#+ (.+)$", guide, flags=re.MULTILINE)}
    for rule in rules():
        annotations = rule["annotations"]
        assert {"summary", "description", "runbook_url"} <= set(annotations), rule["alert"]
        page, _, anchor = annotations["runbook_url"].partition("#")
        assert page == "DEPLOYMENT_DEVICE_OPTIONS.md" and anchor == rule["alert"].lower()
        assert anchor in anchors, f"{rule['alert']}: no section #{anchor} in the guide"


def test_every_alert_has_a_promtool_test_that_fires_it():
    tests = yaml.safe_load((PROMETHEUS / "tests" / "kronos-alerts.test.yml").read_text())["tests"]
    fired = {case["alertname"] for test in tests for case in test["alert_rule_test"] if case.get("exp_alerts")}
    assert {rule["alert"] for rule in rules()} <= fired


def dashboard_exprs() -> dict[str, str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = {}
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            exprs[f"{panel['title']} / {target['refId']}"] = target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            exprs[f"variable {variable['name']}"] = label_values_metric(variable["query"]["query"])
    return exprs


def test_metric_name_reader():
    expr = (
        'histogram_quantile(0.9, sum by (le, route) (rate(kronos_x_bucket{a="b", c=~"1e3"}[$__rate_interval]))) > 1e3'
    )
    assert metric_names(expr) == {"kronos_x_bucket"}
    assert metric_names("up == 0 or kronos_a / on (pod) group_left kronos_b") == {"up", "kronos_a", "kronos_b"}
    assert selector_labels('kronos_a{job="kronos", state!="x"} == 1') == [("kronos_a", {"job", "state"})]


def test_the_alerts_the_operators_need():
    exprs = rule_exprs()
    assert set(exprs) == {
        "KronosInstanceDown",
        "KronosPoolDown",
        "KronosNoTargets",
        "KronosInstanceNotReady",
        "KronosModelLoadFailed",
        "KronosModelUnhealthy",
        "KronosHighErrorRatio",
        "KronosHighLatencyP95",
        "KronosQueueNearlyFull",
        "KronosQueueFullRejections",
        "KronosOutOfMemory",
    }
    assert "kronos_batch_splits_total" in metric_names(exprs["KronosOutOfMemory"])
    assert "kronos_queue_capacity" in metric_names(exprs["KronosQueueNearlyFull"])


def test_the_dashboard_shows_what_the_operators_need():
    dashboard = json.loads(DASHBOARD.read_text())
    by_title = {
        p["title"]: set().union(*(metric_names(t["expr"]) for t in p["targets"]))
        for p in dashboard["panels"]
        if p["type"] != "row"
    }
    needed = {
        "Requests per second by route": {"kronos_http_requests_total"},
        "Errors per second by route and status": {"kronos_http_requests_total"},
        "Forecast request latency (p50, p95, p99)": {"kronos_http_request_duration_seconds_bucket"},
        "Queue depth per instance": {"kronos_queue_depth"},
        "Queue wait (p50, p95)": {"kronos_queue_wait_seconds_bucket"},
        "Batch size (series per model batch)": {"kronos_batch_size_sum", "kronos_batch_size_count"},
        "Tokens per model batch": {"kronos_batch_tokens_sum", "kronos_batch_tokens_count"},
        "Model state per instance": {"kronos_device_info"},
    }
    for title, names in needed.items():
        assert names <= by_title[title], title
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert dashboard["uid"] == "kronos-service"
    # Every query goes to the chosen Prometheus data source, by variable.
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert 'job="kronos"' in target["expr"]


@pytest.fixture(scope="module")
def families(instances) -> list:
    """A live instance's /v1/metrics after real traffic (a single forecast, a batch, a bad
    request), so that most labelled series have samples."""
    base = instances.cpu.url
    one_series = {"data": [[100, 105, 98, 102], [102, 108, 101, 107]], "pred_len": 3}
    assert httpx.post(f"{base}/v1/predict/single", json=one_series, timeout=60).status_code == 200
    assert httpx.post(f"{base}/v1/predict/batch", json={"batch": [one_series] * 2}, timeout=60).status_code == 200
    assert httpx.post(f"{base}/v1/predict/single", json={"data": []}, timeout=60).status_code == 422
    response = httpx.get(f"{base}/v1/metrics", timeout=10)
    assert response.status_code == 200
    return list(text_string_to_metric_families(response.text))


@pytest.fixture(scope="module")
def samples(families) -> list:
    return [sample for family in families for sample in family.samples]


SERIES_OF = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "gauge": ("",),
    "info": ("_info",),
    "summary": ("", "_sum", "_count"),
}


@pytest.fixture(scope="module")
def exported(families) -> dict[str, set[str]]:
    """Series name -> the label names its samples have. A labelled family that has seen nothing
    yet (no cancelled series, say) still counts: its HELP and TYPE are exported, its series appear
    with the first event."""
    found: dict[str, set[str]] = {}
    for family in families:
        for suffix in SERIES_OF.get(family.type, ("",)):
            found.setdefault(family.name + suffix, set())
        for sample in family.samples:
            found.setdefault(sample.name, set()).update(sample.labels)
    return found


def named_everywhere() -> dict[str, str]:
    exprs = {f"alert {k}": v for k, v in rule_exprs().items()}
    exprs |= {f"dashboard {k}": v for k, v in dashboard_exprs().items()}
    adapter = yaml.safe_load(ADAPTER.read_text())
    exprs["adapter seriesQuery"] = adapter["rules"][0]["seriesQuery"]
    for rule in adapter["externalRules"]:  # components/jobs' backlog metric
        exprs[f"adapter external {rule['name']['as']}"] = rule["seriesQuery"]
    hpa = one(render("cpu"), "HorizontalPodAutoscaler", "kronos-api-cpu")
    for metric in hpa["spec"]["metrics"]:
        if metric["type"] == "Pods":
            exprs["hpa"] = metric["pods"]["metric"]["name"]
    return exprs


def test_every_metric_named_is_exported_by_a_live_instance(exported):
    missing = {}
    for where, expr in named_everywhere().items():
        names = metric_names(expr)
        assert names, f"{where}: no metric found in {expr!r}"
        unknown = names - set(exported) - PROMETHEUS_OWN
        if unknown:
            missing[where] = sorted(unknown)
    assert not missing, f"not in /v1/metrics: {missing}"


def test_every_label_matched_is_one_the_metric_has(exported):
    wrong = {}
    for where, expr in named_everywhere().items():
        for name, labels in selector_labels(expr):
            if name in PROMETHEUS_OWN:
                continue
            unknown = labels - exported[name] - TARGET_LABELS
            if unknown and exported[name]:
                wrong[f"{where}: {name}"] = sorted(unknown)
    assert not wrong, f"labels the metrics do not have: {wrong}"


def test_label_values_the_rules_match_exist(samples):
    """The label values the rules test for are ones the service produces."""
    from services.kronos_fastapi import errors, model_health, service

    exprs = "\n".join(rule_exprs().values())
    reasons = set(re.findall(r'reason="([a-z_]+)"', exprs))
    error_types = {getattr(cls, "error_type", None) for cls in vars(errors).values() if isinstance(cls, type)}
    assert reasons and reasons <= error_types
    assert set(re.findall(r'state="([a-z_]+)"', exprs)) == {service.FAILED}
    assert set(re.findall(r'state=~"([a-z_|]+)"', exprs)) == {f"{model_health.BROKEN}|{model_health.STALLED}"}
    assert set(re.findall(r'route=~"([^"]+)"', exprs)) == {"/v1/predict/.+"}
    assert set(re.findall(r'route="([^"]+)"', exprs)) == {"/v1/predict/single", "/v1/predict/batch", "/v1/backtest"}
    routes = {s.labels["route"] for s in samples if s.name == "kronos_http_requests_total"}
    assert {r for r in routes if re.fullmatch("/v1/predict/.+", r)} == {"/v1/predict/single", "/v1/predict/batch"}


# --- the compose files' monitoring profile --------------------------------------------------------


@pytest.fixture(scope="module")
def docker_compose() -> str:
    return require_tool("docker-compose")


@pytest.mark.parametrize("file", COMPOSE_FILES)
def test_compose_monitoring_profile(docker_compose, file):
    result = subprocess.run(
        [docker_compose, "-f", str(REPO / file), "--profile", "monitoring", "config"],
        cwd=REPO,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    prometheus, grafana = services["prometheus"], services["grafana"]
    assert prometheus["profiles"] == grafana["profiles"] == ["monitoring"]
    assert all("profiles" not in s for name, s in services.items() if name.startswith("kronos-api-"))

    def mounts(service: dict) -> dict[str, tuple[Path, str]]:
        found = {}
        for entry in service["volumes"]:
            source, target, *mode = entry.split(":")
            found[target] = (Path(source), (mode or ["rw"])[0])
        return found

    prom = mounts(prometheus)
    assert prom["/etc/prometheus/prometheus.yml"] == (PROMETHEUS / "prometheus-compose.yml", "ro")
    assert prom["/etc/prometheus/rules"] == (PROMETHEUS / "rules", "ro")
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    graf = mounts(grafana)
    assert graf["/etc/grafana/provisioning"] == (MONITORING / "grafana" / "provisioning", "ro")
    assert graf["/var/lib/grafana/dashboards"] == (DASHBOARD.parent, "ro")
    for source, _ in [*prom.values(), *graf.values()]:
        assert source.exists(), source
    # The provisioning points at the mounted dashboards and at the compose service "prometheus".
    provider = yaml.safe_load((MONITORING / "grafana/provisioning/dashboards/kronos.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    datasource = yaml.safe_load((MONITORING / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    assert (
        grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
        == f"/var/lib/grafana/dashboards/{DASHBOARD.name}"
    )
    # This host only, unless the operator says otherwise.
    alertmanager = services["alertmanager"]
    for service, port in ((prometheus, 9090), (grafana, 3000), (alertmanager, 9093)):
        assert service["ports"] == [f"127.0.0.1:{port}:{port}/tcp"]
    # The alerts go somewhere: Prometheus names the profile's Alertmanager, whose route has a receiver.
    assert alertmanager["profiles"] == ["monitoring"]
    config = mounts(alertmanager)["/etc/alertmanager/alertmanager.yml"]
    assert config == (MONITORING / "alertmanager" / "alertmanager.yml", "ro")
    routing = yaml.safe_load(config[0].read_text())
    assert routing["route"]["receiver"] in {r["name"] for r in routing["receivers"]}
    (sent_to,) = yaml.safe_load((PROMETHEUS / "prometheus-compose.yml").read_text())["alerting"]["alertmanagers"]
    assert sent_to["static_configs"] == [{"targets": ["alertmanager:9093"]}]
    # No admin/admin: without a password of the operator's, Grafana refuses to start and says why.
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"] in ("", None)
    # (`config` keeps the file's $$, which the container sees as $.)
    script = grafana["entrypoint"][-1].replace("$$", "$").replace("exec /run.sh", "exit 0")
    for password, code in (("", 1), ("s3cret", 0)):
        ran = subprocess.run(
            ["sh", "-c", script], env={"GF_SECURITY_ADMIN_PASSWORD": password}, capture_output=True, text=True
        )
        assert ran.returncode == code, ran.stderr
    assert "set KRONOS_GRAFANA_ADMIN_PASSWORD" in ran.stderr or code == 0


def test_queue_capacity_is_the_max_queue_setting(samples):
    """The queue alert divides by it: it must be the instance's KRONOS_MAX_QUEUE (default here)."""
    from services.kronos_fastapi.settings import Settings

    (capacity,) = [s.value for s in samples if s.name == "kronos_queue_capacity"]
    assert capacity == Settings.model_fields["max_queue"].default
