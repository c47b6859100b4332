"""The Kubernetes manifests (deploy/k8s), as a real kustomize renders them: every resource valid
against the current Kubernetes schemas (kubernetes-validate, strict), and the facts that matter:
probes, GPU request, security context, graceful termination, the HPA's metric, PDBs that select
their pods, settings the service knows, and the router's routing (the project's nginx.conf,
bound to the pools' Services, run in a real nginx)."""

from __future__ import annotations

import http.server
import re
import runpy
import subprocess
import sys
import threading

import httpx
import kubernetes_validate
import pytest
from deploy_support import REPO, ManagedProcess, clean_env, free_port, nginx_argv, wait_until
from k8s_support import (
    COMPONENTS,
    K8S,
    OVERLAYS,
    POOLS,
    container,
    env_of,
    one,
    pick,
    render,
    render_dir,
    render_with_component,
    settings_of,
)

from services.kronos_fastapi.drain import DRAIN_MARGIN_S
from services.kronos_fastapi.settings import Settings, SettingsError, load_settings

KUBERNETES_VERSION = kubernetes_validate.latest_version()
SETTING_NAMES = {f"KRONOS_{name.upper()}" for name in Settings.model_fields}
# Docker image facts the manifests must agree with (Dockerfile: USER 10001, KRONOS_PORT=8000).
IMAGE_UID = 10001
IMAGE_PORT = 8000
NGINX_UID = 101  # the nginx user of the official nginx image


def validate(docs: list[dict]) -> None:
    assert docs
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}")


def test_the_schemas_are_a_current_kubernetes():
    assert tuple(int(part) for part in KUBERNETES_VERSION.split(".")[:2]) >= (1, 37)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_every_resource_is_valid(overlay):
    validate(render(overlay))


@pytest.mark.parametrize("part", ["common", "cpu", "gpu", "router"])
def test_each_base_part_renders_and_is_valid(part):
    validate(list(render_dir(str(K8S / "base" / part))))


@pytest.mark.parametrize("component", COMPONENTS)
def test_components_render_on_the_hybrid_overlay_and_are_valid(tmp_path, component):
    docs = render_with_component(tmp_path, "hybrid", component)
    validate(docs)
    settings = settings_of(docs)
    for name in POOLS:  # a folder to serve: nothing to fetch, no revision to pin
        if component in ("model-volume", "bundled-model"):
            assert "initContainers" not in one(docs, "Deployment", name)["spec"]["template"]["spec"]
            assert settings["KRONOS_MODEL_REVISION"] == settings["KRONOS_TOKENIZER_REVISION"] == ""
    if component == "model-volume":
        for name in POOLS:
            deployment = one(docs, "Deployment", name)
            volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
            assert volumes["models"]["persistentVolumeClaim"] == {"claimName": "kronos-models", "readOnly": True}
            mounts = {m["name"]: m for m in container(deployment)["volumeMounts"]}
            assert mounts["models"] == {"name": "models", "mountPath": "/models", "readOnly": True}
        assert settings["KRONOS_MODEL_PATH"] == "/models/Kronos-small"
    elif component == "open-api":  # for a test cluster: no Secret needed, no key asked
        for name in POOLS:
            keys = env_of(one(docs, "Deployment", name))["KRONOS_API_KEYS"]["valueFrom"]["secretKeyRef"]
            assert keys["optional"] is True
        assert settings["KRONOS_REQUIRE_API_KEYS"] == "false"
    elif component == "cpu-autoscaling":  # no Prometheus adapter: CPU alone, so it scales down too
        (metric,) = one(docs, "HorizontalPodAutoscaler", "kronos-api-cpu")["spec"]["metrics"]
        assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    elif component == "jobs":  # tests/deploy/test_jobs_deploy.py checks it in full
        assert settings["KRONOS_JOBS_ENABLED"] == "true"
    else:
        assert settings["KRONOS_MODEL_PATH"] == "/models"
    # The overlay's own settings survive the component's merge.
    assert settings["KRONOS_TRUSTED_PROXIES"] == "kronos-router-pods"


