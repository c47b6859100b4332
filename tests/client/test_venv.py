"""The client installs alone: a fresh virtual environment (``python -m venv``, its own pip), ``pip install
clients/python`` (httpx and pandas from the package index), no torch there, and a forecast against the real
server works. The environment is built in the background from the start of the session (conftest.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from client_support import API_KEY

SCRIPT = """
import json, sys
try:
    import torch  # noqa: F401
    torch_found = True
except ImportError:
    torch_found = False
import pandas as pd
import kronos_client
from kronos_client import Client

rows = pd.DataFrame(json.loads(sys.argv[3]))
rows.index = pd.to_datetime(rows.pop("timestamps"))
with Client(sys.argv[1], api_key=sys.argv[2]) as kronos:
    result = kronos.forecast(rows, 5, sample_count=4, quantiles=(0.1, 0.9), seed=3)
print(json.dumps({
    "torch": torch_found,
    "client": kronos_client.__file__,
    "close": result.frame["close"].tolist(),
    "first": str(result.frame.index[0]),
    "seed": result.seed,
}))
"""


def test_fresh_venv_has_no_torch_and_forecasts(client_venv, kronos, main_server, goog):
    assert client_venv.error is None, client_venv.error
    packages = subprocess.run(
        [str(client_venv.python), "-m", "pip", "list", "--format=json"], capture_output=True, text=True, timeout=60
    )
    names = {p["name"].lower() for p in json.loads(packages.stdout)}
    assert {"kronos-client", "httpx", "pandas"} <= names and "torch" not in names
    assert not names & {"kronos-service", "fastapi", "uvicorn", "pyarrow", "tqdm"}  # the extras are extras

    rows = goog.rename(columns=str.lower).rename_axis("timestamps").reset_index().iloc[-60:]
    rows["timestamps"] = rows["timestamps"].astype(str)
    run = subprocess.run(
        [str(client_venv.python), "-c", SCRIPT, main_server.url, API_KEY, rows.to_json(orient="columns")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=client_venv.root,  # not the repository: nothing of it on the path
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["torch"] is False
    assert Path(out["client"]).is_relative_to(client_venv.root)  # the installed copy, not clients/python/src
    assert out["first"] == "2013-03-04 00:00:00" and out["seed"] == 3
    here = kronos.forecast(goog.iloc[-60:], 5, sample_count=4, quantiles=(0.1, 0.9), seed=3)
    assert out["close"] == here.frame["Close"].tolist()  # the same forecast as from this environment
    print(f"venv built in {client_venv.seconds:.1f}s")
