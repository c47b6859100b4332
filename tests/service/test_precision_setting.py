"""KRONOS_PRECISION and a KRONOS_MODELS entry's #precision: the served models run it, readyz,
/v1/models and every answer's served-by fields say it, and a CPU without bf16 arithmetic is refused
at load (not ready, with the reason) rather than served many times slower."""

from __future__ import annotations

import time

import pytest
from conftest import GUIDE_SINGLE, LiveApp

from model.nn import precision as precision_module
from model.nn.precision import cpu_has_bf16
from services.kronos_fastapi import create_app, load_settings
from services.kronos_fastapi.settings import SettingsError


def test_precision_names_are_checked_with_the_variable_named():
    with pytest.raises(SettingsError, match="KRONOS_PRECISION"):
        load_settings(env_file=None, precision="fp16")
    with pytest.raises(SettingsError, match="KRONOS_MODELS: .*precision after # must be one of fp32, bf16, int8"):
        load_settings(env_file=None, models=["demo=bundled#fp16"])
    assert load_settings(env_file=None, precision="BF16").precision == "bf16"


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no bf16 arithmetic")
def test_each_model_runs_and_reports_its_precision():
    settings = load_settings(env_file=None, models=["fast=bundled#bf16", "exact=bundled", "small=bundled#int8"])
    with LiveApp(create_app(settings)).wait_ready(60) as client:
        listed = {m["name"]: m["precision"] for m in client.get("/v1/models").json()["models"]}
        assert listed == {"fast": "bf16", "exact": "fp32", "small": "int8"}
        ready = client.get("/v1/readyz").json()
        assert ready["model"]["precision"] == "bf16"  # the default model: the first
        assert {m["name"]: m["precision"] for m in ready["models"]} == listed
        for name, precision in listed.items():
            answer = client.post("/v1/predict/single", json={**GUIDE_SINGLE, "model": name, "seed": 1})
            assert answer.status_code == 200, answer.text
            assert answer.json()["precision"] == precision and answer.json()["model_name"] == name


def test_a_cpu_without_bf16_leaves_the_model_unready_with_the_reason(monkeypatch):
    monkeypatch.setattr(precision_module, "cpu_has_bf16", lambda: False)
    with LiveApp(create_app(load_settings(env_file=None, precision="bf16"))) as client:
        for _ in range(600):
            ready = client.get("/v1/readyz")
            if ready.json()["status"] != "loading":
                break
            time.sleep(0.05)
        assert ready.status_code == 503 and ready.json()["status"] == "failed"
        assert "needs a CPU with AVX512-BF16 or AMX" in ready.json()["reason"]
