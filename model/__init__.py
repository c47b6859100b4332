"""Kronos for candlestick (OHLCV) forecasting: our implementation of the published architecture.

Loads the official checkpoint folders (config.json + model.safetensors) and reproduces the
reference forecasts, with a KV-cached, batched decoder.

Names are imported on first use, so ``model.errors`` or ``model.checkpoints.bundled`` (what the service's
settings and ``--help`` need) load without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_WHERE = {
    "PredictorConfig": "nn.config",
    "TokenizerConfig": "nn.config",
    "CheckpointError": "errors",
    "ConfigError": "errors",
    "DeviceError": "errors",
    "DeviceUnavailableError": "errors",
    "InputError": "errors",
    "KronosError": "errors",
    "Forecast": "decoding.forecast",
    "KronosPredictor": "decoding.pipeline",
    "SeriesInput": "decoding.forecast",
    "Kronos": "nn.predictor",
    "KronosTokenizer": "nn.tokenizer",
    "future_timestamps": "series.calendars",
}

__all__ = [
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
]

if TYPE_CHECKING:
    from .decoding.forecast import Forecast, SeriesInput
    from .decoding.pipeline import KronosPredictor
    from .errors import CheckpointError, ConfigError, DeviceError, DeviceUnavailableError, InputError, KronosError
    from .nn.config import PredictorConfig, TokenizerConfig
    from .nn.predictor import Kronos
    from .nn.tokenizer import KronosTokenizer
    from .series.calendars import future_timestamps


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'model' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
