"""Token sampling: temperature, top-k / top-p filtering, and inverse-CDF draws from caller-given uniforms.

Sampling is pure — logits and uniforms in, ids out — so a per-request ``torch.Generator`` makes a
request's answer reproducible whatever else shares its batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .errors import InputError


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 0.9

    def __post_init__(self) -> None:
        t, k, p = self.temperature, self.top_k, self.top_p
        if not isinstance(t, (int, float)) or not np.isfinite(t) or t <= 0:
            raise InputError(f"T (temperature) must be a finite number > 0, got {t!r}")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise InputError(f"top_k must be an integer >= 0, got {k!r}")
        if not isinstance(p, (int, float)) or not np.isfinite(p) or not 0 < p <= 1:
            raise InputError(f"top_p must be in (0, 1], got {p!r}")


def _kept_count(sorted_logits: Tensor, top_k: Tensor, top_p: Tensor) -> Tensor:
    """How many of the best logits (sorted descending, already scaled) each row keeps: top_k where
    top_k > 0, else the smallest prefix whose softmax mass reaches top_p (at least one), else all."""
    vocab = sorted_logits.shape[-1]
    count = torch.where(top_k > 0, top_k.clamp(1, vocab), vocab)
    use_p = (top_k <= 0) & (top_p < 1.0)
    if bool(use_p.any()):
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        # The token that crosses top_p stays, so a row keeps 1 + (tokens before the crossing).
        nucleus = (cumulative[:, :-1] <= top_p.unsqueeze(1)).sum(dim=-1) + 1
        count = torch.where(use_p, nucleus, count)
    return count


def filter_logits(logits: Tensor, temperature: Tensor, top_k: Tensor, top_p: Tensor) -> Tensor:
    """Scale by temperature, then keep the top_k logits where top_k > 0, else the top_p nucleus
    where top_p < 1 (always at least the best token); the rest become -inf. Per-row settings.
    A logit equal to the smallest kept one is kept too (ties at the cut are not broken)."""
    logits = logits / temperature.unsqueeze(1)
    sorted_logits = torch.sort(logits, dim=-1, descending=True).values
    cut = sorted_logits.gather(1, (_kept_count(sorted_logits, top_k, top_p) - 1).unsqueeze(1))
    return logits.masked_fill(logits < cut, float("-inf"))


def sample(logits: Tensor, temperature: Tensor, top_k: Tensor, top_p: Tensor, uniforms: Tensor) -> Tensor:
    """Ids (N,) drawn from the filtered softmax of logits (N, V) by inverse CDF at uniforms (N,) in [0, 1)."""
    probs = torch.softmax(filter_logits(logits.float(), temperature, top_k, top_p), dim=-1)
    cdf = probs.cumsum(dim=-1)
    target = (uniforms.to(cdf.dtype) * cdf[:, -1]).unsqueeze(1)
    return torch.searchsorted(cdf, target, right=True).squeeze(1).clamp_(max=logits.shape[-1] - 1)


class RowSampler:
    """Samples for rows grouped by series: each series has its own settings and generator, and
    draws its rows' uniforms together, so its draws never depend on the other series."""

    def __init__(
        self,
        params: list[SamplingParams],
        generators: list[torch.Generator],
        repeats: np.ndarray,
        device: torch.device,
    ):
        self.generators = generators
        self.repeats = repeats
        self.row_series = np.repeat(np.arange(len(params)), repeats)
        self.device = device
        self.temperature = torch.tensor(
            [params[s].temperature for s in self.row_series], dtype=torch.float32, device=device
        )
        self.top_k = torch.tensor([params[s].top_k for s in self.row_series], dtype=torch.long, device=device)
        self.top_p = torch.tensor([params[s].top_p for s in self.row_series], dtype=torch.float32, device=device)

    def __call__(self, logits: Tensor, rows: np.ndarray) -> Tensor:
        """Sample one id for each of ``rows`` (global row ids, a series' rows contiguous)."""
        uniforms = []
        series_of_rows = self.row_series[rows]
        start = 0
        while start < len(rows):
            s = series_of_rows[start]
            n = int(self.repeats[s])
            uniforms.append(torch.rand(n, generator=self.generators[s]))
            start += n
        u = torch.cat(uniforms).to(self.device)
        index = torch.as_tensor(rows, device=self.device)
        if len(rows) == len(self.row_series) and np.array_equal(rows, np.arange(len(rows))):
            return sample(logits, self.temperature, self.top_k, self.top_p, u)
        return sample(logits, self.temperature[index], self.top_k[index], self.top_p[index], u)
