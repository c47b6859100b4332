"""The bundled kronos-demo is the model its model card describes: same files (sha256), loadable, forecasting."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pandas as pd

from model import Kronos, KronosPredictor, KronosTokenizer
from model.checkpoints.bundled import bundled_model_path, bundled_tokenizer_path

ROW = re.compile(r"^\| `([\w./-]+)` \| (\d+) \| `([0-9a-f]{64})` \|$", re.MULTILINE)
FILES = {"config.json", "model.safetensors", "tokenizer/config.json", "tokenizer/model.safetensors"}


def _card_checksums() -> dict[str, tuple[int, str]]:
    card = (bundled_model_path() / "README.md").read_text()
    return {name: (int(size), digest) for name, size, digest in ROW.findall(card)}


def test_bundled_files_match_the_model_card_checksums():
    listed = _card_checksums()
    assert set(listed) == FILES, "the model card lists every weight and config file"
    for name, (size, digest) in listed.items():
        data = (bundled_model_path() / name).read_bytes()
        assert len(data) == size, name
        assert hashlib.sha256(data).hexdigest() == digest, f"{name} differs from the model card's sha256"


def test_bundled_model_loads_and_forecasts_real_candles(goog):
    model = Kronos.from_pretrained(bundled_model_path())
    tokenizer = KronosTokenizer.from_pretrained(bundled_tokenizer_path())
    size_mb = sum((bundled_model_path() / n).stat().st_size for n in FILES) / 1e6
    assert size_mb < 10, "small enough to ship in the package and the image"
    predictor = KronosPredictor(model, tokenizer, device="cpu", max_context=256)
    frame = goog.iloc[-256:]
    future = pd.date_range(frame.index[-1] + pd.Timedelta(days=1), periods=5, freq="B")
    out = predictor.predict(frame, frame.index.to_series(), future, 5, sample_count=4, seed=1)
    assert np.isfinite(out.to_numpy()).all()
    last = float(frame["close"].iloc[-1])
    # A market-shaped forecast: near the last close, not a collapse or an explosion.
    assert (np.abs(out["close"].to_numpy() / last - 1) < 0.25).all()
