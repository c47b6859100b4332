"""Fixtures for the model tests: the conformance checkpoint and vectors, real candles from `backtesting`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from model import Kronos, KronosPredictor, KronosTokenizer

CONFORMANCE = Path(__file__).resolve().parents[1] / "data" / "conformance"


@pytest.fixture(scope="session")
def conformance_dir() -> Path:
    return CONFORMANCE


@pytest.fixture(scope="session")
def expected() -> dict[str, np.ndarray]:
    with np.load(CONFORMANCE / "expected.npz") as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="session")
def cases() -> dict:
    return json.loads((CONFORMANCE / "cases.json").read_text())


@pytest.fixture(scope="session")
def tokenizer() -> KronosTokenizer:
    return KronosTokenizer.from_pretrained(CONFORMANCE / "tokenizer")


@pytest.fixture(scope="session")
def predictor_model() -> Kronos:
    return Kronos.from_pretrained(CONFORMANCE / "predictor")


@pytest.fixture(scope="session")
def conformance_input() -> pd.DataFrame:
    return pd.read_csv(CONFORMANCE / "input.csv", parse_dates=["timestamps"])


@pytest.fixture(scope="session")
def conformance_input2() -> pd.DataFrame:
    return pd.read_csv(CONFORMANCE / "input_batch2.csv", parse_dates=["timestamps"])


@pytest.fixture(scope="session")
def future_timestamps(cases) -> pd.Series:
    return pd.Series(pd.to_datetime(cases["y_timestamps"]))


@pytest.fixture
def make_predictor(predictor_model, tokenizer):
    def make(max_context: int = 512, clip: float = 5) -> KronosPredictor:
        return KronosPredictor(predictor_model, tokenizer, device="cpu", max_context=max_context, clip=clip)

    return make


def _backtesting_csv(name: str) -> pd.DataFrame:
    backtesting_test = pytest.importorskip("backtesting.test")
    frame = pd.read_csv(Path(backtesting_test.__file__).parent / f"{name}.csv", index_col=0, parse_dates=True)
    frame.columns = [c.lower() for c in frame.columns]
    return frame


@pytest.fixture(scope="session")
def goog() -> pd.DataFrame:
    """Real GOOG daily candles (open, high, low, close, volume) indexed by date."""
    return _backtesting_csv("GOOG")


@pytest.fixture(scope="session")
def eurusd() -> pd.DataFrame:
    """Real EURUSD hourly candles (open, high, low, close, volume) indexed by time."""
    return _backtesting_csv("EURUSD")
