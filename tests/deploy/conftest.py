"""Fixtures for the deployment tests: the hybrid stack for real, on loopback.

Two service processes stand in for the two containers (both on CPU here; each named by
KRONOS_INSTANCE_NAME so the tests can tell which one answered) and a real nginx runs the project's
nginx.conf in front of them. Everything is started once per session and always ended.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from deploy_support import Nginx, ServiceInstance, check_nginx_can_run, require_tool


@dataclass
class Instances:
    cpu: ServiceInstance
    gpu: ServiceInstance


@pytest.fixture(scope="session")
def instances(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instances]:
    workdir: Path = tmp_path_factory.mktemp("instances")
    pair = Instances(cpu=ServiceInstance("kronos-api-cpu", workdir), gpu=ServiceInstance("kronos-api-gpu", workdir))
    try:
        # Both at once: start-up is mostly importing torch, which overlaps well.
        with ThreadPoolExecutor(2) as pool:
            # One job store for both, as the hybrid compose file's shared kronos-jobs volume gives them.
            shared = {"KRONOS_DEVICE": "cpu", "KRONOS_JOBS_DIR": str(workdir / "jobs")}
            starting = [pool.submit(i.start_on_a_free_port, **shared) for i in (pair.cpu, pair.gpu)]
            for future in starting:
                future.result()
            for future in [pool.submit(instance.wait_ready) for instance in (pair.cpu, pair.gpu)]:
                future.result()
        yield pair
    finally:
        pair.cpu.stop()
        pair.gpu.stop()


@pytest.fixture(scope="session")
def nginx_bin() -> str:
    nginx = require_tool("nginx")
    check_nginx_can_run()
    return nginx


@pytest.fixture(scope="session")
def balancer(nginx_bin: str, instances: Instances, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    lb = Nginx(nginx_bin, tmp_path_factory.mktemp("nginx"), instances.cpu.port, instances.gpu.port)
    try:
        yield lb
    finally:
        lb.stop()
