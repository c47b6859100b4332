"""Building blocks shared by the tokenizer and the predictor: RMSNorm, rotary embedding, attention, SwiGLU, Block."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype == torch.float32 and _fused_rms_norm is not None:
            return _fused_rms_norm(x, (x.shape[-1],), self.weight, self.eps)
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


_fused_rms_norm = getattr(F, "rms_norm", None)  # torch >= 2.4: one kernel instead of six


class RotaryEmbedding(nn.Module):
    """Rotate-half rotary embedding; ``inv_freq`` is a checkpoint buffer."""

    def __init__(self, head_dim: int):
        super().__init__()
        inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
        self.register_buffer("inv_freq", inv_freq)

        self._table: tuple[tuple, Tensor, Tensor] | None = None

    def _tables(self, length: int) -> tuple[Tensor, Tensor]:
        # Tables are rebuilt when inv_freq is loaded or moved (its version/device changes).
        # (An inference tensor, from a model built under torch.inference_mode(), has no version counter.)
        version = -1 if self.inv_freq.is_inference() else self.inv_freq._version
        key = (version, self.inv_freq.device, self.inv_freq.data_ptr())
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


def attend_one(q: Tensor, keys: Tensor, values: Tensor, mask: Tensor | None = None, prescaled: bool = False) -> Tensor:
    """Attention of a single query position (B, H, 1, hd) over (B, H, L, hd) keys/values; with
    ``prescaled`` q already carries the 1/sqrt(hd) factor.

    Two small matmuls: PyTorch's fused CPU kernel is an order of magnitude slower for one query
    over a strided cache slice.
    """
    scores = torch.matmul(q, keys.transpose(-1, -2))
    if not prescaled:
        scores = scores * (q.shape[-1] ** -0.5)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.matmul(torch.softmax(scores, dim=-1), values)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate-half rotary embedding of x (..., hd) with broadcastable cos/sin (..., hd)."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class AttentionProjections(nn.Module):
    """The checkpoint's attention parameters: q/k/v/out projections (with bias) and rotary buffer."""

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
        """(B, L, d_model) to (B, H, L, head_dim)."""
        b, n, _ = x.shape
        return x.view(b, n, self.n_heads, self.head_dim).transpose(1, 2)


class SelfAttention(AttentionProjections):
    """Causal multi-head self-attention with rotary positions 0..L-1 over the tokens given.

    The plain implementation (training, the recompute oracle, the tokenizer); the fast decoder's
    cached steps run on ``model.nn.inference``.
    """

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        cos, sin = self.rotary.first(n)  # (L, hd)
        qkv = torch.cat((self.q_proj(x), self.k_proj(x), self.v_proj(x)), dim=-1).view(
            b, n, 3, self.n_heads, self.head_dim
        )
        # Rotate q and k in one go: (B, L, 2, H, hd).
        q, k = apply_rotary(qkv[:, :, :2], cos[:, None, None], sin[:, None, None]).transpose(1, 3).unbind(2)
        v = qkv[:, :, 2].transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
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

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.self_attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


def causal_stack(blocks: nn.ModuleList, x: Tensor) -> Tensor:
    """Run blocks over x (B, L, d) with positions 0..L-1 and no cache."""
    for block in blocks:
        x = block(x)
    return x