def test_what_each_overlay_contains():
    names = {overlay: {(d["kind"], d["metadata"]["name"]) for d in render(overlay)} for overlay in OVERLAYS}
    assert ("Deployment", "kronos-api-cpu") in names["cpu"] and ("Deployment", "kronos-api-gpu") not in names["cpu"]
    assert ("HorizontalPodAutoscaler", "kronos-api-cpu") in names["cpu"]
    assert ("Deployment", "kronos-api-gpu") in names["gpu"] and ("Deployment", "kronos-api-cpu") not in names["gpu"]
    assert not pick(render("gpu"), "HorizontalPodAutoscaler")
    for pool in POOLS:
        assert {("Deployment", pool), ("Service", pool), ("PodDisruptionBudget", pool)} <= names["hybrid"]
    assert {("Deployment", "kronos-router"), ("Service", "kronos-router"), ("Service", "kronos-router-pods")} <= names[
        "hybrid"
    ]
    # The router needs both pools: it is only in the hybrid variant.
    assert not any(name.startswith("kronos-router") for _, name in names["cpu"] | names["gpu"])
    for overlay in OVERLAYS:
        assert ("Namespace", "kronos") in names[overlay]
        for doc in render(overlay):
            if doc["kind"] != "Namespace":
                assert doc["metadata"]["namespace"] == "kronos"


def pool_deployments() -> list[tuple[str, dict, dict]]:
    """(name, Deployment, settings) of each pool as the hybrid overlay has it."""
    docs = render("hybrid")
    return [(name, one(docs, "Deployment", name), settings_of(docs)) for name in POOLS]


@pytest.mark.parametrize("name", list(POOLS))
def test_pool_probes(name):
    deployment = one(render("hybrid"), "Deployment", name)
    main = container(deployment)
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    assert ports == {"http": IMAGE_PORT}
    assert main["livenessProbe"]["httpGet"] == {"path": "/v1/healthz", "port": "http"}
    assert main["readinessProbe"]["httpGet"] == {"path": "/v1/readyz", "port": "http"}
    startup = main["startupProbe"]
    # Started = loaded and warmed up: a load that never ends fails the startup probe, and the kubelet
    # restarts the container (with healthz it would stay unready for ever) ...
    assert startup["httpGet"] == {"path": "/v1/readyz", "port": "http"}
    allowed = startup["periodSeconds"] * startup["failureThreshold"]
    # ... but the service's own load timeout comes first, with the reason in the log.
    assert float(settings_of(render("hybrid"))["KRONOS_MODEL_LOAD_TIMEOUT_S"]) < allowed
    # A rollout is not declared stuck before the init container's download and the startup probe gave up.
    fetch = " ".join(deployment["spec"]["template"]["spec"]["initContainers"][0]["command"])
    download = int(re.search(r"timeout (\d+) kronos-fetch", fetch)[1])
    assert deployment["spec"]["progressDeadlineSeconds"] > download + allowed


@pytest.mark.parametrize("name", list(POOLS))
def test_pinned_weights_fetched_once_and_read_offline(name):
    docs = render("hybrid")
    settings = settings_of(docs)
    spec = one(docs, "Deployment", name)["spec"]["template"]["spec"]
    # Every pod serves the same weights: hub commits, not a branch that moves.
    for key in ("KRONOS_MODEL_REVISION", "KRONOS_TOKENIZER_REVISION"):
        assert re.fullmatch(r"[0-9a-f]{40}", settings[key]), (key, settings[key])
    (fetch,) = spec["initContainers"]
    assert fetch["image"] == container(one(docs, "Deployment", name))["image"]
    command = " ".join(fetch["command"])
    for needed in ("timeout ", "kronos-fetch", '"$KRONOS_MODEL_PATH"', '--revision "$KRONOS_MODEL_REVISION"'):
        assert needed in command
    assert '--tokenizer-revision "$KRONOS_TOKENIZER_REVISION"' in command
    assert [e["configMapRef"]["name"] for e in fetch["envFrom"]] == [
        e["configMapRef"]["name"] for e in container(one(docs, "Deployment", name))["envFrom"]
    ]
    cache = {m["name"]: m["mountPath"] for m in fetch["volumeMounts"]}
    assert settings["HF_HOME"].startswith(cache["model-cache"] + "/")  # into the cache the service reads
    assert fetch["securityContext"] == container(one(docs, "Deployment", name))["securityContext"]
    # The serving container never reaches for the hub.
    assert env_of(one(docs, "Deployment", name))["HF_HUB_OFFLINE"]["value"] == "1"


