"""``BatchScheduler``, the batcher the service builds: the queue of ``common.py`` served at step level
(``step_level.py``) while ``step_model`` returns a model, else in request-level batches of
``run_batch`` (``request_level.py``). The choice is made again for every batch."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor

from ..errors import ServiceError
from ..metrics import ServiceMetrics
from .request_level import RequestLevel, RunBatch
from .step_level import StepLevel, StepModel


class BatchScheduler(StepLevel, RequestLevel):
    """The queue and the task that turns it into model batches, run one at a time on ``executor``."""

    def __init__(
        self,
        run_batch: RunBatch,
        executor: Executor,
        metrics: ServiceMetrics,
        *,
        max_rows: int,
        max_tokens: int,
        context: int,
        wait_s: float,
        max_queue: int,
        timeout_s: float,
        step_model: Callable[[], StepModel | None] | None = None,
        as_error: Callable[[BaseException], ServiceError] | None = None,
        on_evict: Callable[[BaseException, int], None] | None = None,
    ) -> None:
        super().__init__(
            executor,
            metrics,
            max_rows=max_rows,
            max_tokens=max_tokens,
            context=context,
            wait_s=wait_s,
            max_queue=max_queue,
            timeout_s=timeout_s,
        )
        self.run_batch = run_batch
        # Step-level scheduling when this returns a model (else request-level batches of run_batch).
        self.step_model = step_model
        self.as_error = as_error or (lambda exc: ServiceError("the forecast failed; see the server log"))
        self.on_evict = on_evict
        self._row_cap = None  # after an out-of-memory eviction: rows the steps held
        self._last_finish = None

    async def _serve(self) -> None:
        """Forever: wait for a batch, run it on the model thread, answer its jobs."""
        while True:
            await self._company()
            model = self.step_model() if self.step_model is not None else None
            if model is not None:
                await self._run_steps(model)
            else:
                await self._run_one_batch()
