"""The training maths of both stages, on the existing networks' layers and parameters.

Tokenizer: binary spherical quantization with a straight-through estimator, its commitment and
entropy losses (per-sample entropy down, per-group codebook entropy up), and reconstruction of
the candles from the coarse code (s1 bits only, through ``post_quant_embed_pre``) and from the
full code. Predictor: cross-entropy on s1 and on s2, with s2 conditioned on the true s1 (teacher
forcing) through the dependency layer, made causal so that no position sees a later one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..nn.layers import causal_stack
from ..nn.predictor import Kronos
from ..nn.tokenizer import KronosTokenizer

_LOG_EPS = 1e-8


def _masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of values (B, L) over the rows where mask (B, L) is true (all rows without a mask)."""
    if mask is None:
        return values.mean()
    return values[mask].mean()


def _entropy(probs: Tensor) -> Tensor:
    return -(probs * torch.log(probs + _LOG_EPS)).sum(dim=-1)


def _group_codebook(group_size: int, dim: int, device: torch.device) -> Tensor:
    """All 2^group_size sign patterns of one group, scaled like the code (±1/sqrt(dim))."""
    codes = torch.arange(2**group_size, device=device)
    bits = (codes.unsqueeze(-1) >> torch.arange(group_size, device=device)) & 1
    return (bits.float() * 2 - 1) / dim**0.5


@dataclass
class QuantizerLosses:
    commit: Tensor
    sample_entropy: Tensor  # mean per-position entropy of the bits (pushed down: confident bits)
    codebook_entropy: Tensor  # entropy of the average group-code usage (pushed up: all codes used)
    total: Tensor


def bsq_quantize(z: Tensor, tokenizer: KronosTokenizer, mask: Tensor | None = None) -> tuple[Tensor, QuantizerLosses]:
    """Quantize the latent z (B, L, dim): the ±1/sqrt(dim) code with straight-through gradients, and the losses.

    The code's signs are those of z, so its ids are exactly ``tokenizer.encode``'s.
    """
    cfg = tokenizer.config
    dim = cfg.codebook_dim
    z = F.normalize(z, dim=-1)
    signs = torch.where(z > 0, 1.0, -1.0).to(z.dtype)
    code = (z + (signs - z).detach()) / dim**0.5
    rows, code_rows = (z, code) if mask is None else (z[mask], code[mask])
    commit = cfg.beta * (code_rows.detach() - rows).pow(2).sum(-1).mean()
    # Probability that each bit is negative, under a soft assignment to the two nearest code values.
    p = torch.sigmoid(-4 * rows / dim**0.5)
    sample_entropy = _entropy(torch.stack((p, 1 - p), dim=-1)).sum(-1).mean()
    # Codebook usage is approximated per group of group_size bits (2^group_size codes each).
    groups = rows.reshape(*rows.shape[:-1], dim // cfg.group_size, cfg.group_size)
    book = _group_codebook(cfg.group_size, dim, z.device)
    probs = (2 * torch.einsum("...gc,dc->...gd", groups, book)).softmax(dim=-1)
    codebook_entropy = _entropy(probs.reshape(-1, *probs.shape[-2:]).mean(0)).sum()
    entropy_penalty = cfg.gamma0 * sample_entropy - cfg.gamma * codebook_entropy
    total = commit + cfg.zeta * entropy_penalty
    return code, QuantizerLosses(commit, sample_entropy, codebook_entropy, total)


@dataclass
class TokenizerLosses:
    recon_coarse: Tensor  # MSE of the reconstruction from the s1 bits alone
    recon_full: Tensor  # MSE of the reconstruction from s1 and s2 bits
    quantizer: QuantizerLosses
    total: Tensor


def tokenizer_losses(tokenizer: KronosTokenizer, x: Tensor, mask: Tensor | None = None) -> TokenizerLosses:
    """The tokenizer's training loss on normalized candles x (B, L, 6); rows outside mask don't count."""
    code, quantizer = bsq_quantize(tokenizer.encode_latent(x), tokenizer, mask)
    coarse_code = code[..., : tokenizer.config.s1_bits]
    coarse = tokenizer.head(causal_stack(tokenizer.decoder, tokenizer.post_quant_embed_pre(coarse_code)))
    full = tokenizer.decode_code(code)
    recon_coarse = _masked_mean((coarse - x).pow(2).mean(-1), mask)
    recon_full = _masked_mean((full - x).pow(2).mean(-1), mask)
    total = (recon_coarse + recon_full + quantizer.total) / 2
    return TokenizerLosses(recon_coarse, recon_full, quantizer, total)


def teacher_forced_logits(
    model: Kronos, s1: Tensor, s2: Tensor, stamps: Tensor, s1_next: Tensor
) -> tuple[Tensor, Tensor]:
    """s1 and s2 logits (B, L, V) at every position; s2 is conditioned on the true next s1.

    Unlike ``Kronos.decode_s2`` (which serves inference, where only the last position is used),
    the dependency layer's attention is causal here: query t may only see h_0..h_t, since h_{t+1}
    already embeds the very token that position t is asked to predict.
    """
    s1_logits, h = model.decode_s1(s1, s2, stamps)
    attn = model.dep_layer.cross_attn
    keys, values = attn.keys_values(h)
    length = s1.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=s1.device).tril()
    out = attn(model.embedding.emb_s1(s1_next), keys, values, causal)
    s2_logits = model.head.proj_s2(model.dep_layer.norm(h + out))
    return s1_logits, s2_logits


@dataclass
class PredictorLosses:
    s1: Tensor
    s2: Tensor
    total: Tensor


def predictor_losses(
    model: Kronos, s1: Tensor, s2: Tensor, stamps: Tensor, mask: Tensor | None = None
) -> PredictorLosses:
    """Next-token cross-entropy on a window of tokens (B, L) with their time features (B, L, 5).

    Position t (fed token t and its timestamp) predicts token t + 1; a target counts where mask
    (B, L) is true at t + 1.
    """
    s1_logits, s2_logits = teacher_forced_logits(model, s1[:, :-1], s2[:, :-1], stamps[:, :-1], s1[:, 1:])
    target_mask = None if mask is None else mask[:, 1:]
    ce_s1 = F.cross_entropy(s1_logits.transpose(1, 2), s1[:, 1:], reduction="none")
    ce_s2 = F.cross_entropy(s2_logits.transpose(1, 2), s2[:, 1:], reduction="none")
    loss_s1, loss_s2 = _masked_mean(ce_s1, target_mask), _masked_mean(ce_s2, target_mask)
    return PredictorLosses(loss_s1, loss_s2, (loss_s1 + loss_s2) / 2)
