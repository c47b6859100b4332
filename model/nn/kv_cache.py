"""The key/value cache of the predictor: one preallocated tensor pair per layer, right-padded rows.

Row r holds ``lengths[r]`` valid columns starting at column 0 (its window positions
0..lengths[r]-1). A decode step writes each row's new key/value at column ``lengths[r]`` and
attends over columns 0..lengths[r]; columns past that hold padding and are masked out.

A decode step attends over a number of columns rounded up to a multiple of ``KEY_ALIGN``, and at
least ``MIN_KEYS`` (the tensors are allocated that wide): the CPU products of attention sum a row's
keys in another order when their count is not a multiple of the vector width, and PyTorch runs a
batched product of fewer than 400 multiply-adds per output matrix on a loop of its own instead of
MKL's; without this a row's numbers changed with the longest row beside it. Padding columns are
masked out, so they add exact zeros.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

KEY_ALIGN = 16
MIN_KEYS = 64  # with head_dim >= 7: past PyTorch's 400 multiply-adds for MKL's batched product
QUERY_BLOCK = 64  # a prefill's query rows per attention call (model.nn.attention); a multiple of KEY_ALIGN


def aligned(columns: int) -> int:
    """The columns a decode step attends over for ``columns`` valid keys (see the module docstring)."""
    return max(MIN_KEYS, -(-columns // KEY_ALIGN) * KEY_ALIGN)


def allocated(columns: int) -> int:
    """The columns a cache of ``columns`` positions allocates: room for decode steps and prefill blocks."""
    return max(aligned(columns), -(-columns // QUERY_BLOCK) * QUERY_BLOCK)


class LayerCache:
    def __init__(self, owner: KVCache, rows: int, heads: int, head_dim: int):
        self.owner = owner
        shape = (rows, heads, allocated(owner.capacity), head_dim)
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
        if k.dtype != self.k.dtype:  # a bf16 model's new token into its float32 cache
            k, v = k.to(self.k.dtype), v.to(self.v.dtype)
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
    """What every layer needs to know about the current decode step (computed once per step).

    A row's token goes to rotary position ``lengths[row]``. With ``width`` given, a row whose length
    reached it is a ring (a rolling window, see ``model.decoding.engine``): its token overwrites its oldest
    column (``lengths[row] % width``) and it attends over all ``width`` columns. Attention does not
    care about the order of the columns: each key carries its position in its rotation.
    """

    def __init__(self, lengths: np.ndarray, device: torch.device, width: int | None = None):
        lengths = np.asarray(lengths)
        write, valid = lengths, lengths + 1
        if width is not None and (lengths >= width).any():
            write, valid = lengths % width, np.minimum(lengths + 1, width)
        self.used = aligned(int(valid.max()))  # columns to attend over
        self.end = int(lengths.max()) + 1  # rotary positions below this
        self.positions = torch.tensor(lengths, device=device).unsqueeze(1)
        # Every row writes the same column: a plain slice write.
        self.uniform: int | None = int(write[0]) if (write == write[0]).all() else None
        self.rows = self.write = None
        if self.uniform is None:
            self.write = torch.tensor(write, device=device)
            self.rows = torch.arange(len(lengths), device=device)
        self.mask = None  # every row sees every column
        if (valid != self.used).any():
            cols = torch.arange(self.used, device=device)
            self.mask = (cols[None, :] < torch.tensor(valid, device=device)[:, None])[:, None, None, :]


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


class _SlabLayer(LayerCache):
    """One layer of a ``KVSlab`` seen as the cache of its first rows (views: writes go to the slab)."""

    def __init__(self, owner: _SlabRows, k: Tensor, v: Tensor):
        self.owner = owner
        self.k = k
        self.v = v


class _SlabRows:
    """The first ``rows`` slots of a slab, with the interface a decode step needs (``step``, ``layers``, ``dep``)."""

    def __init__(self, slab: KVSlab, rows: int):
        self.step = _Step(slab.lengths[:rows], slab.device, width=slab.width)
        self.layers = [_SlabLayer(self, k[:rows], v[:rows]) for k, v in zip(slab.k, slab.v)]
        self.dep = _SlabLayer(self, slab.dep_k[:rows], slab.dep_v[:rows])


class KVSlab:
    """A key/value cache preallocated once per model and reused by every batch: ``slots`` rows of
    ``width`` columns per trunk layer, plus the dependency layer's keys/values.

    Slot s holds ``lengths[s]`` valid columns (window positions 0..lengths[s]-1). Rows that decode
    live in slots 0..n-1, so a decode step attends over plain views of the slab; ``move`` copies a
    row to another slot (to keep them packed when rows leave). Nothing is allocated per step.
    """

    def __init__(
        self,
        *,
        slots: int,
        width: int,
        layers: list[tuple[int, int]],
        dep: tuple[int, int],
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ):
        self.slots = slots
        self.width = width
        self.device = torch.device(device)
        # Zeros, not empty: a masked-out column still meets a value in the attention product, and
        # recycled memory could hold NaN bit patterns. Allocated KEY_ALIGN-wide (see the module docstring).
        columns = allocated(width)
        self.k = [torch.zeros(slots, h, columns, d, dtype=dtype, device=self.device) for h, d in layers]
        self.v = [torch.zeros_like(k) for k in self.k]
        self.dep_k = torch.zeros(slots, dep[0], columns, dep[1], dtype=dtype, device=self.device)
        self.dep_v = torch.zeros_like(self.dep_k)
        self.lengths = np.zeros(slots, dtype=np.int64)
        # Rows that roll: past ``width`` tokens each new one overwrites the oldest (see ``_Step``).
        self.rolling = np.zeros(slots, dtype=bool)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.k, *self.v, self.dep_k, self.dep_v))

    def layer_views(self, slot: int) -> list[tuple[Tensor, Tensor]]:
        """Every trunk layer's (keys, values) of one slot, each (1, H, width, hd)."""
        return [(k[slot : slot + 1], v[slot : slot + 1]) for k, v in zip(self.k, self.v)]

    def rows(self, n: int) -> _SlabRows:
        """The first n slots as a decode step's cache (each row writes its token at column lengths[row])."""
        if n and (self.lengths[:n] >= self.width)[~self.rolling[:n]].any():
            raise RuntimeError("KV slab row is full")
        return _SlabRows(self, n)

    def move(self, source: int, target: int, length: int | None = None) -> None:
        """Copy a slot's first ``length`` (default: its length) columns to another slot."""
        n = int(self.lengths[source]) if length is None else length
        columns = min(n, self.width)  # a ring's length counts past its width
        for tensors in (self.k, self.v, [self.dep_k], [self.dep_v]):
            for t in tensors:
                t[target, :, :columns] = t[source, :, :columns]
        self.lengths[target] = n
        self.rolling[target] = self.rolling[source]

    def save(self, slot: int, length: int) -> list[Tensor]:
        """A copy of a slot's first ``length`` columns (``load`` puts it in any slot)."""
        return [t[slot, :, :length].clone() for t in (*self.k, *self.v, self.dep_k, self.dep_v)]

    def load(self, slot: int, saved: list[Tensor]) -> None:
        n = saved[0].shape[1]
        for t, part in zip((*self.k, *self.v, self.dep_k, self.dep_v), saved):
            t[slot, :, :n] = part
        self.lengths[slot] = n
