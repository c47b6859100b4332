"""Settings: environment > .env file > defaults, and bad values named by their variable."""

from __future__ import annotations

import socket

import pytest

from model.checkpoints.bundled import bundled_model_path
from services.kronos_fastapi.settings import Settings, SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("KRONOS_"):
            monkeypatch.delenv(name)


def test_defaults():
    settings = load_settings(env_file=None)
    assert settings.device == "cpu" and settings.device_fallback == "refuse"
    assert settings.model_path == bundled_model_path()
    assert settings.resolved_tokenizer_path == bundled_model_path() / "tokenizer"
    assert settings.max_context == 512 and settings.default_pred_len == 120
    assert settings.rate_limit_per_minute == 100 and settings.max_request_size_mb == 10
    assert settings.api_keys == [] and settings.allowed_clients == [] and settings.trusted_proxies == []
    assert settings.enable_docs is True
    assert settings.instance_name == socket.gethostname()
    assert settings.host == "127.0.0.1" and settings.port == 8000


def test_priority_environment_then_dotenv_then_defaults(tmp_path, monkeypatch):
    dotenv = tmp_path / ".env"
    dotenv.write_text("KRONOS_MAX_CONTEXT=256\nKRONOS_DEFAULT_PRED_LEN=60\nKRONOS_LOG_LEVEL=debug\n")
    monkeypatch.setenv("KRONOS_DEFAULT_PRED_LEN", "30")
    settings = load_settings(env_file=dotenv)
    assert settings.default_pred_len == 30  # environment beats .env
    assert settings.max_context == 256  # .env beats the default
    assert settings.log_level == "DEBUG"
    assert settings.rate_limit_per_minute == 100  # default
    assert settings.max_pred_len == 256  # follows MAX_CONTEXT (the guide's KRONOS_MAX_CONTEXT=256 alone works)
    # Explicit overrides (the CLI's flags) beat everything.
    assert load_settings(env_file=dotenv, default_pred_len=10).default_pred_len == 10


def test_the_original_layout_model_path_with_tokenizer_inside(tmp_path, monkeypatch):
    monkeypatch.setenv("KRONOS_MODEL_PATH", str(tmp_path))
    with pytest.raises(SettingsError, match="KRONOS_TOKENIZER_PATH"):
        load_settings(env_file=None)
    (tmp_path / "tokenizer").mkdir()
    settings = load_settings(env_file=None)
    assert settings.resolved_tokenizer_path == tmp_path / "tokenizer"
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.setenv("KRONOS_TOKENIZER_PATH", str(tmp_path / "elsewhere"))
    assert load_settings(env_file=None).resolved_tokenizer_path == tmp_path / "elsewhere"
    monkeypatch.setenv("KRONOS_MODEL_PATH", str(tmp_path / "missing"))
    with pytest.raises(SettingsError, match="KRONOS_MODEL_PATH.*does not exist"):
        load_settings(env_file=None)


def test_lists_from_commas_or_json(monkeypatch):
    monkeypatch.setenv("KRONOS_API_KEYS", " a , b,,c ")
    monkeypatch.setenv("KRONOS_ALLOWED_CLIENTS", '["10.0.0.0/8", "kronos-api-cpu"]')
    monkeypatch.setenv("KRONOS_TRUSTED_PROXIES", "")
    settings = load_settings(env_file=None)
    assert settings.api_keys == ["a", "b", "c"]
    assert settings.allowed_clients == ["10.0.0.0/8", "kronos-api-cpu"]
    assert settings.trusted_proxies == []


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("KRONOS_DEVICE", "gpu"),
        ("KRONOS_DEVICE_FALLBACK", "maybe"),
        ("KRONOS_MAX_CONTEXT", "-3"),
        ("KRONOS_MAX_REQUEST_SIZE_MB", "0"),
        ("KRONOS_REQUEST_TIMEOUT_S", "soon"),
        ("KRONOS_LOG_LEVEL", "LOUD"),
        ("KRONOS_ALLOWED_CLIENTS", "10.0.0.0/33"),
        ("KRONOS_TRUSTED_PROXIES", "not a host!"),
        ("KRONOS_ENABLE_DOCS", "perhaps"),
        ("KRONOS_DEFAULT_FREQ", "fortnightly"),
        ("KRONOS_PORT", "70000"),
        ("KRONOS_MAX_PRED_LEN", "1000"),
        ("KRONOS_DEFAULT_PRED_LEN", "600"),
    ],
)
def test_bad_values_name_their_variable(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=variable):
        load_settings(env_file=None)


def test_device_spellings_are_normalized(monkeypatch):
    for spec, expected in [("CUDA:1", "cuda:1"), (" auto ", "auto"), ("mps", "mps"), ("cuda", "cuda")]:
        monkeypatch.setenv("KRONOS_DEVICE", spec)
        assert load_settings(env_file=None).device == expected


def test_every_field_has_a_description():
    for name, field in Settings.model_fields.items():
        assert field.description, name
