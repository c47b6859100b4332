"""Device strings, the CUDA path where a GPU exists, and the kronos-forecast command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from model import DeviceError, Kronos, KronosPredictor, KronosTokenizer
from model.checkpoints.bundled import bundled_model_path, bundled_tokenizer_path
from model.devices import parse_device, resolve_device


@pytest.mark.parametrize("spec,normalized", [(None, "auto"), ("CPU", "cpu"), (" cuda:1 ", "cuda:1"), ("mps", "mps")])
def test_parse_device(spec, normalized):
    assert parse_device(spec) == normalized


def test_unknown_device_lists_the_choices():
    with pytest.raises(DeviceError, match="expected cpu, cuda, cuda:N, mps or auto"):
        parse_device("gpu0")


def test_auto_and_cpu_resolve_on_any_machine():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in {"cpu", "cuda", "mps"}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_forecast_matches_cpu(goog):
    model = Kronos.from_pretrained(bundled_model_path())
    tokenizer = KronosTokenizer.from_pretrained(bundled_tokenizer_path())
    frame = goog.iloc[-200:]
    future = pd.date_range(frame.index[-1] + pd.Timedelta(days=1), periods=20, freq="D")
    args = (frame, frame.index.to_series(), future, 20)
    cpu = KronosPredictor(model, tokenizer, device="cpu").predict(*args, top_k=1)
    gpu = KronosPredictor(
        Kronos.from_pretrained(bundled_model_path()),
        KronosTokenizer.from_pretrained(bundled_tokenizer_path()),
        device="cuda",
    ).predict(*args, top_k=1)
    np.testing.assert_allclose(gpu.to_numpy(), cpu.to_numpy(), rtol=1e-3)


def test_forecast_command_on_real_candles(tmp_path):
    backtesting_test = pytest.importorskip("backtesting.test")
    csv = Path(backtesting_test.__file__).parent / "EURUSD.csv"
    out = subprocess.run(
        [sys.executable, "-m", "model", str(csv), "--pred-len", "6", "--lookback", "100", "--seed", "5"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "timestamp,open,high,low,close,volume"  # EURUSD has no amount: none is invented
    assert len(lines) == 7
    assert np.isfinite(np.array([line.split(",")[1:] for line in lines[1:]], dtype=float)).all()


def test_forecast_command_reports_bad_model_path(tmp_path):
    csv = tmp_path / "x.csv"
    csv.write_text("timestamp,open,high,low,close\n2024-01-01,1,2,0.5,1.5\n2024-01-02,1,2,0.5,1.5\n")
    out = subprocess.run(
        [sys.executable, "-m", "model", str(csv), "--model", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert str(tmp_path / "missing") in out.stderr
