"""What the step-level engine tracks: a series in the engine (its tokens so far, its slots, its state),
a prefill window in progress, and what a step reports. Plain records; ``engine.py`` owns the logic."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from .forecast import Forecast, SeriesInput
from .generation import SeriesTokens

PREFILL, DECODE = "prefill", "decode"


@dataclass(eq=False)
class PrefillWindow:
    """One prefill in progress: the window tokens [start, start + width) of one path, into one slot."""

    slot: int
    path: int
    start: int
    width: int
    done: int = 0
    h_last: Tensor | None = None
    served: float = -1  # the step that last ran a chunk of it (at admission: half a step before the next)


@dataclass(eq=False)
class EngineSeries:
    key: Hashable
    order: int
    series: SeriesInput
    job: SeriesTokens
    features: np.ndarray
    seed: int
    tok1: Tensor  # (paths, n + pred_len)
    tok2: Tensor
    cur: int  # tokens so far (input + generated), the same for every path
    rolling: bool = False  # window="rolling": past the window, drop the oldest key/value, never recompute
    state: str = PREFILL
    slots: list[int] = field(default_factory=list)  # decode rows, in path order
    windows: list[PrefillWindow] = field(default_factory=list)

    @property
    def paths(self) -> int:
        return self.job.sample_count

    @property
    def generated(self) -> int:
        return self.cur - len(self.job.s1)

    @property
    def done(self) -> bool:
        return self.generated >= self.job.pred_len


@dataclass
class StepReport:
    finished: list[tuple[Hashable, Forecast]] = field(default_factory=list)
    dropped: list[Hashable] = field(default_factory=list)  # cancelled
    failed: list[tuple[Hashable, Exception]] = field(default_factory=list)  # done, but its decoding failed


def row_selector(rows: list[int], device) -> slice | Tensor:
    """These rows of a step's tensors: a slice (a view, no index kernel) when they are consecutive, as a
    series' rows nearly always are, else an index tensor."""
    first, n = rows[0], len(rows)
    if rows[-1] - first == n - 1 and rows == list(range(first, first + n)):
        return slice(first, first + n)
    return torch.as_tensor(rows, device=device)


def row_params(
    members: list[EngineSeries], rows_of: list[list[int]], rows: int, device
) -> tuple[Tensor, Tensor, Tensor]:
    """Each row's temperature, top_k and top_p (its series'), built on the host and sent as one tensor each."""
    temperature, top_k, top_p = [0.0] * rows, [0] * rows, [0.0] * rows
    for entry, mine in zip(members, rows_of):
        p = entry.job.params
        for r in mine:
            temperature[r], top_k[r], top_p[r] = p.temperature, p.top_k, p.top_p
    return (
        torch.tensor(temperature, dtype=torch.float32, device=device),
        torch.tensor(top_k, dtype=torch.long, device=device),
        torch.tensor(top_p, dtype=torch.float32, device=device),
    )
