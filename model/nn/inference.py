"""The predictor's forward pass for the fast decoder, on weights laid out for inference.

The module code in ``predictor.py`` / ``layers.py`` is the plain implementation: training and the
recompute oracle use it. Here the same arithmetic runs on a prepared copy of the weights
(``InferenceWeights``), built once per model and rebuilt whenever a parameter changes:

* every projection is stored input-major (``in × out``, contiguous). A one-row product then
  streams the weight in order; on a 2-core CPU that is about 1.8x the bandwidth of the
  ``out × in`` layout that ``nn.Linear`` keeps, and a decode step is bound by reading weights;
* each RMSNorm weight is folded into the projection that follows it, and the attention scale
  1/sqrt(head_dim) into the query projection;
* q/k/v and w1/w3 are fused, so a block is four matrix products;
* the token embedding is two lookup tables: ``fusion_proj(concat(emb_s1(a)·√d, emb_s2(b)·√d))``
  equals ``T1[a] + T2[b]`` with ``T1 = (emb_s1·√d) @ W1ᵀ + bias`` and ``T2 = (emb_s2·√d) @ W2ᵀ``;
  likewise the dependency layer's query ``q_proj(emb_s1(s1))`` is one table row.

The results equal the module path's up to float32 rounding (products are summed in another
order), which the tests bound and which leaves sampled ids unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .kv_cache import KVCache
from .layers import RotaryEmbedding, apply_rotary, attend_one


@dataclass
class _BlockWeights:
    qkv: Tensor  # (d, 3d): norm1 folded in, q part scaled by 1/sqrt(head_dim)
    qkv_bias: Tensor  # (3d,)
    out: Tensor  # (d, d)
    out_bias: Tensor  # (d,)
    w13: Tensor  # (d, 2 ff): norm2 folded in
    w2: Tensor  # (ff, d)
    rotary: RotaryEmbedding
    eps1: float
    eps2: float


def _state_key(tensors) -> tuple:
    """Changes whenever one of the tensors is replaced, moved or updated in place. (Tensors made
    under inference_mode have no version counter; they can only be updated in place under
    inference_mode, which this cannot see.)"""
    return tuple((t.data_ptr(), t.device, -1 if t.is_inference() else t._version) for t in tensors)


def _input_major(weight: Tensor, scale_in: Tensor | None = None, scale_out: float = 1.0) -> Tensor:
    """A Linear weight (out, in) as a contiguous (in, out) matrix, rows scaled by a folded norm weight."""
    w = weight.detach().t()
    if scale_in is not None:
        w = w * scale_in.detach().unsqueeze(1)
    if scale_out != 1.0:
        w = w * scale_out
    return w.contiguous()


class InferenceWeights:
    """A prepared copy of a ``Kronos`` model's weights (see the module docstring)."""

    def __init__(self, model):
        cfg = model.config
        self.d_model = cfg.d_model
        self.n_heads = cfg.n_heads
        self.head_dim = cfg.d_model // cfg.n_heads
        with torch.no_grad():
            self.blocks = [self._block(b) for b in model.transformer]
            # Every block has its own inv_freq buffer; they are equal in every published
            # checkpoint, and then a decode step looks up cos/sin once instead of per block.
            self.shared_rotary = all(
                torch.equal(b.rotary.inv_freq, self.blocks[0].rotary.inv_freq) for b in self.blocks
            )
            self.norm_weight = model.norm.weight.detach()
            self.norm_eps = model.norm.eps

            emb = model.embedding
            d = cfg.d_model
            fusion = emb.fusion_proj.weight.detach()
            self.token_s1 = (emb.emb_s1.weight.detach() * emb.scale) @ fusion[:, :d].t() + emb.fusion_proj.bias.detach()
            self.token_s2 = (emb.emb_s2.weight.detach() * emb.scale) @ fusion[:, d:].t()
            self.time_emb = model.time_emb

            dep = model.dep_layer.cross_attn
            self.dep_heads = dep.n_heads
            self.dep_head_dim = dep.head_dim
            dep_scale = dep.head_dim**-0.5
            self.dep_query = (
                F.linear(emb.emb_s1.weight.detach(), dep.q_proj.weight, dep.q_proj.bias) * dep_scale
            ).contiguous()
            self.dep_out = _input_major(dep.out_proj.weight)
            self.dep_out_bias = dep.out_proj.bias.detach()
            self.dep_norm_weight = model.dep_layer.norm.weight.detach()
            self.dep_norm_eps = model.dep_layer.norm.eps

            # A decode step's new hidden state feeds both the dependency keys/values and the s1
            # head: one product over both weights reads them in one pass. The two are views of it.
            self.step_heads_weight = torch.cat(
                (
                    _input_major(dep.k_proj.weight),
                    _input_major(dep.v_proj.weight),
                    _input_major(model.head.proj_s1.weight),
                ),
                dim=1,
            )
            self.step_heads_bias = torch.cat((dep.k_proj.bias, dep.v_proj.bias, model.head.proj_s1.bias)).detach()
            self.dep_kv, self.head_s1 = self.step_heads_weight[:, : 2 * d], self.step_heads_weight[:, 2 * d :]
            self.dep_kv_bias, self.head_s1_bias = self.step_heads_bias[: 2 * d], self.step_heads_bias[2 * d :]
            self.head_s2 = _input_major(model.head.proj_s2.weight)
            self.head_s2_bias = model.head.proj_s2.bias.detach()

    def _block(self, block) -> _BlockWeights:
        attn, ffn = block.self_attn, block.ffn
        q_scale = attn.head_dim**-0.5
        g1 = block.norm1.weight
        qkv = torch.cat(
            (
                _input_major(attn.q_proj.weight, g1, q_scale),
                _input_major(attn.k_proj.weight, g1),
                _input_major(attn.v_proj.weight, g1),
            ),
            dim=1,
        )
        qkv_bias = torch.cat((attn.q_proj.bias * q_scale, attn.k_proj.bias, attn.v_proj.bias)).detach()
        w13 = torch.cat(
            (_input_major(ffn.w1.weight, block.norm2.weight), _input_major(ffn.w3.weight, block.norm2.weight)), dim=1
        )
        return _BlockWeights(
            qkv=qkv,
            qkv_bias=qkv_bias,
            out=_input_major(attn.out_proj.weight),
            out_bias=attn.out_proj.bias.detach(),
            w13=w13,
            w2=_input_major(ffn.w2.weight),
            rotary=attn.rotary,
            eps1=block.norm1.eps,
            eps2=block.norm2.eps,
        )

    @staticmethod
    def of(model) -> InferenceWeights:
        """The model's prepared weights, rebuilt when any parameter or buffer was replaced,
        moved or changed in place (its pointer, device or version differs)."""
        key = _state_key((*model.parameters(), *model.buffers()))
        cached = getattr(model, "_inference_weights", None)
        if cached is None or cached[0] != key:
            cached = (key, InferenceWeights(model))
            # Not a registered module attribute: it is derived state, never saved or moved.
            object.__setattr__(model, "_inference_weights", cached)
        return cached[1]

    # --- embedding ----------------------------------------------------------------------
    def embed(self, s1: Tensor, s2: Tensor, stamp: Tensor) -> Tensor:
        return self.token_s1[s1] + self.token_s2[s2] + self.time_emb(stamp)

    # --- trunk --------------------------------------------------------------------------
    def trunk(self, x: Tensor, cache: KVCache | None = None) -> Tensor:
        """The blocks and the final norm over x (B, L, d), as ``Kronos.trunk``: positions 0..L-1,
        or with a cache and L == 1 (a decode step), each row's cached length."""
        b, n, d = x.shape
        if cache is not None and n == 1:
            return self._decode_step(x[:, 0], cache).unsqueeze(1)
        x = x.reshape(b * n, d)
        for i, blk in enumerate(self.blocks):
            qkv = _linear(_rms(x, blk.eps1), blk.qkv, blk.qkv_bias).view(b, n, 3, self.n_heads, self.head_dim)
            cos, sin = blk.rotary.first(n)
            q, k = apply_rotary(qkv[:, :, :2], cos[:, None, None], sin[:, None, None]).transpose(1, 3).unbind(2)
            v = qkv[:, :, 2].transpose(1, 2)
            if cache is not None:
                cache.layers[i].prefill(k, v)
            o = _causal_attention(q, k, v)
            x = self._attn_out_ffn(blk, x, o.transpose(1, 2).reshape(b * n, d))
        return _rms(x, self.norm_eps, self.norm_weight).view(b, n, d)

    def prefill_chunk(self, x: Tensor, layers: list[tuple[Tensor, Tensor]], start: int) -> Tensor:
        """The blocks and the final norm over x (B, C, d) at window positions start..start+C-1, for
        rows whose positions 0..start-1 already have keys/values in ``layers`` (per block, tensors
        (B, H, width, hd)); the chunk's own keys/values are written there. With start 0 this is the
        arithmetic of ``trunk(x, cache)``; a later chunk attends over the cached columns too."""
        b, n, d = x.shape
        end = start + n
        mask = None if start == 0 else torch.ones(n, end, dtype=torch.bool, device=x.device).tril(diagonal=start)
        x = x.reshape(b * n, d)
        for i, blk in enumerate(self.blocks):
            qkv = _linear(_rms(x, blk.eps1), blk.qkv, blk.qkv_bias).view(b, n, 3, self.n_heads, self.head_dim)
            cos, sin = blk.rotary.first(end)
            cos, sin = cos[start:], sin[start:]
            q, k = apply_rotary(qkv[:, :, :2], cos[:, None, None], sin[:, None, None]).transpose(1, 3).unbind(2)
            v = qkv[:, :, 2].transpose(1, 2)
            keys, values = layers[i]
            keys[:, :, start:end] = k
            values[:, :, start:end] = v
            if start == 0:
                o = _causal_attention(q, k, v)
            else:
                o = F.scaled_dot_product_attention(q, keys[:, :, :end], values[:, :, :end], attn_mask=mask, scale=1.0)
            x = self._attn_out_ffn(blk, x, o.transpose(1, 2).reshape(b * n, d))
        return _rms(x, self.norm_eps, self.norm_weight).view(b, n, d)

    def _attn_out_ffn(self, blk: _BlockWeights, x: Tensor, o: Tensor) -> Tensor:
        x = _linear(o, blk.out, blk.out_bias, residual=x)
        gate, up = _linear(_rms(x, blk.eps2), blk.w13).chunk(2, dim=-1)
        return _linear(F.silu(gate).mul_(up), blk.w2, residual=x)

    def _decode_step(self, x: Tensor, cache: KVCache) -> Tensor:
        """One new token per row (R, d) at each row's cached position; writes its keys/values."""
        r, d = x.shape
        step = cache.step
        cos_sin = None
        for i, blk in enumerate(self.blocks):
            qkv = _linear(_rms(x, blk.eps1), blk.qkv, blk.qkv_bias).view(r, 3, self.n_heads, self.head_dim)
            if cos_sin is None or not self.shared_rotary:
                cos, sin = blk.rotary.at(step.positions, step.end)  # (R, 1, 1, hd)
                cos_sin = (cos, sin)
            qk = apply_rotary(qkv[:, :2], *cos_sin)  # (R, 2, H, hd)
            keys, values, mask = cache.layers[i].append(qk[:, 1].unsqueeze(2), qkv[:, 2].unsqueeze(2))
            o = attend_one(qk[:, 0].unsqueeze(2), keys, values, mask, prescaled=True).view(r, d)
            x = self._attn_out_ffn(blk, x, o)
        return _rms(x, self.norm_eps, self.norm_weight)

    # --- heads --------------------------------------------------------------------------
    def s1_logits(self, h_last: Tensor) -> Tensor:
        return _linear(h_last, self.head_s1, self.head_s1_bias)

    def dep_keys_values(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """The dependency layer's keys and values (B, 4, L, hd) of the hidden states h (B, L, d)."""
        b, n, d = h.shape
        kv = _linear(h.reshape(b * n, d), self.dep_kv, self.dep_kv_bias)
        kv = kv.view(b, n, 2, self.dep_heads, self.dep_head_dim).permute(2, 0, 3, 1, 4)
        return kv[0], kv[1]

    def step_heads(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """For one new position per row (R, d): its s1 logits (R, V) and dependency key/value
        (R, 4, 1, hd) each, as ``s1_logits`` and ``dep_keys_values`` give them."""
        r, d = h.shape
        out = _linear(h, self.step_heads_weight, self.step_heads_bias)
        kv = out[:, : 2 * d].view(r, 2, self.dep_heads, 1, self.dep_head_dim)
        return out[:, 2 * d :], kv[:, 0], kv[:, 1]

    def s2_logits(self, h_last: Tensor, s1: Tensor, keys: Tensor, values: Tensor, mask: Tensor | None = None) -> Tensor:
        """s2 logits (R, V) at the last position given the chosen s1 (R,), as ``Kronos.s2_logits_last``."""
        r = h_last.shape[0]
        q = self.dep_query[s1].view(r, self.dep_heads, 1, self.dep_head_dim)
        o = attend_one(q, keys, values, mask, prescaled=True).view(r, self.d_model)
        x = _linear(o, self.dep_out, self.dep_out_bias, residual=h_last)
        return _linear(_rms(x, self.dep_norm_eps, self.dep_norm_weight), self.head_s2, self.head_s2_bias)


# One-row products on a multi-core CPU: MKL's matrix-vector kernel keeps one core busy, which
# cannot saturate memory bandwidth. Splitting the inner dimension into chunks and running them as
# one batched product puts a chunk on each core; the partial results are then summed. Measured on
# the 2-core machine for Kronos-small's shapes: 1.5-1.7x the bandwidth of a plain product, for up
# to 64 rows.
_SPLIT_MAX_ROWS = 64
_SPLIT_MIN_CHUNK = 128


def _linear(x: Tensor, w: Tensor, bias: Tensor | None = None, residual: Tensor | None = None) -> Tensor:
    """x (R, K) @ w (K, N) + bias + residual (each optional)."""
    rows, k = x.shape
    split = _cpu_split(x, k) if rows <= _SPLIT_MAX_ROWS else 1
    if split > 1:
        out = torch.bmm(x.view(rows, split, k // split).transpose(0, 1), w.view(split, k // split, -1)).sum(0)
        if bias is not None:
            out += bias
    elif bias is not None:
        out = torch.addmm(bias, x, w)
    else:
        return x @ w if residual is None else torch.addmm(residual, x, w)
    return out if residual is None else out.add_(residual)


def _cpu_split(x: Tensor, k: int) -> int:
    if x.device.type != "cpu":
        return 1
    split = 1
    while split * 2 <= torch.get_num_threads() and k % (split * 2) == 0 and k // (split * 2) >= _SPLIT_MIN_CHUNK:
        split *= 2
    return split


def _rms(x: Tensor, eps: float, weight: Tensor | None = None) -> Tensor:
    return F.rms_norm(x, (x.shape[-1],), weight, eps)


# Causal attention over a long window in query blocks: each block attends to the keys up to its
# end, so about half the work past the diagonal is skipped. On the 2-core CPU this takes 2.9 ms
# instead of 3.6 ms for one layer of a 512-token window (8 heads of 64).
_QUERY_BLOCK = 128


def _causal_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Causal attention of pre-scaled q over k/v, all (B, H, L, hd)."""
    n = q.shape[2]
    if n <= _QUERY_BLOCK or q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0)
    blocks = [
        F.scaled_dot_product_attention(
            q[:, :, :_QUERY_BLOCK], k[:, :, :_QUERY_BLOCK], v[:, :, :_QUERY_BLOCK], is_causal=True, scale=1.0
        )
    ]
    for start in range(_QUERY_BLOCK, n, _QUERY_BLOCK):
        end = min(start + _QUERY_BLOCK, n)
        mask = torch.ones(end - start, end, dtype=torch.bool, device=q.device).tril(diagonal=start)
        blocks.append(
            F.scaled_dot_product_attention(q[:, :, start:end], k[:, :, :end], v[:, :, :end], attn_mask=mask, scale=1.0)
        )
    return torch.cat(blocks, dim=2)
