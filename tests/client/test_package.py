"""The package itself: versioned with the service, typed, depending on httpx and pandas only, and never
importing the model, the service or torch; and the version check against a real server."""

from __future__ import annotations

import ast
import sys

import httpx
import kronos_client
import pytest
import tomllib
from client_support import API_KEY, CLIENT, ROOT
from kronos_client import Client, IncompatibleServer, KronosError

SOURCE = CLIENT / "src" / "kronos_client"
THIRD_PARTY_OK = {"httpx", "pandas", "numpy", "tqdm", "typing_extensions"}  # numpy comes with pandas


def test_the_version_is_the_services():
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    client = tomllib.loads((CLIENT / "pyproject.toml").read_text())["project"]
    assert client["version"] == root == kronos_client.__version__
    assert client["name"] == "kronos-client"


def test_dependencies_are_httpx_and_pandas_only():
    project = tomllib.loads((CLIENT / "pyproject.toml").read_text())["project"]
    assert sorted(d.split(">")[0].split("=")[0] for d in project["dependencies"]) == ["httpx", "pandas"]
    assert sorted(project["optional-dependencies"]) == ["parquet", "progress"]
    assert (SOURCE / "py.typed").is_file()


def test_the_client_imports_nothing_of_the_house():
    """Every import in the package is the standard library's, httpx, pandas (numpy), tqdm or its own."""
    imported = set()
    for path in SOURCE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    assert imported - set(sys.stdlib_module_names) - THIRD_PARTY_OK == set(), "the client may only speak HTTP"


def test_the_server_says_its_version_and_the_client_checks_it(main_server):
    served = httpx.get(main_server.url + "/openapi.json", headers={"X-API-Key": API_KEY}).json()["info"]["version"]
    with Client(main_server.url, api_key=API_KEY) as kronos:
        assert kronos.server_version is None  # nothing asked yet
        kronos.models()
        assert kronos.server_version == served == kronos_client.__version__


def test_a_server_older_than_the_client_needs_is_refused_naming_both(main_server, monkeypatch):
    monkeypatch.setattr("kronos_client._ops.MIN_SERVER_VERSION", "99.0.0")
    with Client(main_server.url, api_key=API_KEY) as kronos:
        with pytest.raises(IncompatibleServer) as caught:
            kronos.models()
    message = str(caught.value)
    assert kronos_client.__version__ in message and "99.0.0" in message and "older" in message
    assert isinstance(caught.value, KronosError) and caught.value.type == "server_too_old"
    with Client(main_server.url, api_key=API_KEY, check_version=False) as kronos:  # the way out, when one knows
        assert kronos.models()["default"]