def test_probe_paths_are_the_services_own_routes():
    from services.kronos_fastapi.app import LIVENESS, PROBES

    assert LIVENESS == "/v1/healthz"
    assert {"/v1/healthz", "/v1/readyz"} <= set(PROBES)


def test_gpu_pool_asks_for_one_gpu_and_the_cpu_pool_for_none():
    docs = render("hybrid")
    gpu = container(one(docs, "Deployment", "kronos-api-gpu"))
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert gpu["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert env_of(one(docs, "Deployment", "kronos-api-gpu"))["KRONOS_DEVICE"]["value"] == "cuda:0"
    assert gpu["image"].endswith(":gpu")
    cpu = container(one(docs, "Deployment", "kronos-api-cpu"))
    assert "nvidia.com/gpu" not in cpu["resources"]["limits"] | cpu["resources"]["requests"]
    assert env_of(one(docs, "Deployment", "kronos-api-cpu"))["KRONOS_DEVICE"]["value"] == "cpu"
    assert cpu["image"].endswith(":cpu")


def quantity(value: str | int) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "m": 1e-3}
    text = str(value)
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


@pytest.mark.parametrize("name", list(POOLS))
def test_pool_resources_follow_the_measurements(name):
    deployment = one(render("hybrid"), "Deployment", name)
    resources = container(deployment)["resources"]
    # DEPLOYMENT_DEVICE_OPTIONS.md, measured with the KV slab: one Kronos-base holds 2.8 GiB on CPU
    # (the slab is allocated at start, so load adds little); the request covers it.
    assert quantity(resources["requests"]["memory"]) >= 2.8 * 2**30
    assert quantity(resources["limits"]["memory"]) >= quantity(resources["requests"]["memory"])
    # torch's threads never exceed the CPU limit (unset, torch would use every core of the node).
    threads = int(env_of(deployment)["OMP_NUM_THREADS"]["value"])
    assert 1 <= threads <= quantity(resources["limits"]["cpu"])


@pytest.mark.parametrize("name", ["kronos-api-cpu", "kronos-api-gpu", "kronos-router"])
def test_security_context(name):
    deployment = one(render("hybrid"), "Deployment", name)
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == (NGINX_UID if name == "kronos-router" else IMAGE_UID)
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    for c in pod["containers"]:
        context = c["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"]["drop"] == ["ALL"]
        assert context.get("privileged", False) is False
        # With a read-only root, whatever must be written is a volume.
        mounted = {m["mountPath"] for m in c["volumeMounts"]}
        assert "/tmp" in mounted


@pytest.mark.parametrize("name", ["kronos-api-cpu", "kronos-api-gpu", "kronos-router"])
def test_no_service_links_to_collide_with_kronos_settings(name):
    # With service links on, the Service kronos-router would put KRONOS_ROUTER_PORT=tcp://... into
    # every pod, and a Service named "kronos" would set KRONOS_PORT itself: settings the service reads.
    assert one(render("hybrid"), "Deployment", name)["spec"]["template"]["spec"]["enableServiceLinks"] is False


