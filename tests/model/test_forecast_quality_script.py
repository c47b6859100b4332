"""benchmarks/forecast_quality.py runs on real candles and reports what model/evaluation/ computes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

from model.evaluation import backtest_report

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "forecast_quality.py"


def _script():
    spec = importlib.util.spec_from_file_location("forecast_quality", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_benchmark_reports_the_backtest_metrics(tmp_path, capsys):
    quality = _script()
    out = tmp_path / "quality.json"
    args = ["GOOG", "--windows", "5", "--pred-len", "3", "--paths", "4", "--lookback", "48", "--json", str(out)]
    assert quality.main(args) == 0
    table = capsys.readouterr().out
    assert "| GOOG | model |" in table and "| GOOG | last_value |" in table and "| GOOG | drift |" in table
    report = json.loads(out.read_text())["series"]["GOOG"]
    assert report["scored_rows"] == 3 + 4 * 3
    # the persistence baseline by hand, from the CSV's closes: the windows of the contract
    series = quality.load_series("GOOG")
    closes = series.candles[:, 3].astype(np.float64)
    origins = [len(closes) - 3 - 3 * j for j in range(5)]
    errors = [abs(closes[o + h] - closes[o - 1]) for o in origins for h in range(3)]
    assert report["baselines"]["last_value"]["mae"] == np.mean(errors)
    assert report["metrics"]["coverage"][0]["calibrated_windows"] == 1  # only the newest has 4 windows before it
    # one implementation: the report is backtest_report's on the same inputs
    same = backtest_report(
        np.zeros((5, 4, 3)) + closes[origins][:, None, None],
        np.stack([closes[o : o + 3] for o in origins]),
        [closes[o - 48 : o] for o in origins],
        origins,
        [0.1, 0.5, 0.9],
    )
    assert same["baselines"]["drift"]["mae"] == report["baselines"]["drift"]["mae"]
