"""Named network shapes and training schedules for ``kronos-train``: the shipped demo and a tiny smoke-test size."""

from __future__ import annotations

from dataclasses import dataclass

from ..nn.config import PredictorConfig, TokenizerConfig
from .settings import StageSettings, TrainSettings


@dataclass(frozen=True)
class Preset:
    predictor: PredictorConfig
    tokenizer: TokenizerConfig
    settings: TrainSettings


def _demo() -> Preset:
    # kronos-demo: small enough to ship (about 2 MB) and to train on a shared 2-core CPU in under an hour.
    # Windows reach 512 candles (the predictor's default max_context; the tokenizer sees whole
    # inputs): a network trained on short windows only breaks down on longer ones. Long windows
    # come in smaller batches so every step costs about the same. The data: the training
    # instruments of corpus.py (about 16,000 training candles); the last 20% of every series is
    # the validation split, checked every 50 steps on 64 windows, and a stage stops after 4 checks
    # without a better validation loss, keeping its best weights. Augmentations that keep candles
    # valid: windows of 2 and 4 times the period (merged candles) and inverse quotes (1/price).
    return Preset(
        predictor=PredictorConfig(s1_bits=10, s2_bits=10, n_layers=4, d_model=64, n_heads=4, ff_dim=128),
        tokenizer=TokenizerConfig(
            d_in=6, d_model=32, n_heads=4, ff_dim=64, n_enc_layers=3, n_dec_layers=3, s1_bits=10, s2_bits=10
        ),
        settings=TrainSettings(
            tokenizer=StageSettings(
                steps=1500, batch_size=32, batch_tokens=2048, lr=2e-3, warmup_steps=50, grad_clip=2.0
            ),
            predictor=StageSettings(
                steps=600, batch_size=32, batch_tokens=2048, lr=2e-3, warmup_steps=40, grad_clip=3.0
            ),
            val_fraction=0.2,
            min_window=48,
            max_window=512,
            horizon=32,
            eval_every=50,
            patience=4,
            val_windows=64,
            aggregate=(1, 2, 4),
            invert_prob=0.5,
        ),
    )


def _tiny() -> Preset:
    return Preset(
        predictor=PredictorConfig(s1_bits=4, s2_bits=4, n_layers=1, d_model=16, n_heads=2, ff_dim=32),
        tokenizer=TokenizerConfig(
            d_in=6, d_model=16, n_heads=2, ff_dim=32, n_enc_layers=2, n_dec_layers=2, s1_bits=4, s2_bits=4
        ),
        settings=TrainSettings(
            tokenizer=StageSettings(steps=30, batch_size=8, lr=5e-3, warmup_steps=3),
            predictor=StageSettings(steps=30, batch_size=8, lr=5e-3, warmup_steps=3, grad_clip=3.0),
            min_window=16,
            max_window=32,
            horizon=8,
        ),
    )


PRESETS = {"demo": _demo, "tiny": _tiny}


def preset(name: str) -> Preset:
    return PRESETS[name]()
