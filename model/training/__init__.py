"""Training and fine-tuning Kronos (``kronos-train``): tokenizer stage, then predictor stage, on OHLCV CSV files."""

from .data import CandleDataError, CandleSeries, load_csv, series_from_frame
from .settings import StageSettings, TrainSettings
from .trainer import RunResult, new_pair, train, train_predictor, train_tokenizer

__all__ = [
    "CandleDataError",
    "CandleSeries",
    "RunResult",
    "StageSettings",
    "TrainSettings",
    "load_csv",
    "new_pair",
    "series_from_frame",
    "train",
    "train_predictor",
    "train_tokenizer",
]
