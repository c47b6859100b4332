"""The Kronos predictor network: token + time embedding, causal trunk, s1 head, and the s2 dependency layer."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoints.checkpoint import PretrainedMixin
from .config import PredictorConfig
from .kv_cache import KVCache
from .layers import AttentionProjections, Block, RMSNorm, apply_rotary, attend_one, causal_stack


class HierarchicalEmbedding(nn.Module):
    def __init__(self, vocab: int, d_model: int):
        super().__init__()
        self.scale = math.sqrt(d_model)
        self.emb_s1 = nn.Embedding(vocab, d_model)
        self.emb_s2 = nn.Embedding(vocab, d_model)
        self.fusion_proj = nn.Linear(2 * d_model, d_model)

    def forward(self, s1: Tensor, s2: Tensor) -> Tensor:
        fused = torch.cat((self.emb_s1(s1) * self.scale, self.emb_s2(s2) * self.scale), dim=-1)
        return self.fusion_proj(fused)


class FixedEmbedding(nn.Module):
    """Sinusoid table (learn_te false); stored in checkpoints as ``<name>.emb.weight``."""

    def __init__(self, rows: int, d_model: int):
        super().__init__()
        position = torch.arange(rows, dtype=torch.float32).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * -(math.log(10000.0) / d_model))
        table = torch.zeros(rows, d_model)
        table[:, 0::2] = torch.sin(position * div_term)
        table[:, 1::2] = torch.cos(position * div_term)
        self.emb = nn.Embedding(rows, d_model)
        self.emb.weight = nn.Parameter(table, requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.emb(x)


class TemporalEmbedding(nn.Module):
    """Sum of minute, hour, weekday (Monday = 0), day-of-month and month embeddings."""

    FIELDS = (("minute_embed", 60), ("hour_embed", 24), ("weekday_embed", 7), ("day_embed", 32), ("month_embed", 13))

    def __init__(self, d_model: int, learn_te: bool):
        super().__init__()
        for name, rows in self.FIELDS:
            setattr(self, name, nn.Embedding(rows, d_model) if learn_te else FixedEmbedding(rows, d_model))

    def forward(self, stamp: Tensor) -> Tensor:
        stamp = stamp.long()
        out = self.minute_embed(stamp[..., 0])
        for i, (name, _) in enumerate(self.FIELDS[1:], start=1):
            out = out + getattr(self, name)(stamp[..., i])
        return out


class CrossAttention(AttentionProjections):
    """The dependency layer's attention: a query from the chosen s1 over keys/values from the trunk."""

    def keys_values(self, h: Tensor) -> tuple[Tensor, Tensor]:
        return self._heads(self.k_proj(h)), self._heads(self.v_proj(h))

    def forward(self, query: Tensor, keys: Tensor, values: Tensor, mask: Tensor | None = None) -> Tensor:
        b, n, d = query.shape
        q = self._heads(self.q_proj(query))
        # Rotary angles follow the query length and are applied to q and k alike; a length-1
        # query (inference) sits at position 0, where the rotation is the identity.
        if n > 1:
            cos, sin = self.rotary.first(n)
            q, keys = apply_rotary(q, cos, sin), apply_rotary(keys, cos, sin)
        if n == 1:
            out = attend_one(q, keys, values, mask)
        else:
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d))


class DependencyAwareLayer(nn.Module):
    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.cross_attn = CrossAttention(d_model, n_heads)
        self.norm = RMSNorm(d_model)


class DualHead(nn.Module):
    def __init__(self, vocab: int, d_model: int):
        super().__init__()
        self.proj_s1 = nn.Linear(d_model, vocab)
        self.proj_s2 = nn.Linear(d_model, vocab)


class Kronos(PretrainedMixin, nn.Module):
    """Autoregressive predictor over (s1, s2) candle tokens."""

    config_class = PredictorConfig

    def __init__(self, config: PredictorConfig):
        super().__init__()
        self.config = config
        vocab = 2**config.s1_bits
        self.embedding = HierarchicalEmbedding(vocab, config.d_model)
        self.time_emb = TemporalEmbedding(config.d_model, config.learn_te)
        self.transformer = nn.ModuleList(
            Block(config.d_model, config.n_heads, config.ff_dim) for _ in range(config.n_layers)
        )
        self.norm = RMSNorm(config.d_model)
        self.dep_layer = DependencyAwareLayer(config.d_model, PredictorConfig.DEP_HEADS)
        self.head = DualHead(vocab, config.d_model)

    # --- pieces -------------------------------------------------------------------------
    def embed(self, s1: Tensor, s2: Tensor, stamp: Tensor) -> Tensor:
        return self.embedding(s1, s2) + self.time_emb(stamp)

    def trunk(self, x: Tensor) -> Tensor:
        """Blocks then the final norm over positions 0..L-1: the hidden state h (B, L, d_model).
        (The cached decoder's trunk is ``model.nn.inference.InferenceWeights.trunk``.)"""
        return self.norm(causal_stack(self.transformer, x))

    def new_cache(self, rows: int, capacity: int, lengths, expand: Tensor | int = 1) -> KVCache:
        p = next(self.parameters())
        attn = self.transformer[0].self_attn if len(self.transformer) else None
        layer_shape = (attn.n_heads, attn.head_dim) if attn is not None else (1, 1)
        dep = self.dep_layer.cross_attn
        return KVCache(
            rows=rows,
            capacity=capacity,
            layers=[layer_shape] * len(self.transformer),
            dep=(dep.n_heads, dep.head_dim),
            lengths=lengths,
            expand=expand,
            dtype=p.dtype,
            device=p.device,
        )

    def s2_logits_last(
        self, h_last: Tensor, s1: Tensor, keys: Tensor, values: Tensor, mask: Tensor | None = None
    ) -> Tensor:
        """s2 logits (R, V) at the last position given the chosen s1 (R,), attending over the
        dependency layer's keys/values of the whole window (R, 4, L, hd)."""
        query = self.embedding.emb_s1(s1).unsqueeze(1)
        attn = self.dep_layer.cross_attn(query, keys, values, mask)[:, 0]
        return self.head.proj_s2(self.dep_layer.norm(h_last + attn))

    # --- the reference's full-window calls (the oracle) ---------------------------------
    def decode_s1(self, s1: Tensor, s2: Tensor, stamp: Tensor) -> tuple[Tensor, Tensor]:
        """s1 logits (B, L, V) and hidden state h (B, L, d) over a whole window, positions 0..L-1."""
        x = self.embed(s1, s2, stamp)
        h = self.trunk(x)
        return self.head.proj_s1(h), h

    def decode_s2(self, h: Tensor, s1: Tensor) -> Tensor:
        """s2 logits (B, L, V) for every window position given the chosen s1 (B, 1), as the reference does."""
        query = self.embedding.emb_s1(s1)
        keys, values = self.dep_layer.cross_attn.keys_values(h)
        attn = self.dep_layer.cross_attn(query, keys, values)
        return self.head.proj_s2(self.dep_layer.norm(h + attn))