def test_pool_settings_come_from_the_configmap_and_keys_from_a_secret():
    for _name, deployment, settings in pool_deployments():
        main = container(deployment)
        generated = [
            d["metadata"]["name"] for d in render("hybrid") if d["metadata"]["name"].startswith("kronos-settings-")
        ]
        assert [s["configMapRef"]["name"] for s in main["envFrom"]] == generated
        keys = env_of(deployment)["KRONOS_API_KEYS"]["valueFrom"]["secretKeyRef"]
        # Fail closed: not optional, so a missing or misnamed Secret keeps the pod from starting ...
        assert keys == {"name": "kronos-api-keys", "key": "KRONOS_API_KEYS"}
        # ... and an empty key list makes the service refuse to start.
        assert settings["KRONOS_REQUIRE_API_KEYS"] == "true"
        assert env_of(deployment)["KRONOS_INSTANCE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
        # No secret in the ConfigMap.
        assert "KRONOS_API_KEYS" not in settings


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_configmap_settings_are_the_services_and_load(overlay, tmp_path):
    settings = settings_of(render(overlay))
    kronos = {k: v for k, v in settings.items() if k.startswith("KRONOS_")}
    assert set(kronos) <= SETTING_NAMES, "not a setting of the service"
    assert set(settings) - set(kronos) == {"HF_HOME"}
    # The model comes from a hub id, cached under the pods' cache volume.
    assert settings["KRONOS_MODEL_PATH"] == "NeoQuasar/Kronos-small"
    assert settings["HF_HOME"].startswith("/cache/")
    # Every other value is one the service accepts (the model paths point at the bundled model
    # here: loading a hub id is not this test's subject).
    values = {k.removeprefix("KRONOS_").lower(): v for k, v in kronos.items()}
    values.pop("model_path"), values.pop("tokenizer_path")
    loaded = load_settings(env_file=None, api_keys="from-the-secret", **values)
    assert loaded.max_queue == int(settings["KRONOS_MAX_QUEUE"])
    # The Secret present but empty: the pod exits at start-up, saying why.
    with pytest.raises(SettingsError, match="KRONOS_REQUIRE_API_KEYS is true but KRONOS_API_KEYS is empty"):
        load_settings(env_file=None, **values)


def test_hf_cache_is_a_writable_volume():
    for _name, deployment, settings in pool_deployments():
        mounts = {m["mountPath"]: m["name"] for m in container(deployment)["volumeMounts"]}
        cache = next(path for path in mounts if settings["HF_HOME"].startswith(path + "/"))
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        assert "emptyDir" in volumes[mounts[cache]]


@pytest.mark.parametrize("name", ["kronos-api-cpu", "kronos-api-gpu"])
def test_graceful_termination_outlasts_the_drain(name):
    docs = render("hybrid")
    settings = settings_of(docs)
    pod = one(docs, "Deployment", name)["spec"]["template"]["spec"]
    pause = container(one(docs, "Deployment", name))["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = float(settings["KRONOS_SHUTDOWN_TIMEOUT_S"])
    assert drain == Settings.model_fields["shutdown_timeout_s"].default
    # Every admitted request can finish: the drain outlasts the request timeout ...
    assert drain > float(settings["KRONOS_REQUEST_TIMEOUT_S"])
    # ... and the kubelet's KILL comes after the drain and the 503s of what is left.
    assert pod["terminationGracePeriodSeconds"] > pause + drain + DRAIN_MARGIN_S


def test_the_router_stops_gracefully_after_its_longest_request():
    pod = one(render("hybrid"), "Deployment", "kronos-router")["spec"]["template"]["spec"]
    stop = " ".join(
        container(one(render("hybrid"), "Deployment", "kronos-router"))["lifecycle"]["preStop"]["exec"]["command"]
    )
    assert "sleep 5" in stop and "nginx -s quit" in stop  # SIGTERM is nginx's fast stop: it drops requests
    conf = (REPO / "nginx.conf").read_text()
    read = int(re.search(r"proxy_read_timeout (\d+)s;", conf)[1])
    retry = int(re.search(r"proxy_next_upstream_timeout (\d+)s;", conf)[1])
    assert pod["terminationGracePeriodSeconds"] > 5 + read + retry


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_and_pdbs_select_exactly_their_pods(overlay):
    docs = render(overlay)
    deployments = pick(docs, "Deployment")
    for deployment in deployments:
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selects(deployment["spec"]["selector"]["matchLabels"], labels)
    for kind, selector_of in (
        ("Service", lambda d: d["spec"]["selector"]),
        ("PodDisruptionBudget", lambda d: d["spec"]["selector"]["matchLabels"]),
    ):
        for doc in pick(docs, kind):
            chosen = [d for d in deployments if selects(selector_of(doc), d["spec"]["template"]["metadata"]["labels"])]
            assert len(chosen) == 1, f"{kind}/{doc['metadata']['name']} selects {len(chosen)} deployments"
            if kind == "Service":
                names = {p["name"] for c in chosen[0]["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
                assert {p["targetPort"] for p in doc["spec"]["ports"]} <= names
    for pdb in pick(docs, "PodDisruptionBudget"):
        # maxUnavailable, never a minAvailable that a one-pod pool could not give up in a drain.
        assert pdb["spec"] == {"maxUnavailable": 1, "selector": pdb["spec"]["selector"]}


def test_cpu_pool_hpa_scales_on_queue_depth_per_pod_alone():
    docs = render("cpu")
    hpa = one(docs, "HorizontalPodAutoscaler", "kronos-api-cpu")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "kronos-api-cpu")
    metrics = hpa["spec"]["metrics"]
    # One metric: with two, the autoscaler skips every scale-down while either cannot be read.
    assert len(metrics) == 1
    assert metrics[0]["type"] == "Pods"
    assert metrics[0]["pods"]["metric"]["name"] == "kronos_queue_depth"
    assert metrics[0]["pods"]["target"] == {"type": "AverageValue", "averageValue": "8"}
    assert hpa["spec"]["minReplicas"] >= 2
    # The autoscaler owns the replica count: none in the Deployment for `kubectl apply` to reset.
    assert "replicas" not in one(docs, "Deployment", "kronos-api-cpu")["spec"]
    # The queue target is far below what one pod may queue (KRONOS_MAX_QUEUE), so it scales first.
    assert int(metrics[0]["pods"]["target"]["averageValue"]) < int(settings_of(docs)["KRONOS_MAX_QUEUE"]) / 4


def test_gpu_pool_keeps_a_count_scaled_by_hand_and_replaces_one_pod_at_a_time():
    for name in POOLS:
        spec = one(render("hybrid"), "Deployment", name)["spec"]
        # No replica count for `kubectl apply` to reset (the HPA's, or `kubectl scale`'s).
        assert "replicas" not in spec
        # A new pod proves itself before the next old one goes.
        assert spec["minReadySeconds"] >= 30
    gpu = one(render("hybrid"), "Deployment", "kronos-api-gpu")["spec"]["strategy"]["rollingUpdate"]
    assert gpu == {"maxSurge": 0, "maxUnavailable": 1}  # no spare GPU assumed; one pod at a time


def test_hybrid_pools_trust_only_the_router_pods():
    docs = render("hybrid")
    assert settings_of(docs)["KRONOS_TRUSTED_PROXIES"] == "kronos-router-pods"
    headless = one(docs, "Service", "kronos-router-pods")
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"] == one(docs, "Service", "kronos-router")["spec"]["selector"]
    assert "KRONOS_TRUSTED_PROXIES" not in settings_of(render("cpu"))


# --- the router -----------------------------------------------------------------------------------


def router_conf(docs: list[dict]) -> str:
    maps = [d for d in pick(docs, "ConfigMap") if d["metadata"]["name"].startswith("kronos-router-config-")]
    assert len(maps) == 1
    return maps[0]["data"]["nginx.conf"]


def test_router_config_is_the_projects_nginx_conf():
    check = subprocess.run(
        [sys.executable, str(K8S / "sync_router_conf.py"), "--check"], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stderr
    sync = runpy.run_path(str(K8S / "sync_router_conf.py"))
    conf = router_conf(render("hybrid"))
    assert conf == sync["render"]((REPO / "nginx.conf").read_text())
    header_end = conf.index("\n\n") + 2
    assert all(line.startswith("#") for line in conf[:header_end].strip().splitlines())
    # Past the header, nginx.conf itself, but for the documented cluster substitutions.
    body = conf[header_end:]
    for docker, cluster in sync["SUBSTITUTIONS"]:
        body = body.replace(cluster, docker)
    assert body == (REPO / "nginx.conf").read_text()


def test_router_upstreams_are_the_pool_services_and_its_port_is_exposed():
    docs = render("hybrid")
    conf = router_conf(docs)
    upstreams = set(re.findall(r"^\s*server\s+([\w.-]+:\d+)", conf, re.MULTILINE))
    services = {f"{name}:{port['port']}" for name in POOLS for port in one(docs, "Service", name)["spec"]["ports"]}
    assert upstreams == services
    listen = re.findall(r"^\s*listen\s+(\d+);", conf, re.MULTILINE)
    router = one(docs, "Deployment", "kronos-router")
    assert [str(p["containerPort"]) for p in container(router)["ports"]] == listen
    mount = next(m for m in container(router)["volumeMounts"] if m["name"] == "config")
    assert (mount["mountPath"], mount["subPath"]) == ("/etc/nginx/nginx.conf", "nginx.conf")
    # nginx itself, not the image's entrypoint scripts, which write under /etc/nginx.
    assert container(router)["command"][0] == "nginx"
    # Where the official image's nginx writes (pid, request bodies kept for failover): volumes.
    mounted = {m["mountPath"] for m in container(router)["volumeMounts"]}
    assert {"/var/cache/nginx", "/var/run"} <= mounted


@pytest.fixture(scope="module")
def router(nginx_bin, instances, tmp_path_factory):
    """The router ConfigMap's nginx.conf in a real nginx, its two Service names pointed at the
    two live instances (as cluster DNS would point them at the pools)."""
    prefix = tmp_path_factory.mktemp("k8s-router")
    conf = router_conf(render("hybrid"))
    port = free_port()
    conf = (
        conf.replace("kronos-api-cpu:8000", f"127.0.0.1:{instances.cpu.port}")
        .replace("kronos-api-gpu:8000", f"127.0.0.1:{instances.gpu.port}")
        .replace("listen 8080;", f"listen 127.0.0.1:{port};")
    )
    (prefix / "nginx.conf").write_text(conf)
    process = ManagedProcess("router", nginx_argv(nginx_bin, prefix), clean_env(), prefix, prefix / "access.log")
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return "X-Backend-Used" in httpx.get(url + "/v1/healthz", timeout=5).headers
        except httpx.HTTPError:
            return False

    try:
        assert wait_until(lambda: not process.alive or answers(), 15.0) and process.alive, process.log_tail()
        with httpx.Client(base_url=url, timeout=60) as client:
            yield client
    finally:
        process.stop()


ONE = {"data": [[100, 105, 98, 102]], "pred_len": 5}


@pytest.mark.parametrize(
    ("path", "body", "header", "backend", "instance"),
    [
        ("/v1/predict/single", ONE, None, "cpu", "kronos-api-cpu"),
        ("/v1/predict/batch", {"batch": [ONE, ONE]}, None, "gpu", "kronos-api-gpu"),
        ("/v1/predict/batch", {"batch": [ONE]}, "cpu", "cpu", "kronos-api-cpu"),
        ("/v1/predict/single", ONE, "gpu", "gpu", "kronos-api-gpu"),
    ],
)
def test_router_routes_single_to_cpu_batch_to_gpu_and_obeys_the_header(router, path, body, header, backend, instance):
    headers = {"X-Kronos-Device": header} if header else {}
    response = router.post(path, json=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["X-Backend-Used"] == backend
    assert response.headers["X-Kronos-Instance"] == instance


def test_router_rejects_an_unknown_device_header(router):
    response = router.post("/v1/predict/single", json=ONE, headers={"X-Kronos-Device": "tpu"})
    assert response.status_code == 400
    assert response.headers["X-Backend-Used"] == "none"
    assert response.json()["error"]["type"] == "invalid_device_header"


class _PodNamedInstance(http.server.BaseHTTPRequestHandler):
    """Answers like a pool pod would name itself: KRONOS_INSTANCE_NAME is the pod's metadata.name."""

    pod_name = ""

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        body = b'{"status": "ok"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Kronos-Instance", self.pod_name)
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args) -> None:  # quiet
        pass


def test_router_names_the_pool_of_a_pod_named_instance(nginx_bin, tmp_path_factory):
    """In the cluster an instance is named after its pod (kronos-api-cpu-<replicaset>-<pod>), not its
    Service: X-Backend-Used must still say which pool answered (it said "none" when the map matched
    the compose names only)."""
    servers = {}
    for pool, pod in (("cpu", "kronos-api-cpu-5d8f7c9b4-x2x7q"), ("gpu", "kronos-api-gpu-6b9c8d7f5-k4m2n")):
        handler = type(f"{pool}Pod", (_PodNamedInstance,), {"pod_name": pod})
        servers[pool] = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=servers[pool].serve_forever, daemon=True).start()
    prefix = tmp_path_factory.mktemp("k8s-router-pods")
    port = free_port()
    conf = (
        router_conf(render("hybrid"))
        .replace("kronos-api-cpu:8000", f"127.0.0.1:{servers['cpu'].server_port}")
        .replace("kronos-api-gpu:8000", f"127.0.0.1:{servers['gpu'].server_port}")
        .replace("listen 8080;", f"listen 127.0.0.1:{port};")
    )
    (prefix / "nginx.conf").write_text(conf)
    process = ManagedProcess("router-pods", nginx_argv(nginx_bin, prefix), clean_env(), prefix, prefix / "access.log")
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_until(lambda: not process.alive or _answers(url), 15.0) and process.alive, process.log_tail()
        single = httpx.post(url + "/v1/predict/single", json=ONE, timeout=10)
        batch = httpx.post(url + "/v1/predict/batch", json={"batch": [ONE]}, timeout=10)
        assert (single.headers["X-Backend-Used"], single.headers["X-Kronos-Instance"]) == (
            "cpu",
            "kronos-api-cpu-5d8f7c9b4-x2x7q",
        )
        assert batch.headers["X-Backend-Used"] == "gpu"
        assert "X-Backend-Failover-From" not in single.headers
    finally:
        process.stop()
        for server in servers.values():
            server.shutdown()
            server.server_close()


def _answers(url: str) -> bool:
    try:
        return "X-Backend-Used" in httpx.get(url + "/v1/healthz", timeout=5).headers
    except httpx.HTTPError:
        return False


@pytest.mark.parametrize("name", ["kronos-api-cpu", "kronos-api-gpu", "kronos-router"])
def test_pods_spread_over_nodes_and_zones(name):
    deployment = one(render("hybrid"), "Deployment", name)
    labels = deployment["spec"]["selector"]["matchLabels"]
    spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    for constraint in spread:
        assert constraint["labelSelector"]["matchLabels"] == labels  # its own pods, not the others'
        assert constraint["whenUnsatisfiable"] == "ScheduleAnyway"  # a one-node cluster still runs them


def test_only_the_router_and_prometheus_reach_the_pools():
    docs = render("hybrid")
    (policy,) = pick(docs, "NetworkPolicy")
    assert policy["metadata"]["namespace"] == "kronos"
    selector = policy["spec"]["podSelector"]
    for name, pool in POOLS.items():
        labels = one(docs, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
        assert selects(selector["matchLabels"], labels)
        assert pool in selector["matchExpressions"][0]["values"]
    router = one(docs, "Deployment", "kronos-router")["spec"]["template"]["metadata"]["labels"]
    (rule,) = policy["spec"]["ingress"]
    peers = rule["from"]
    assert selects(peers[0]["podSelector"]["matchLabels"], router)
    assert peers[1]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "monitoring"}
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert policy["spec"]["policyTypes"] == ["Ingress"]  # egress (hub, job store) stays open
    # The CPU-only and GPU-only overlays serve clients directly: no policy there.
    assert not pick(render("cpu"), "NetworkPolicy") and not pick(render("gpu"), "NetworkPolicy")
