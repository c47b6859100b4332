"""Building blocks shared by the tokenizer and the predictor: RMSNorm, rotary embedding, attention, SwiGLU, Block."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .kv_cache import LayerCache


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


class RotaryEmbedding(nn.Module):
    """Rotate-half rotary embedding; ``inv_freq`` is a checkpoint buffer."""

    def __init__(self, head_dim: int):
        super().__init__()
        inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
        self.register_buffer("inv_freq", inv_freq)

        self._table: tuple[tuple, Tensor, Tensor] | None = None

    def _tables(self, length: int) -> tuple[Tensor, Tensor]:
        # Tables are rebuilt when inv_freq is loaded or moved (its version/device changes).
        key = (self.inv_freq._version, self.inv_freq.device, self.inv_freq.data_ptr())
        if self._table is None or self._table[0] != key or self._table[1].shape[0] < length:
            size = max(length, 64 if self._table is None else self._table[1].shape[0] * 2)
            t = torch.arange(size, device=self.inv_freq.device, dtype=self.inv_freq.dtype)
            angles = torch.outer(t, self.inv_freq)
            angles = torch.cat((angles, angles), dim=-1)
            self._table = (key, angles.cos(), angles.sin())
        return self._table[1], self._table[2]

    def first(self, length: int) -> tuple[Tensor, Tensor]:
        """cos and sin (length, head_dim) for positions 0..length-1."""
        cos, sin = self._tables(length)
        return cos[:length], sin[:length]

    def at(self, positions: Tensor, end: int) -> tuple[Tensor, Tensor]:
        """cos and sin (B, 1, L, head_dim) for per-row positions (B, L), all below end."""
        cos, sin = self._tables(end)
        return cos[positions].unsqueeze(1), sin[positions].unsqueeze(1)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class SelfAttention(nn.Module):
    """Causal multi-head self-attention with rotary positions.

    Without a cache it attends causally over the sequence given (positions are those of the
    rotary tables passed in). With a cache it writes this step's keys/values at the cache's
    per-row write positions and attends over everything cached so far.
    """

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.rotary = RotaryEmbedding(self.head_dim)

    def _heads(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.n_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: Tensor, cache: LayerCache | None = None) -> Tensor:
        b, n, d = x.shape
        if cache is None or n > 1:
            cos, sin = self.rotary.first(n)
        else:
            cos, sin = self.rotary.at(cache.owner.step.positions, cache.owner.step.used)
        q = apply_rotary(self._heads(self.q_proj(x)), cos, sin)
        k = apply_rotary(self._heads(self.k_proj(x)), cos, sin)
        v = self._heads(self.v_proj(x))
        if cache is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        elif n > 1:
            # Prefill: causal over the fed (right-padded) tokens; padding sits after every real
            # token of its row, so no real query ever sees it.
            cache.prefill(k, v)
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            keys, values, mask = cache.append(k, v)
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d))


class SwiGLU(nn.Module):
    def __init__(self, d_model: int, ff_dim: int):
        super().__init__()
        self.w1 = nn.Linear(d_model, ff_dim, bias=False)
        self.w2 = nn.Linear(ff_dim, d_model, bias=False)
        self.w3 = nn.Linear(d_model, ff_dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    """Pre-norm transformer block: x += attn(norm1 x); x += ffn(norm2 x)."""

    def __init__(self, d_model: int, n_heads: int, ff_dim: int):
        super().__init__()
        self.norm1 = RMSNorm(d_model)
        self.self_attn = SelfAttention(d_model, n_heads)
        self.norm2 = RMSNorm(d_model)
        self.ffn = SwiGLU(d_model, ff_dim)

    def forward(self, x: Tensor, cache: LayerCache | None = None) -> Tensor:
        x = x + self.self_attn(self.norm1(x), cache)
        return x + self.ffn(self.norm2(x))


def causal_stack(blocks: nn.ModuleList, x: Tensor) -> Tensor:
    """Run blocks over x (B, L, d) with positions 0..L-1 and no cache."""
    for block in blocks:
        x = block(x)
    return x
