"""Random-weight checkpoints of any shape, for tests and benchmarks.

Weights come from a seeded generator, so the same call always writes the same files.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .config import PredictorConfig, TokenizerConfig
from .predictor import Kronos
from .tokenizer import KronosTokenizer

# Shapes from the published model cards (see SPEC).
KRONOS_SMALL = PredictorConfig(s1_bits=10, s2_bits=10, n_layers=8, d_model=512, n_heads=8, ff_dim=1024)
TOKENIZER_BASE = TokenizerConfig(
    d_in=6, d_model=256, n_heads=4, ff_dim=512, n_enc_layers=4, n_dec_layers=4, s1_bits=10, s2_bits=10
)


def random_pair(
    predictor_config: PredictorConfig, tokenizer_config: TokenizerConfig, seed: int = 0
) -> tuple[Kronos, KronosTokenizer]:
    """A predictor and tokenizer with seeded random weights (PyTorch's default initialization)."""
    fork_devices: list = []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)
        tokenizer = KronosTokenizer(tokenizer_config).eval()
        model = Kronos(predictor_config).eval()
    return model, tokenizer


def write_random_pair(
    folder: str | os.PathLike,
    predictor_config: PredictorConfig,
    tokenizer_config: TokenizerConfig,
    seed: int = 0,
) -> tuple[Path, Path]:
    """Write ``folder`` (predictor) and ``folder/tokenizer`` — the service's checkpoint layout."""
    model, tokenizer = random_pair(predictor_config, tokenizer_config, seed)
    predictor_dir = model.save_pretrained(folder)
    tokenizer_dir = tokenizer.save_pretrained(Path(folder) / "tokenizer")
    return predictor_dir, tokenizer_dir
