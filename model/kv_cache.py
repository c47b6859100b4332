"""The key/value cache of the predictor: one preallocated tensor pair per layer, right-padded rows.

Row r holds ``lengths[r]`` valid columns starting at column 0 (its window positions
0..lengths[r]-1). A decode step writes each row's new key/value at column ``lengths[r]`` and
attends over columns 0..lengths[r]; columns past that hold padding and are masked out.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


class LayerCache:
    def __init__(self, owner: KVCache, rows: int, heads: int, head_dim: int):
        self.owner = owner
        shape = (rows, heads, owner.capacity, head_dim)
        self.k = torch.zeros(shape, dtype=owner.dtype, device=owner.device)
        self.v = torch.zeros(shape, dtype=owner.dtype, device=owner.device)

    def prefill(self, k: Tensor, v: Tensor) -> None:
        """Store keys/values (B, H, P, hd) of a prefill; each is shared by ``owner.expand`` rows."""
        n = k.shape[2]
        if not (isinstance(self.owner.expand, int) and self.owner.expand == 1):
            k = k.repeat_interleave(self.owner.expand, dim=0)
            v = v.repeat_interleave(self.owner.expand, dim=0)
        self.k[:, :, :n] = k
        self.v[:, :, :n] = v

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Write one step's keys/values (R, H, 1, hd); return the keys, values and mask to attend over."""
        step = self.owner.step
        if step.uniform is not None:
            self.k[:, :, step.uniform] = k[:, :, 0]
            self.v[:, :, step.uniform] = v[:, :, 0]
        else:
            self.k[step.rows, :, step.write] = k[:, :, 0]
            self.v[step.rows, :, step.write] = v[:, :, 0]
        return self.k[:, :, : step.used], self.v[:, :, : step.used], step.mask

    def keep(self, index: Tensor) -> None:
        self.k = self.k.index_select(0, index)
        self.v = self.v.index_select(0, index)


class _Step:
    """What every layer needs to know about the current decode step (computed once per step)."""

    def __init__(self, lengths: np.ndarray, device: torch.device):
        self.used = int(lengths.max()) + 1
        self.positions = torch.tensor(lengths, device=device).unsqueeze(1)
        if (lengths == lengths[0]).all():
            # Every row writes the same column: a plain slice write and no mask.
            self.uniform: int | None = int(lengths[0])
            self.mask = None
            self.rows = self.write = None
        else:
            self.uniform = None
            write = self.positions[:, 0]
            self.write = write
            self.rows = torch.arange(len(lengths), device=device)
            cols = torch.arange(self.used, device=device)
            self.mask = (cols[None, :] <= write[:, None])[:, None, None, :]


class KVCache:
    """Caches of every trunk layer plus the dependency layer's projections of the trunk output."""

    def __init__(
        self,
        *,
        rows: int,
        capacity: int,
        layers: list[tuple[int, int]],
        dep: tuple[int, int],
        lengths: np.ndarray,
        expand: Tensor | int = 1,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ):
        self.capacity = capacity
        self.dtype = dtype
        self.device = torch.device(device)
        self.expand = expand
        self.lengths = np.asarray(lengths, dtype=np.int64).copy()
        self.layers = [LayerCache(self, rows, heads, head_dim) for heads, head_dim in layers]
        self.dep = LayerCache(self, rows, *dep)
        self.step: _Step | None = None

    def begin_step(self) -> None:
        """Prepare a decode step: each row's token goes to column (and position) lengths[row]."""
        if int(self.lengths.max()) >= self.capacity:
            raise RuntimeError("KV cache is full")
        self.step = _Step(self.lengths, self.device)

    def end_step(self) -> None:
        self.lengths += 1
        self.step = None

    def keep(self, rows: np.ndarray) -> None:
        """Keep only the given rows (in that order), e.g. when others finish or start sliding."""
        index = torch.as_tensor(rows, dtype=torch.long, device=self.device)
        for layer in (*self.layers, self.dep):
            layer.keep(index)
        self.lengths = self.lengths[rows]
