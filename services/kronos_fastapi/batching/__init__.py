"""The dynamic batcher between the routes and the model: the series of concurrent requests wait in
one bounded queue and are decoded together, within a budget of sample paths per model batch.

Two ways to run the model (``KRONOS_BATCHING``), each a scheduler of its own over one queue:

- ``common.py``: what both share: the bounded queue, admission (503 + Retry-After), the budgets,
  the wait for company, the request's deadline, cancellation and shutdown.
- ``step_level.py``: **step** (the default, given a ``step_model``): iteration-level scheduling;
  series join and leave a running batch between decode steps.
- ``request_level.py``: **request**: a batch is formed once and runs to its end;
  ``forecast_splitting`` retries one that runs out of memory in halves.
- ``scheduler.py``: ``BatchScheduler``, the one the service builds, picks between them per batch.
"""

from __future__ import annotations

from .common import (
    BACKGROUND,
    DONE,
    QUEUED,
    RUNNING,
    BatchQueue,
    Job,
    OnDone,
    Outcome,
    background_priority,
    is_out_of_memory,
)
from .request_level import Predict, RequestLevel, RunBatch, forecast_splitting
from .scheduler import BatchScheduler
from .step_level import StepLevel, StepModel, StepReport

__all__ = [
    "BACKGROUND",
    "DONE",
    "QUEUED",
    "RUNNING",
    "BatchQueue",
    "BatchScheduler",
    "Job",
    "OnDone",
    "Outcome",
    "Predict",
    "RequestLevel",
    "RunBatch",
    "StepLevel",
    "StepModel",
    "StepReport",
    "background_priority",
    "forecast_splitting",
    "is_out_of_memory",
]
