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
order), which the tests bound and which leaves sampled ids unchanged. The products run on the
kernels of ``kernels.py``, which give a row the same bits whatever rows share its call; attention
over the key/value cache reads key widths rounded up to ``kv_cache.KEY_ALIGN`` for the same reason.

``precision`` ("fp32", "bf16", "int8"; see ``precision.py``) picks the dtype of the prepared weights,
the activations and the cache; fp32 is the exact default.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .attention import attend_cached, block_end, causal_blocks, f32, padded_columns
from .kernels import Product
from .kv_cache import KVCache
from .layers import RotaryEmbedding, apply_rotary
from .precision import DEFAULT_PRECISION, compute_dtype


@dataclass
class _BlockWeights:
    qkv: Product  # (d, 3d) with bias: norm1 folded in, q part scaled by 1/sqrt(head_dim)
    out: Product  # (d, d) with bias
    w13: Product  # (d, 2 ff): norm2 folded in
    w2: Product  # (ff, d)
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

    def __init__(self, model, precision: str = DEFAULT_PRECISION):
        cfg = model.config
        self.precision = precision
        self.dtype = dtype = compute_dtype(precision)
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
            self.norm_weight = model.norm.weight.detach().to(dtype)
            self.norm_eps = model.norm.eps

            emb = model.embedding
            d = cfg.d_model
            fusion = emb.fusion_proj.weight.detach()
            token_s1 = (emb.emb_s1.weight.detach() * emb.scale) @ fusion[:, :d].t() + emb.fusion_proj.bias.detach()
            self.token_s1 = token_s1.to(dtype)
            self.token_s2 = ((emb.emb_s2.weight.detach() * emb.scale) @ fusion[:, d:].t()).to(dtype)
            self.time_emb = model.time_emb

            dep = model.dep_layer.cross_attn
            self.dep_heads = dep.n_heads
            self.dep_head_dim = dep.head_dim
            dep_scale = dep.head_dim**-0.5
            self.dep_query = (F.linear(emb.emb_s1.weight.detach(), dep.q_proj.weight, dep.q_proj.bias) * dep_scale).to(
                dtype
            )
            self.dep_out = Product(_input_major(dep.out_proj.weight), dep.out_proj.bias, precision)
            self.dep_norm_weight = model.dep_layer.norm.weight.detach().to(dtype)
            self.dep_norm_eps = model.dep_layer.norm.eps

            # A decode step's new hidden state feeds both the dependency keys/values and the s1
            # head: one product over both weights reads them in one pass. Prefills (all positions'
            # keys/values) and the s1 logits of a prefill's last position have products of their own.
            dep_kv = torch.cat((_input_major(dep.k_proj.weight), _input_major(dep.v_proj.weight)), dim=1)
            dep_kv_bias = torch.cat((dep.k_proj.bias, dep.v_proj.bias)).detach()
            head_s1, head_s1_bias = _input_major(model.head.proj_s1.weight), model.head.proj_s1.bias.detach()
            self.step_heads_product = Product(
                torch.cat((dep_kv, head_s1), dim=1), torch.cat((dep_kv_bias, head_s1_bias)), precision
            )
            self.dep_kv = Product(dep_kv, dep_kv_bias, precision)
            self.head_s1 = Product(head_s1, head_s1_bias, precision)
            self.head_s2 = Product(_input_major(model.head.proj_s2.weight), model.head.proj_s2.bias, precision)

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
        p = self.precision
        return _BlockWeights(
            qkv=Product(qkv, qkv_bias, p),
            out=Product(_input_major(attn.out_proj.weight), attn.out_proj.bias, p),
            w13=Product(w13, None, p),
            w2=Product(_input_major(ffn.w2.weight), None, p),
            rotary=attn.rotary,
            eps1=block.norm1.eps,
            eps2=block.norm2.eps,
        )

    @staticmethod
    def of(model, precision: str = DEFAULT_PRECISION) -> InferenceWeights:
        """The model's prepared weights in ``precision``, rebuilt when any parameter or buffer was
        replaced, moved or changed in place (its pointer, device or version differs)."""
        key = _state_key((*model.parameters(), *model.buffers()))
        prepared = getattr(model, "_inference_weights", None)
        if prepared is None or prepared[0] != key:
            # Not a registered module attribute: it is derived state, never saved or moved.
            prepared = (key, {})
            object.__setattr__(model, "_inference_weights", prepared)
        if precision not in prepared[1]:
            prepared[1][precision] = InferenceWeights(model, precision)
        return prepared[1][precision]

    # --- embedding ----------------------------------------------------------------------
    def embed(self, s1: Tensor, s2: Tensor, stamp: Tensor) -> Tensor:
        return self.token_s1[s1] + self.token_s2[s2] + self.time_emb(stamp).to(self.dtype)

    # --- trunk --------------------------------------------------------------------------
    def trunk(self, x: Tensor, cache: KVCache | None = None) -> Tensor:
        """The blocks and the final norm over x (B, L, d), as ``Kronos.trunk``: positions 0..L-1,
        or with a cache and L == 1 (a decode step), each row's cached length."""
        b, n, d = x.shape
        if cache is not None and n == 1:
            return self._decode_step(x[:, 0], cache).unsqueeze(1)
        x = x.reshape(b * n, d)
        for i, blk in enumerate(self.blocks):
            qkv = blk.qkv(_rms(x, blk.eps1), bulk=True).view(b, n, 3, self.n_heads, self.head_dim)
            cos, sin = self._rotary(blk.rotary.first(n))
            q, k = apply_rotary(qkv[:, :, :2], cos[:, None, None], sin[:, None, None]).transpose(1, 3).unbind(2)
            v = qkv[:, :, 2].transpose(1, 2)
            if cache is not None:
                cache.layers[i].prefill(k, v)
            k, v = f32(k), f32(v)  # attention runs in float32 (attention.py)
            o = causal_blocks(q, padded_columns(k, block_end(n)), padded_columns(v, block_end(n)), 0)
            x = self._attn_out_ffn(blk, x, o.transpose(1, 2).reshape(b * n, d), bulk=True)
        return _rms(x, self.norm_eps, self.norm_weight).view(b, n, d)

    def prefill_chunk(self, x: Tensor, layers: list[tuple[Tensor, Tensor]], start: int) -> Tensor:
        """The blocks and the final norm over x (B, C, d) at window positions start..start+C-1, for
        rows whose positions 0..start-1 already have keys/values in ``layers`` (per block, tensors
        (B, H, width, hd)); the chunk's own keys/values are written there. With start 0 this is the
        arithmetic of ``trunk(x, cache)``; a later chunk attends over the cached columns too."""
        b, n, d = x.shape
        end = start + n
        x = x.reshape(b * n, d)
        for i, blk in enumerate(self.blocks):
            qkv = blk.qkv(_rms(x, blk.eps1), bulk=True).view(b, n, 3, self.n_heads, self.head_dim)
            cos, sin = self._rotary(blk.rotary.first(end))
            cos, sin = cos[start:], sin[start:]
            q, k = apply_rotary(qkv[:, :, :2], cos[:, None, None], sin[:, None, None]).transpose(1, 3).unbind(2)
            v = qkv[:, :, 2].transpose(1, 2)
            keys, values = layers[i]
            keys[:, :, start:end] = k
            values[:, :, start:end] = v
            o = causal_blocks(q, keys, values, start)
            x = self._attn_out_ffn(blk, x, o.transpose(1, 2).reshape(b * n, d), bulk=True)
        return _rms(x, self.norm_eps, self.norm_weight).view(b, n, d)

    def _attn_out_ffn(self, blk: _BlockWeights, x: Tensor, o: Tensor, bulk: bool = False) -> Tensor:
        x = blk.out(o, residual=x, bulk=bulk)
        gate, up = blk.w13(_rms(x, blk.eps2), bulk=bulk).chunk(2, dim=-1)
        return blk.w2(F.silu(gate).mul_(up), residual=x, bulk=bulk)

    def _rotary(self, cos_sin: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        cos, sin = cos_sin
        return (cos, sin) if cos.dtype == self.dtype else (cos.to(self.dtype), sin.to(self.dtype))

    def _decode_step(self, x: Tensor, cache: KVCache) -> Tensor:
        """One new token per row (R, d) at each row's cached position; writes its keys/values."""
        r, d = x.shape
        step = cache.step
        cos_sin = None
        for i, blk in enumerate(self.blocks):
            qkv = blk.qkv(_rms(x, blk.eps1)).view(r, 3, self.n_heads, self.head_dim)
            if cos_sin is None or not self.shared_rotary:
                cos, sin = self._rotary(blk.rotary.at(step.positions, step.end))  # (R, 1, 1, hd)
                half = sin.shape[-1] // 2
                # rotate_half(x) * sin == roll(x, half) * (sin with its first half negated), bit for bit
                cos_sin = (cos, torch.cat((-sin[..., :half], sin[..., half:]), dim=-1), half)
            cos, signed_sin, half = cos_sin
            qk = qkv[:, :2]
            qk = qk * cos + qk.roll(half, dims=-1) * signed_sin  # apply_rotary, in fewer ops (R, 2, H, hd)
            keys, values, mask = cache.layers[i].append(qk[:, 1].unsqueeze(2), qkv[:, 2].unsqueeze(2))
            o = attend_cached(qk[:, 0].unsqueeze(2), keys, values, mask).view(r, d)
            x = self._attn_out_ffn(blk, x, o)
        return _rms(x, self.norm_eps, self.norm_weight)

    # --- heads --------------------------------------------------------------------------
    def s1_logits(self, h_last: Tensor) -> Tensor:
        return self.head_s1(h_last)

    def dep_keys_values(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """The dependency layer's keys and values (B, 4, L, hd) of the hidden states h (B, L, d)."""
        b, n, d = h.shape
        kv = f32(self.dep_kv(h.reshape(b * n, d), bulk=True))  # attention runs in float32 (attention.py)
        kv = kv.view(b, n, 2, self.dep_heads, self.dep_head_dim).permute(2, 0, 3, 1, 4)
        return kv[0], kv[1]

    def step_heads(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """For one new position per row (R, d): its s1 logits (R, V) and dependency key/value
        (R, 4, 1, hd) each, as ``s1_logits`` and ``dep_keys_values`` give them."""
        r, d = h.shape
        out = self.step_heads_product(h)
        kv = f32(out[:, : 2 * d]).view(r, 2, self.dep_heads, 1, self.dep_head_dim)
        return out[:, 2 * d :], kv[:, 0], kv[:, 1]

    def s2_logits(self, h_last: Tensor, s1: Tensor, keys: Tensor, values: Tensor, mask: Tensor | None = None) -> Tensor:
        """s2 logits (R, V) at the last position given the chosen s1 (R,), as ``Kronos.s2_logits_last``."""
        r = h_last.shape[0]
        q = self.dep_query[s1].view(r, self.dep_heads, 1, self.dep_head_dim)
        o = attend_cached(q, keys, values, mask).view(r, self.d_model)
        x = self.dep_out(o, residual=h_last)
        return self.head_s2(_rms(x, self.dep_norm_eps, self.dep_norm_weight))


def _rms(x: Tensor, eps: float, weight: Tensor | None = None) -> Tensor:
    return F.rms_norm(x, (x.shape[-1],), weight, eps)
