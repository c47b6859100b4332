"""What a training run depends on besides its data and starting weights: the two stages' optimisation
settings, the run's settings (windows, validation, early stopping, resume record) and a stage's result."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

STAGES = ("tokenizer", "predictor")


@dataclass
class StageSettings:
    """Optimization settings of one stage."""

    steps: int
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 0
    grad_clip: float = 2.0
    batch_tokens: int = 0  # when > 0, long windows come in smaller batches: B x L <= batch_tokens

    def lr_at(self, step: int) -> float:
        """Linear warm-up, then cosine decay to a tenth of the peak."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        span = max(self.steps - self.warmup_steps, 1)
        progress = min((step - self.warmup_steps) / span, 1.0)
        return self.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


@dataclass
class TrainSettings:
    """Everything a run depends on besides its data and starting weights."""

    tokenizer: StageSettings
    predictor: StageSettings
    val_fraction: float = 0.15
    min_window: int = 64
    max_window: int = 256
    horizon: int = 32  # rows at the end of a window scaled with the statistics of the rows before
    clip: float = 5.0
    seed: int = 0
    eval_every: int = 0  # 0: only at the end of a stage
    save_every: int = 200
    aggregate: tuple[int, ...] = (1,)  # windows of k x the series' period, k drawn per batch from these
    invert_prob: float = 0.0  # share of windows turned into their inverse quote (prices 1/p)
    # Early stopping: with eval_every, stop a stage after this many validations without a new best
    # validation loss, and keep the best weights (0: train every step, keep the last weights).
    patience: int = 0
    val_windows: int = 0  # validate on at most this many held-out windows, evenly spread (0: all)

    def stage_record(self, stage: str) -> dict[str, Any]:
        """The settings a stage's resumable state must agree with (as JSON would store them)."""
        record = {k: v for k, v in dataclasses.asdict(self).items() if k not in STAGES}
        record["stage"] = dataclasses.asdict(getattr(self, stage))
        for key in ("eval_every", "save_every"):
            record.pop(key)
        return json.loads(json.dumps(record))


@dataclass
class StageResult:
    stage: str
    steps: int
    seconds: float
    first_loss: dict[str, float]  # mean over the first tenth of the steps
    last_loss: dict[str, float]  # mean over the last tenth of the steps
    validation: list[dict[str, float]] = field(default_factory=list)
    best_step: int | None = None  # with early stopping: the step whose weights were kept
