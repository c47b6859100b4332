"""Kronos for candlestick (OHLCV) forecasting: our implementation of the published architecture.

Loads the official checkpoint folders (config.json + model.safetensors) and reproduces the
reference forecasts, with a KV-cached, batched decoder.
"""

from .config import PredictorConfig, TokenizerConfig
from .errors import CheckpointError, ConfigError, DeviceError, DeviceUnavailableError, InputError, KronosError
from .pipeline import Forecast, KronosPredictor, SeriesInput
from .predictor import Kronos
from .tokenizer import KronosTokenizer

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
]
