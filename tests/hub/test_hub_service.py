"""The service with hub ids and several models, as real uvicorn servers on loopback ports whose
huggingface_hub talks to the stand-in hub: models chosen per request, their own forecasts, their
state on /v1/models and /v1/readyz, and failures that leave the instance (or the model) not ready."""

from __future__ import annotations

import time

import httpx
import pytest
from conftest import MINI, SMALL
from prometheus_client.parser import text_string_to_metric_families

from model.checkpoints.bundled import BUNDLED_NAME
from services.kronos_fastapi.settings import SettingsError, load_settings

BODY = {"data": [[100.0, 105.0, 98.0, 102.0], [102.0, 108.0, 101.0, 107.0], [107, 109, 104, 105]], "pred_len": 6}
SEEDED = {**BODY, "seed": 5, "sample_count": 2}


def _hub_vars(hub_env, offline: bool = False) -> dict[str, str]:
    return {"HF_HOME": str(hub_env.home), "HF_ENDPOINT": hub_env.endpoint, "HF_HUB_OFFLINE": "1" if offline else "0"}


def _post(server, body: dict, route: str = "single") -> httpx.Response:
    return httpx.post(f"{server.url}/v1/predict/{route}", json=body, timeout=60)


def _metric(server, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(httpx.get(server.url + "/v1/metrics", timeout=10).text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


def test_two_models_each_give_their_own_forecast_chosen_per_request(hub, hub_env, start_server, tmp_path):
    models = f"small={SMALL},mini={MINI},demo=bundled"
    server = start_server({"KRONOS_MODELS": models, "KRONOS_DEFAULT_MODEL": "demo", **_hub_vars(hub_env)})
    assert server.wait_state().json()["model"]["name"] == "demo"  # ready once the default model is
    _wait_models(server, "ready", "small", "mini")
    ready = httpx.get(server.url + "/v1/readyz", timeout=10).json()
    assert {m["name"]: m["state"] for m in ready["models"]} == {"small": "ready", "mini": "ready", "demo": "ready"}

    listed = httpx.get(server.url + "/v1/models", timeout=10).json()
    assert listed["default"] == "demo"
    by_name = {m["name"]: m for m in listed["models"]}
    assert by_name["small"]["source"] == SMALL and by_name["small"]["revision"] == hub.repos[SMALL].refs["main"]
    assert by_name["mini"]["max_context"] == 2048 and by_name["small"]["max_context"] == 512
    assert by_name["mini"]["tokenizer_source"] == "NeoQuasar/Kronos-Tokenizer-2k"
    assert by_name["demo"]["revision"] is None and by_name["demo"]["version"].startswith(BUNDLED_NAME + "@")
    assert all(m["parameters"] > 0 and m["device"] == "cpu" for m in listed["models"])

    answers = {name: _post(server, {**SEEDED, "model": name}).json() for name in ("small", "mini", "demo")}
    assert answers["small"]["model"] == f"{SMALL}@{hub.repos[SMALL].refs['main']}"
    assert answers["small"]["model_revision"] == hub.repos[SMALL].refs["main"]
    assert [answers[n]["model_name"] for n in ("small", "mini", "demo")] == ["small", "mini", "demo"]
    forecasts = [answers[n]["forecast"] for n in ("small", "mini", "demo")]
    assert forecasts[0] != forecasts[1] and forecasts[1] != forecasts[2] and forecasts[0] != forecasts[2]
    assert _post(server, SEEDED).json()["forecast"] == answers["demo"]["forecast"]  # no model: the default
    assert _post(server, {**SEEDED, "model": "small"}).json()["forecast"] == answers["small"]["forecast"]

    # A batch mixing models: every item answered by its own model, as it would be alone.
    batch = {"batch": [{**SEEDED, "model": "mini"}, {**SEEDED, "model": "small"}, SEEDED], "model": None}
    results = _post(server, batch, "batch").json()["results"]
    assert [r["model_name"] for r in results] == ["mini", "small", "demo"]
    assert [r["forecast"] for r in results] == [answers["mini"]["forecast"], forecasts[0], answers["demo"]["forecast"]]
    whole = _post(server, {"batch": [SEEDED, SEEDED], "model": "small"}, "batch").json()
    assert [r["model_name"] for r in whole["results"]] == ["small", "small"] and whole["model_name"] == "small"

    # The original service's shape picks a model too.
    legacy = {
        "candles": [
            {"open": 1.0, "high": 1.2, "low": 0.9, "close": 1.1},
            {"open": 1.1, "high": 1.3, "low": 1, "close": 1.2},
        ],
        "timestamps": ["2024-03-01T09:30:00Z", "2024-03-01T09:35:00Z"],
        "prediction_timestamps": ["2024-03-01T09:40:00Z"],
        "model": "small",
    }
    assert _post(server, legacy).json()["model_version"] == answers["small"]["model"]

    unknown = _post(server, {"batch": [SEEDED, {**SEEDED, "model": "large"}]}, "batch")
    assert unknown.status_code == 422
    error = unknown.json()["error"]
    assert error["message"].startswith("batch[1].model: unknown model 'large'; this instance serves small, mini, demo")
    assert error["details"][0]["models"] == ["small", "mini", "demo"]  # details: always a list

    assert _metric(server, "kronos_model_ready", model="mini") == 1.0
    assert _metric(server, "kronos_predicted_series_total", model="small", endpoint="single") == 3.0
    assert _metric(server, "kronos_predicted_series_total", model="mini", endpoint="batch") == 1.0


def test_a_hub_id_served_online_offline_and_from_a_fetched_folder_answers_alike(hub, hub_env, start_server, tmp_path):
    online = start_server({"KRONOS_MODEL_PATH": SMALL, **_hub_vars(hub_env)})
    ready = online.wait_state().json()
    commit = hub.repos[SMALL].refs["main"]
    assert ready["model"]["revision"] == commit and ready["model"]["name"] == "Kronos-small"
    assert ready["model"]["tokenizer_revision"] == hub.repos["NeoQuasar/Kronos-Tokenizer-base"].refs["main"]
    expected = _post(online, SEEDED).json()
    online.stop()

    from model.checkpoints.fetch import fetch

    fetch(SMALL, tmp_path / "small")
    hub.close()
    offline = start_server({"KRONOS_MODEL_PATH": SMALL, **_hub_vars(hub_env, offline=True)})
    folder = start_server({"KRONOS_MODEL_PATH": str(tmp_path / "small"), **_hub_vars(hub_env, offline=True)})
    offline.wait_state()
    folder.wait_state()
    assert _post(offline, SEEDED).json()["forecast"] == expected["forecast"]
    assert _post(folder, SEEDED).json()["forecast"] == expected["forecast"]
    assert _post(offline, SEEDED).json()["model_revision"] == commit


def test_a_default_model_that_cannot_be_had_leaves_the_instance_not_ready(hub, hub_env, start_server):
    unknown = {"KRONOS_MODEL_PATH": "NeoQuasar/Kronos-huge", "KRONOS_TOKENIZER_PATH": "NeoQuasar/Kronos-Tokenizer-base"}
    missing = start_server({**unknown, **_hub_vars(hub_env)})
    cold = start_server({"KRONOS_MODEL_PATH": MINI, **_hub_vars(hub_env, offline=True)})
    for server, reason in (
        (missing, "NeoQuasar/Kronos-huge: no such model repository"),
        (cold, f"{MINI}: config.json is not in the model cache"),
    ):
        ready = server.wait_state(ready=False)
        assert ready.status_code == 503 and reason in ready.json()["reason"]
        answer = _post(server, BODY)
        assert answer.status_code == 503 and answer.json()["error"]["type"] == "model_not_ready"
        assert reason in answer.json()["error"]["message"]


def test_one_model_failing_leaves_the_others_serving(hub, hub_env, start_server):
    server = start_server({"KRONOS_MODELS": "demo=bundled,small=NeoQuasar/Kronos-small@v9", **_hub_vars(hub_env)})
    ready = server.wait_state().json()
    states = {m["name"]: m for m in ready["models"]}
    assert states["demo"]["state"] == "ready"
    assert _wait_models(server, "failed", "small")[0]["reason"].startswith(
        f"CheckpointError: {SMALL}: revision 'v9' does not exist"
    )
    assert _post(server, BODY).status_code == 200
    refused = _post(server, {**BODY, "model": "small"})
    assert refused.status_code == 503 and "revision 'v9' does not exist" in refused.json()["error"]["message"]
    assert _metric(server, "kronos_model_ready", model="small") == 0.0
    assert _metric(server, "kronos_model_ready", model="demo") == 1.0


def _wait_models(server, state: str, *names: str) -> list[dict]:
    """The models ``names`` once all are in ``state`` (as /v1/models lists them)."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        listed = {m["name"]: m for m in httpx.get(server.url + "/v1/models", timeout=10).json()["models"]}
        if all(listed[name]["state"] == state for name in names):
            return [listed[name] for name in names]
        time.sleep(0.2)
    raise AssertionError(f"{names} never got {state}")


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"models": "small"}, "KRONOS_MODELS: 'small' is not name=source"),
        ({"models": "a=bundled,a=bundled"}, "KRONOS_MODELS: the name 'a' is given twice"),
        ({"models": "a b=bundled"}, "KRONOS_MODELS: model name 'a b' must be"),
        ({"models": "x=/no/such/folder"}, "KRONOS_MODELS: x=/no/such/folder: neither a checkpoint folder"),
        ({"models": "x=acme/unknown"}, "KRONOS_MODELS: x: acme/unknown: no tokenizer given"),
        (
            {"models": "a=bundled", "default_model": "b"},
            "KRONOS_DEFAULT_MODEL: 'b' is not one of the served models (a)",
        ),
        ({"model_path": "acme/unknown"}, "KRONOS_TOKENIZER_PATH: not set, and acme/unknown: no tokenizer given"),
    ],
)
def test_bad_model_settings_stop_start_up_naming_the_variable(variables, message):
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_settings(env_file=None, **variables)


def test_hub_ids_and_bundled_are_accepted_settings():
    settings = load_settings(env_file=None, model_path=SMALL, model_revision="abc")
    assert str(settings.model_path) == SMALL
    assert load_settings(env_file=None, models="s=NeoQuasar/Kronos-small@v1, d=bundled").models == [
        "s=NeoQuasar/Kronos-small@v1",
        "d=bundled",
    ]
