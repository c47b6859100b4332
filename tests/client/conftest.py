"""Fixtures for the client's tests (the helpers are in ``client_support.py``): the two servers, a client of
the main one, real candles, and the fresh virtual environment built in the background from collection on."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
import pytest
from client_support import API_KEY, MAIN, TIGHT, Servers, VenvBuild  # first: it puts the client on sys.path
from kronos_client import Client

VENV_TEST = "test_venv.py::test_fresh_venv_has_no_torch_and_forecasts"


@pytest.fixture(scope="session")
def servers(tmp_path_factory) -> Iterator[dict]:
    pool = Servers(tmp_path_factory.mktemp("client-servers"))
    try:
        yield pool.start(main=MAIN, tight=TIGHT)
    finally:
        pool.stop()


@pytest.fixture(scope="session")
def main_server(servers):
    return servers["main"]


@pytest.fixture(scope="session")
def tight_server(servers):
    return servers["tight"]


@pytest.fixture
def kronos(main_server) -> Iterator[Client]:
    with Client(main_server.url, api_key=API_KEY) as client:
        yield client


# --- real candles (backtesting's sample data: GOOG daily, EURUSD hourly) ----------------------


@pytest.fixture(scope="session")
def goog() -> pd.DataFrame:
    """GOOG daily candles, capitalised columns (Open, High, ...) and a DatetimeIndex, as backtesting has them."""
    from backtesting.test import GOOG

    return GOOG.iloc[-160:].copy()


@pytest.fixture(scope="session")
def eurusd() -> pd.DataFrame:
    from backtesting.test import EURUSD

    return EURUSD.iloc[-200:].copy()


@pytest.fixture(scope="session")
def universe(goog) -> pd.DataFrame:
    """A long table: ten 60-day stretches of GOOG as ids ``GOOG-0`` … ``GOOG-9`` (id, timestamps, open, ...)."""
    from backtesting.test import GOOG

    frames = []
    for k in range(10):
        part = GOOG.iloc[len(GOOG) - 60 * (k + 1) : len(GOOG) - 60 * k]
        frame = part.rename(columns=str.lower).rename_axis("timestamps").reset_index()
        frame.insert(0, "id", f"GOOG-{k}")
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


# --- the fresh virtual environment (built in the background while the other tests run) ----------

_venv: list[VenvBuild] = []


@pytest.hookimpl(trylast=True)  # after -k / -m have deselected what they deselect
def pytest_collection_modifyitems(session, config, items) -> None:
    """Start the venv build as soon as its test is collected to run, so that it overlaps the other tests."""
    if config.option.collectonly or _venv:
        return
    if any(item.nodeid.endswith(VENV_TEST) for item in items):
        _venv.append(VenvBuild())


def pytest_sessionfinish(session, exitstatus) -> None:
    for build in _venv:
        build.remove()


@pytest.fixture(scope="session")
def client_venv() -> VenvBuild:
    if not _venv:
        _venv.append(VenvBuild())
    return _venv[0].wait()
