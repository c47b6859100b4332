"""The real service (``kronos-serve``) whose model fails on cue, for the batching tests:

- a batch holding a series with seed 13 raises a RuntimeError (a bug: the whole batch fails);
- a batch of more than 2 series runs out of CUDA memory (so it must be split and retried);
- a series with sample_count 7 runs out of memory even alone;
- a series with seed 21 is slow: each decode step holding it sleeps 0.05 s (a request-level batch,
  0.05 s per candle of its longest forecast), for forecasts still running at SIGTERM;
- a series with seed 34 hangs: each decode step holding it sleeps 2 s (a wedged model thread);
- while the file named by FAULTY_BROKEN_FLAG exists, every model call fails (a device gone bad);
- with FAULTY_LOAD_HANG_S set, finding the checkpoints (the hub download) hangs that long first.

The same rules hold for a request-level batch (``KronosPredictor.forecast``) and for a decode step
of step-level batching (``DecodeEngine.step``, over the series running in it). Every other call is
the real model's. Run as ``python tests/service/faulty_server.py``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch

from model.decoding.engine import DecodeEngine
from model.decoding.pipeline import KronosPredictor
from services.kronos_fastapi.__main__ import main

FAILING_SEED = 13
OOM_SAMPLE_COUNT = 7
OOM_ABOVE_SERIES = 2
SLOW_SEED = 21
SLOW_STEP_S = 0.05
HANG_SEED = 34
HANG_STEP_S = 2.0
BROKEN_FLAG = os.environ.get("FAULTY_BROKEN_FLAG")

_real_forecast = KronosPredictor.forecast
_real_step = DecodeEngine.step


def _fail_on_cue(series) -> None:
    if BROKEN_FLAG and Path(BROKEN_FLAG).exists():
        raise RuntimeError("injected device failure: CUDA error: an illegal memory access was encountered")
    if any(s.seed == FAILING_SEED for s in series):
        raise RuntimeError("injected model failure")
    if len(series) > OOM_ABOVE_SERIES or any(s.sample_count == OOM_SAMPLE_COUNT for s in series):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")


def _forecast(self, series, *, fast=True, on_done=None):
    _fail_on_cue(series)
    if any(s.seed == SLOW_SEED for s in series):
        time.sleep(SLOW_STEP_S * max(s.pred_len for s in series))
    return _real_forecast(self, series, fast=fast, on_done=on_done)


def _step(self):
    running = [entry.series for entry in self.series.values() if not entry.job.cancelled]
    _fail_on_cue(running)
    if any(s.seed == SLOW_SEED for s in running):
        time.sleep(SLOW_STEP_S)
    if any(s.seed == HANG_SEED for s in running):
        time.sleep(HANG_STEP_S)
    return _real_step(self)


def _hung(real):
    def resolve_pair(*args, **kwargs):
        time.sleep(float(os.environ["FAULTY_LOAD_HANG_S"]))
        return real(*args, **kwargs)

    return resolve_pair


if __name__ == "__main__":
    KronosPredictor.forecast = _forecast
    DecodeEngine.step = _step
    if os.environ.get("FAULTY_LOAD_HANG_S"):
        import services.kronos_fastapi.service as service

        service.resolve_pair = _hung(service.resolve_pair)
    sys.exit(main())
