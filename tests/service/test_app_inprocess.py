"""The app object in-process, lifespan and all: settings that need no real socket — readiness
before loading, CORS, the docs switch, per-key rate limits, who a client is."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from conftest import GUIDE_SINGLE, LiveApp, assert_error

from services.kronos_fastapi import create_app, load_settings


def _settings(**overrides):
    return load_settings(env_file=None, **overrides)


def test_before_the_model_loads_health_is_up_and_forecasts_wait():
    """Without its lifespan the app never loads the model: the state every app starts in."""
    app = create_app(_settings())

    async def calls():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return (
                await client.get("/v1/healthz"),
                await client.get("/v1/readyz"),
                await client.post("/v1/predict/single", json=GUIDE_SINGLE),
            )

    health, ready, predict = asyncio.run(calls())
    assert health.status_code == 200
    assert ready.status_code == 503 and ready.json()["status"] == "loading" and ready.json()["reason"]
    assert_error(predict, 503, "model_not_ready")
    assert predict.headers["Retry-After"] == "5"


def test_cors_when_configured():
    app = create_app(_settings(cors_origins=["https://dash.example"], api_keys=["k"]))
    with LiveApp(app) as client:
        preflight = client.options(
            "/v1/predict/single",
            headers={
                "Origin": "https://dash.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "X-API-Key, Content-Type",
            },
        )
        assert preflight.status_code == 200  # no API key needed for a preflight
        assert preflight.headers["access-control-allow-origin"] == "https://dash.example"
        simple = client.get("/v1/healthz", headers={"Origin": "https://dash.example"})
        assert "X-Request-ID" in simple.headers["access-control-expose-headers"]
        other = client.get("/v1/healthz", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_docs_can_be_switched_off():
    with LiveApp(create_app(_settings(enable_docs=False))) as client:
        assert_error(client.get("/docs"), 404)
        assert_error(client.get("/openapi.json"), 404)


def test_rate_limit_is_per_api_key():
    app = create_app(_settings(rate_limit_per_minute=2, api_keys=["alpha", "beta"]))
    with LiveApp(app) as client:
        for _ in range(2):
            assert client.post("/v1/predict/single", json={}, headers={"X-API-Key": "alpha"}).status_code == 422
        assert_error(client.post("/v1/predict/single", json={}, headers={"X-API-Key": "alpha"}), 429)
        # Another key from the same address has its own budget.
        assert client.post("/v1/predict/single", json={}, headers={"X-API-Key": "beta"}).status_code == 422


def test_forwarded_for_is_ignored_from_untrusted_peers():
    app = create_app(_settings(allowed_clients=["10.9.8.0/24"], trusted_proxies=["192.0.2.10"]))
    with LiveApp(app, client=("192.0.2.99", 40000)) as spoofer:
        error = assert_error(
            spoofer.get("/v1/healthz/detailed", headers={"X-Forwarded-For": "10.9.8.7"}), 403, "forbidden"
        )
        assert "192.0.2.99" in error["message"]
        # The probes are open to every address (health checks and scrapers), as they are to keyless clients.
        assert spoofer.get("/v1/healthz").status_code == 200
        assert spoofer.get("/v1/metrics").status_code == 200
    with LiveApp(app, client=("192.0.2.10", 40000)) as proxy:
        assert proxy.get("/v1/healthz/detailed", headers={"X-Forwarded-For": "10.9.8.7"}).status_code == 200


def test_allow_list_host_names_are_resolved():
    app = create_app(_settings(allowed_clients=["localhost"]))
    with LiveApp(app, client=("127.0.0.1", 40000)) as local:
        local.wait_ready()
        assert local.post("/v1/predict/single", json=GUIDE_SINGLE).status_code == 200
    with LiveApp(app, client=("192.0.2.99", 40000)) as remote:
        assert_error(remote.post("/v1/predict/single", json=GUIDE_SINGLE), 403)


@pytest.mark.parametrize("header", ["Authorization", "X-API-Key"])
def test_api_key_forms(header):
    app = create_app(_settings(api_keys=["s3cret"]))
    value = "Bearer s3cret" if header == "Authorization" else "s3cret"
    with LiveApp(app) as client:
        assert client.get("/v1/healthz/detailed", headers={header: value}).status_code == 200
        assert_error(client.get("/v1/healthz/detailed", headers={header: value + "x"}), 401)
        assert_error(client.get("/v1/healthz/detailed", headers={"Authorization": "Basic czNjcmV0"}), 401)


def test_a_broken_checkpoint_fails_readiness_with_the_path(tmp_path):
    from model.nn.config import PredictorConfig, TokenizerConfig
    from model.nn.synthetic import write_random_pair

    predictor_cfg = PredictorConfig(s1_bits=4, s2_bits=4, n_layers=1, d_model=16, n_heads=2, ff_dim=32)
    tokenizer_cfg = TokenizerConfig(
        d_in=6, d_model=16, n_heads=2, ff_dim=32, n_enc_layers=1, n_dec_layers=1, s1_bits=4, s2_bits=4
    )
    write_random_pair(tmp_path / "pair", predictor_cfg, tokenizer_cfg, seed=3)
    (tmp_path / "pair" / "model.safetensors").write_bytes(b"not safetensors")
    with LiveApp(create_app(_settings(model_path=tmp_path / "pair"))) as app:
        deadline = time.monotonic() + 30
        while (ready := app.get("/v1/readyz")).json()["status"] == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert ready.status_code == 503
        assert ready.json()["status"] == "failed"
        assert "model.safetensors" in ready.json()["reason"] and str(tmp_path) in ready.json()["reason"]
        assert_error(app.post("/v1/predict/single", json=GUIDE_SINGLE), 503, "model_not_ready")


def test_a_custom_checkpoint_in_the_original_layout_serves(tmp_path):
    from model.nn.config import PredictorConfig, TokenizerConfig
    from model.nn.synthetic import write_random_pair

    predictor_cfg = PredictorConfig(s1_bits=4, s2_bits=4, n_layers=1, d_model=16, n_heads=2, ff_dim=32)
    tokenizer_cfg = TokenizerConfig(
        d_in=6, d_model=16, n_heads=2, ff_dim=32, n_enc_layers=1, n_dec_layers=1, s1_bits=4, s2_bits=4
    )
    write_random_pair(tmp_path / "models", predictor_cfg, tokenizer_cfg, seed=3)
    with LiveApp(create_app(_settings(model_path=tmp_path / "models"))) as app:
        app.wait_ready()
        assert app.get("/v1/readyz").json()["model"]["version"].startswith("models@")
        response = app.post("/v1/predict/single", json=GUIDE_SINGLE)
        assert response.status_code == 200 and response.json()["model"].startswith("models@")
