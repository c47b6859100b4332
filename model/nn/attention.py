"""Attention of the fast decoder, arranged so that a row's numbers never depend on the rows beside it.

The rule of ``kernels.py`` holds here too: a query row gets the same bits whatever else is in the
call: other series of a batch (and their lengths), other query rows of a prefill chunk, and the
chunk boundaries themselves. PyTorch's CPU attention sums a row's keys in another order when the
number of key columns changes (a tail that is not a multiple of the vector width), and its products
split query rows into blocks by the call's size. So, on a CPU:

- a decode step (one query per row) attends over ``kv_cache.aligned(longest row)`` columns, a
  multiple of ``KEY_ALIGN`` and at least ``MIN_KEYS``, the columns past a row's own length masked out
  (they add exact zeros);
- a prefill (or a window recomputation, or a chunk of either) runs its query rows in blocks of
  ``QUERY_BLOCK`` rows anchored at multiples of ``QUERY_BLOCK`` window positions, each block padded
  to full size and attending over the columns up to its block's end (causal mask): the shapes a
  query row meets depend only on its own position, never on where its chunk starts or ends.

Elsewhere (GPU) one causal kernel call, unchecked.

Attention runs in float32 at every precision (bf16 and int8 keep their key/value cache in float32):
the products above keep their bits only in float32, and PyTorch's bf16 batched products copy
strided cache slices first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .kv_cache import QUERY_BLOCK


def attend_cached(q: Tensor, keys: Tensor, values: Tensor, mask: Tensor | None) -> Tensor:
    """One pre-scaled query per row (R, H, 1, hd) over (R, H, C, hd) keys/values; ``mask`` (R or 1, 1, 1, C)
    is True where a row sees a column. Two batched products around a softmax: PyTorch's fused kernel gives
    a row other bits when C changes, even by whole multiples of KEY_ALIGN; these do not."""
    scores = torch.matmul(f32(q), keys.transpose(-1, -2))
    if mask is not None:
        scores.masked_fill_(~mask, float("-inf"))
    return torch.matmul(torch.softmax(scores, dim=-1), values)


def f32(t: Tensor) -> Tensor:
    return t if t.dtype == torch.float32 else t.float()


def padded_columns(t: Tensor, columns: int) -> Tensor:
    """(B, H, n, hd) zero-padded to ``columns`` positions along dim 2."""
    n = t.shape[2]
    return t if n >= columns else F.pad(t, (0, 0, 0, columns - n))


def causal_blocks(q: Tensor, keys: Tensor, values: Tensor, start: int) -> Tensor:
    """Causal attention of pre-scaled queries q (B, H, n, hd) at positions start..start+n-1 over the
    keys/values (B, H, C, hd) of positions 0.. (columns past start+n are never seen). ``C`` must
    reach the end of the last query block: ``block_end(start + n)``."""
    n = q.shape[2]
    end = start + n
    q, keys, values = f32(q), f32(keys), f32(values)
    if q.device.type != "cpu":
        mask = None if start == 0 else torch.ones(n, end, dtype=torch.bool, device=q.device).tril(diagonal=start)
        return F.scaled_dot_product_attention(
            q, keys[:, :, :end], values[:, :, :end], attn_mask=mask, is_causal=start == 0, scale=1.0
        )
    first = start - start % QUERY_BLOCK
    last = block_end(end)
    padded = F.pad(q, (0, 0, start - first, last - end))
    out = []
    for b0 in range(first, last, QUERY_BLOCK):
        b1 = b0 + QUERY_BLOCK
        rows = padded[:, :, b0 - first : b1 - first]
        out.append(
            F.scaled_dot_product_attention(
                rows, keys[:, :, :b1], values[:, :, :b1], attn_mask=_causal_mask(b0, q.device), scale=1.0
            )
        )
    return torch.cat(out, dim=2)[:, :, start - first : start - first + n]


def block_end(end: int) -> int:
    """The key columns the query blocks of positions below ``end`` read."""
    return -(-end // QUERY_BLOCK) * QUERY_BLOCK


_MASKS: dict[tuple[int, torch.device], Tensor] = {}


def _causal_mask(b0: int, device: torch.device) -> Tensor:
    """(QUERY_BLOCK, b0 + QUERY_BLOCK): query row r (position b0 + r) sees columns 0..b0 + r."""
    key = (b0, QUERY_BLOCK, device)
    if key not in _MASKS:
        with torch.inference_mode(False):  # a plain tensor, usable in and out of inference mode
            _MASKS[key] = torch.ones(QUERY_BLOCK, b0 + QUERY_BLOCK, dtype=torch.bool, device=device).tril(diagonal=b0)
    return _MASKS[key]
