"""Write deploy/k8s/base/router/nginx.conf from the repository's nginx.conf, or check that it is current.

The in-cluster router runs the project's own nginx.conf unchanged: the Services kronos-api-cpu and
kronos-api-gpu have the names and port (8000) of its upstreams, so the routing is the one the
compose balancer uses and the routing tests cover. Kustomize reads files only from inside the
kustomization folder, hence this copy (with a header saying where it comes from).

    python deploy/k8s/sync_router_conf.py           # rewrite the copy after editing nginx.conf
    python deploy/k8s/sync_router_conf.py --check   # exit 1 if the copy is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "nginx.conf"
TARGET = Path(__file__).resolve().parent / "base" / "router" / "nginx.conf"
HEADER = (
    "# GENERATED from the repository's nginx.conf by deploy/k8s/sync_router_conf.py; do not edit here.\n"
    "# In the cluster, kronos-api-cpu and kronos-api-gpu are the two pools' Services (port 8000).\n"
    "\n"
)

# What must differ in a cluster. Docker's embedded DNS server (if nginx.conf ever names it for
# re-resolving the instances) does not exist in a pod; the cluster's DNS Service does.
SUBSTITUTIONS = (("resolver 127.0.0.11", "resolver kube-dns.kube-system.svc.cluster.local"),)


def render(source: str) -> str:
    for docker, cluster in SUBSTITUTIONS:
        source = source.replace(docker, cluster)
    return HEADER + source


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the copy is current")
    args = parser.parse_args(argv)
    expected = render(SOURCE.read_text())
    if args.check:
        if not TARGET.is_file() or TARGET.read_text() != expected:
            print(f"{TARGET.relative_to(REPO)} is stale: run python deploy/k8s/sync_router_conf.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(expected)
    print(f"wrote {TARGET.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
