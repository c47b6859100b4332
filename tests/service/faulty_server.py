"""The real service (``kronos-serve``) whose model fails on cue, for the batching tests:

- a batch holding a series with seed 13 raises a RuntimeError (a bug: the whole batch fails);
- a batch of more than 2 series runs out of CUDA memory (so it must be split and retried);
- a series with sample_count 7 runs out of memory even alone.

Every other call is the real model's. Run as ``python tests/service/faulty_server.py``.
"""

from __future__ import annotations

import sys

import torch

from model.pipeline import KronosPredictor
from services.kronos_fastapi.__main__ import main

FAILING_SEED = 13
OOM_SAMPLE_COUNT = 7
OOM_ABOVE_SERIES = 2

_real_forecast = KronosPredictor.forecast


def _forecast(self, series, *, fast=True, on_done=None):
    if any(s.seed == FAILING_SEED for s in series):
        raise RuntimeError("injected model failure")
    if len(series) > OOM_ABOVE_SERIES or any(s.sample_count == OOM_SAMPLE_COUNT for s in series):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
    return _real_forecast(self, series, fast=fast, on_done=on_done)


if __name__ == "__main__":
    KronosPredictor.forecast = _forecast
    sys.exit(main())
