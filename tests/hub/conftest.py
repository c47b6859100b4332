"""A stand-in of the model hub's download API on a loopback port, serving small random Kronos checkpoints
written with our own code under the official repo names, and the environment that points
``huggingface_hub`` at it (in this process and in the subprocesses tests start).

What ``huggingface_hub`` (1.x) asks when it downloads one file: ``HEAD /<repo>/resolve/<revision>/<file>``
(answer: ``X-Repo-Commit``, ``ETag`` and ``Content-Length``; no ``X-Xet-*`` headers, so it downloads over
plain HTTP), then ``GET`` of the same URL. Errors carry ``X-Error-Code`` (``RepoNotFound``,
``RevisionNotFound``, ``EntryNotFound``) as on the real hub. Every request is logged in ``requests``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx
import pytest

from model.training.presets import preset
from model.training.trainer import new_pair

ROOT = Path(__file__).resolve().parents[2]
SMALL, MINI, BASE = "NeoQuasar/Kronos-small", "NeoQuasar/Kronos-mini", "NeoQuasar/Kronos-base"
TOKENIZER_BASE, TOKENIZER_2K = "NeoQuasar/Kronos-Tokenizer-base", "NeoQuasar/Kronos-Tokenizer-2k"


@dataclass
class Repo:
    refs: dict[str, str] = field(default_factory=dict)  # branch -> commit
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit -> file -> bytes
    token: str | None = None  # private: only this bearer token may read it


class HubStandIn:
    """The hub's file-resolution API for ``repos``; ``url`` is its HF_ENDPOINT."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_HEAD(self) -> None:  # noqa: N802 — http.server's naming
                hub._answer(self, body=False)

            def do_GET(self) -> None:  # noqa: N802
                hub._answer(self, body=True)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def publish(self, repo_id: str, files: dict[str, bytes], branch: str = "main", token: str | None = None) -> str:
        """A new commit of ``files`` on ``branch``; returns its hash."""
        repo = self.repos.setdefault(repo_id, Repo())
        repo.token = token
        digest = hashlib.sha1(repo_id.encode())
        for name in sorted(files):
            digest.update(name.encode() + hashlib.sha256(files[name]).digest())
        commit = digest.hexdigest()
        repo.commits[commit] = dict(files)
        repo.refs[branch] = commit
        return commit

    def _answer(self, handler: BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(urlsplit(handler.path).path)
        self.requests.append((handler.command, path))
        parts = path.strip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return self._error(handler, 404, "RepoNotFound", f"no route {path}")
        repo_id, revision, name = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
        repo = self.repos.get(repo_id)
        if repo is None or (repo.token and handler.headers.get("Authorization") != f"Bearer {repo.token}"):
            return self._error(handler, 401, "RepoNotFound", "Repository not found")
        commit = repo.refs.get(revision, revision)
        if commit not in repo.commits:
            return self._error(handler, 404, "RevisionNotFound", "Invalid rev id: " + revision)
        content = repo.commits[commit].get(name)
        if content is None:
            return self._error(handler, 404, "EntryNotFound", f"{name} does not exist")
        handler.send_response(200)
        handler.send_header("X-Repo-Commit", commit)
        handler.send_header("ETag", '"' + hashlib.sha256(content).hexdigest() + '"')
        handler.send_header("Content-Length", str(len(content)))
        handler.send_header("Content-Type", "application/octet-stream")
        handler.end_headers()
        if body:
            handler.wfile.write(content)

    @staticmethod
    def _error(handler: BaseHTTPRequestHandler, status: int, code: str, message: str) -> None:
        payload = json.dumps({"error": message}).encode()
        handler.send_response(status)
        handler.send_header("X-Error-Code", code)
        handler.send_header("X-Error-Message", message)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(payload)


def checkpoint_files(module) -> dict[str, bytes]:
    """config.json and model.safetensors of a module, as save_pretrained writes them."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        module.save_pretrained(folder)
        return {name: (Path(folder) / name).read_bytes() for name in ("config.json", "model.safetensors")}


@pytest.fixture(scope="session")
def official_files() -> dict[str, dict[str, bytes]]:
    """Small random checkpoints under the official names: each predictor its own weights."""
    tiny = preset("tiny")
    files = {}
    for seed, (name, tokenizer_name) in enumerate(((SMALL, TOKENIZER_BASE), (MINI, TOKENIZER_2K), (BASE, None))):
        model, tokenizer = new_pair(tiny.predictor, tiny.tokenizer, seed)
        files[name] = checkpoint_files(model)
        if tokenizer_name:
            files[tokenizer_name] = checkpoint_files(tokenizer)
    return files


@pytest.fixture
def hub(official_files) -> HubStandIn:
    stand_in = HubStandIn()
    for repo_id, files in official_files.items():
        stand_in.publish(repo_id, files)
    yield stand_in
    stand_in.close()


@dataclass
class HubEnv:
    """The HF_* environment of a test: HF_HOME in tmp, HF_ENDPOINT at the stand-in (or a closed port)."""

    monkeypatch: pytest.MonkeyPatch
    home: Path
    endpoint: str

    def set(self, offline: bool = False, endpoint: str | None = None) -> None:
        from huggingface_hub import constants

        self.endpoint = endpoint or self.endpoint
        cache = str(self.home / "hub")
        env = {"HF_HOME": str(self.home), "HF_ENDPOINT": self.endpoint, "HF_HUB_OFFLINE": "1" if offline else "0"}
        for name, value in env.items():
            self.monkeypatch.setenv(name, value)
        for name in ("HF_HUB_CACHE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "TRANSFORMERS_OFFLINE"):
            self.monkeypatch.delenv(name, raising=False)
        # huggingface_hub reads these once, at import; this process imported it already.
        self.monkeypatch.setattr(constants, "ENDPOINT", self.endpoint)
        self.monkeypatch.setattr(
            constants, "HUGGINGFACE_CO_URL_TEMPLATE", self.endpoint + "/{repo_id}/resolve/{revision}/{filename}"
        )
        self.monkeypatch.setattr(constants, "HF_HOME", str(self.home))
        self.monkeypatch.setattr(constants, "HF_HUB_CACHE", cache)
        self.monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)


@pytest.fixture
def hub_env(hub, tmp_path, monkeypatch) -> HubEnv:
    env = HubEnv(monkeypatch, tmp_path / "hf-home", hub.url)
    env.set()
    return env


def closed_port_url() -> str:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """A console entry point as users run it, in a subprocess with this test's HF_* environment."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=timeout)


class Server:
    """``python -m services.kronos_fastapi`` on a loopback port with the given KRONOS_* variables."""

    def __init__(self, workdir: Path, env: dict[str, str]):
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        base = {k: v for k, v in os.environ.items() if not k.startswith("KRONOS_")}
        base["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), base.get("PYTHONPATH")]))
        base.update({"KRONOS_PORT": str(self.port), "KRONOS_HOST": "127.0.0.1", "OMP_NUM_THREADS": "1"})
        base.update(env)
        self.log = open(workdir / "server.log", "w")  # noqa: SIM115 — closed in stop()
        self.log_path = workdir / "server.log"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "services.kronos_fastapi"], cwd=workdir, env=base, stdout=self.log, stderr=self.log
        )

    def wait_state(self, ready: bool = True, timeout: float = 90) -> httpx.Response:
        """/v1/readyz once the default model is ready (or, ``ready=False``, once it has failed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited: {self.log_path.read_text()[-3000:]}")
            try:
                response = httpx.get(self.url + "/v1/readyz", timeout=5)
                if response.json().get("status") == ("ready" if ready else "failed"):
                    return response
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"the server never got there: {self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.fixture
def start_server(tmp_path):
    servers = []

    def start(env: dict[str, str]) -> Server:
        server = Server(tmp_path / f"server{len(servers)}", env)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
