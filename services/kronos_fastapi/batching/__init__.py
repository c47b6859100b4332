"""The dynamic batcher between the routes and the model, as a package (``common.py`` holds it all for
now). Every name the service and the tests import is re-exported here."""

from __future__ import annotations

from .common import (
    DONE,
    QUEUED,
    RUNNING,
    BatchScheduler,
    Job,
    OnDone,
    Outcome,
    Predict,
    RunBatch,
    StepModel,
    StepReport,
    forecast_splitting,
    is_out_of_memory,
)

__all__ = [
    "BatchScheduler",
    "DONE",
    "Job",
    "OnDone",
    "Outcome",
    "Predict",
    "QUEUED",
    "RUNNING",
    "RunBatch",
    "StepModel",
    "StepReport",
    "forecast_splitting",
    "is_out_of_memory",
]
