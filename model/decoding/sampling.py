"""Token sampling: temperature, top-k / top-p filtering, and inverse-CDF draws from caller-given uniforms.

Sampling is pure — logits and uniforms in, ids out — so a per-request ``torch.Generator`` makes a
request's answer reproducible whatever else shares its batch.

The draw walks the kept tokens from the most to the least probable (ties in vocabulary order):
a uniform u picks the first token whose cumulative probability exceeds u times the kept mass.
Every token is drawn with its filtered probability, as with ``torch.multinomial``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError


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


def _kept_count(cdf: Tensor, top_k: Tensor, top_p: Tensor) -> Tensor:
    """How many of the best tokens each row keeps, from the cumulative softmax of its logits sorted
    descending: top_k where top_k > 0, else the smallest prefix whose mass reaches top_p (at least
    one token), else all. Computed for every row alike, so no host sync is needed."""
    vocab = cdf.shape[-1]
    # The token that crosses top_p stays, so a row keeps 1 + (tokens before the crossing).
    nucleus = (cdf[:, :-1] <= top_p.unsqueeze(1)).sum(dim=-1) + 1
    return torch.where(top_k > 0, top_k.clamp(1, vocab), torch.where(top_p < 1.0, nucleus, vocab))


def _sorted_cdf(logits: Tensor, temperature: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    scaled = logits.float() / temperature.unsqueeze(1)
    order = _descending_order(scaled)
    sorted_logits = scaled.gather(1, order)
    return sorted_logits, order, torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)


def _descending_order(x: Tensor) -> Tensor:
    """``torch.sort(x, dim=-1, descending=True, stable=True).indices`` of float32 rows (N, V), exactly.

    On a CPU through NumPy's vectorized sort of int64 keys, one per entry: the float's bits mapped to an
    integer of the same order, times V, plus the entry's index (so equal values keep vocabulary order,
    -0.0 counting as 0.0), which makes every key distinct and the unstable sort give the stable order.
    For 32 rows of 1024 it takes 0.25 ms where torch.sort takes 1.2 ms (2 cores, AVX512).
    """
    rows, vocab = x.shape
    if x.device.type != "cpu" or rows < 2 or vocab >= 2**31:
        return torch.sort(x, dim=-1, descending=True, stable=True).indices
    bits = (x + 0.0).view(torch.int32).numpy().astype(np.int64)  # + 0.0: -0.0 becomes 0.0
    ordered = np.where(bits >= 0, bits, bits ^ 0x7FFFFFFF)  # ascending with the float
    keys = -ordered * vocab + np.arange(vocab)
    keys.sort(axis=-1)
    return torch.from_numpy(keys % vocab)


def filter_logits(logits: Tensor, temperature: Tensor, top_k: Tensor, top_p: Tensor) -> Tensor:
    """Scale by temperature, then keep the top_k logits where top_k > 0, else the top_p nucleus
    where top_p < 1 (always at least the best token); the rest become -inf. Per-row settings.
    (What ``sample`` draws from, spelled out as logits.)"""
    sorted_logits, order, cdf = _sorted_cdf(logits, temperature)
    kept = torch.arange(logits.shape[-1], device=logits.device) < _kept_count(cdf, top_k, top_p).unsqueeze(1)
    sorted_logits = sorted_logits.masked_fill(~kept, float("-inf"))
    return torch.empty_like(sorted_logits).scatter_(1, order, sorted_logits)


def sample(logits: Tensor, temperature: Tensor, top_k: Tensor, top_p: Tensor, uniforms: Tensor) -> Tensor:
    """Ids (N,) drawn from the filtered softmax of logits (N, V) by inverse CDF at uniforms (N,) in [0, 1)."""
    _, order, cdf = _sorted_cdf(logits, temperature)
    last = (_kept_count(cdf, top_k, top_p) - 1).unsqueeze(1)
    target = uniforms.to(cdf.dtype).unsqueeze(1) * cdf.gather(1, last)
    position = torch.minimum(torch.searchsorted(cdf, target, right=True), last)
    return order.gather(1, position).squeeze(1)


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
        u = (uniforms[0] if len(uniforms) == 1 else torch.cat(uniforms)).to(self.device)
        if len(rows) == len(self.row_series) and np.array_equal(rows, np.arange(len(rows))):
            return sample(logits, self.temperature, self.top_k, self.top_p, u)
        index = torch.as_tensor(rows, device=self.device)
        return sample(logits, self.temperature[index], self.top_k[index], self.top_p[index], u)
