"""The checkpoint pair shipped inside the package, used by default by the CLI and the service."""

from __future__ import annotations

from pathlib import Path

BUNDLED_NAME = "kronos-demo"
# The files stay at model/bundled/ (package data, and the path the docs and the image name).
BUNDLED_DIR = Path(__file__).resolve().parent.parent / "bundled" / BUNDLED_NAME


def bundled_model_path() -> Path:
    """Predictor folder of the bundled pair; its tokenizer is in ``<that>/tokenizer``."""
    return BUNDLED_DIR


def bundled_tokenizer_path() -> Path:
    return BUNDLED_DIR / "tokenizer"
