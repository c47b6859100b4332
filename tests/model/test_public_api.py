"""`from model import ...` is a promise to users: the public names are pinned here."""

import model

PUBLIC = {
    "CheckpointError",
    "ConfigError",
    "DeviceError",
    "DeviceUnavailableError",
    "Forecast",
    "InputError",
    "Kronos",
    "KronosError",
    "KronosPredictor",
    "KronosTokenizer",
    "PredictorConfig",
    "SeriesInput",
    "TokenizerConfig",
    "future_timestamps",
}


def test_public_names_are_pinned():
    assert set(model.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(model, name) is not None


def test_errors_are_value_errors():
    for name in ("CheckpointError", "ConfigError", "DeviceError", "DeviceUnavailableError", "InputError"):
        assert issubclass(getattr(model, name), ValueError)


def test_model_package_imports_no_web_code():
    import subprocess
    import sys

    code = "import sys, model, model.cli; print(sorted({'fastapi', 'starlette', 'uvicorn'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
