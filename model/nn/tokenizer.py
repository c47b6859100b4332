"""The Kronos tokenizer: candles (B, L, 6) to binary-spherical-quantized token pairs (s1, s2) and back."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..checkpoints.checkpoint import PretrainedMixin
from .config import TokenizerConfig
from .layers import Block, causal_stack


class _BSQBuffers(nn.Module):
    """Holds the quantizer's bit-weight buffers, stored in checkpoints as ``tokenizer.bsq.*``."""

    def __init__(self, codebook_dim: int, group_size: int):
        super().__init__()
        self.register_buffer("basis", 2 ** torch.arange(codebook_dim, dtype=torch.long))
        self.register_buffer("group_basis", 2 ** torch.arange(group_size, dtype=torch.long))


class _QuantizerBuffers(nn.Module):
    def __init__(self, codebook_dim: int, group_size: int):
        super().__init__()
        self.bsq = _BSQBuffers(codebook_dim, group_size)


class KronosTokenizer(PretrainedMixin, nn.Module):
    config_class = TokenizerConfig
    bundled_subfolder = "tokenizer"  # from_pretrained("bundled") loads the bundled pair's tokenizer

    def __init__(self, config: TokenizerConfig):
        super().__init__()
        self.config = config
        d, dim = config.d_model, config.codebook_dim
        self.embed = nn.Linear(config.d_in, d)
        # The published tokenizer has n - 1 blocks on each side.
        self.encoder = nn.ModuleList(Block(d, config.n_heads, config.ff_dim) for _ in range(config.n_enc_layers - 1))
        self.decoder = nn.ModuleList(Block(d, config.n_heads, config.ff_dim) for _ in range(config.n_dec_layers - 1))
        self.quant_embed = nn.Linear(d, dim)
        self.post_quant_embed_pre = nn.Linear(config.s1_bits, d)  # used in training only
        self.post_quant_embed = nn.Linear(dim, d)
        self.head = nn.Linear(d, config.d_in)
        self.tokenizer = _QuantizerBuffers(dim, config.group_size)

    def bit_weights(self, device: torch.device) -> Tensor:
        # Bit j of each half is worth 2^j.
        return 2 ** torch.arange(self.config.s1_bits, device=device, dtype=torch.long)

    def encode_latent(self, x: Tensor) -> Tensor:
        """The quantizer's input z (B, L, s1_bits + s2_bits), before normalization."""
        return self.quant_embed(causal_stack(self.encoder, self.embed(x)))

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Token ids (s1, s2), each (B, L) int64, of normalized candles x (B, L, 6).

        The causal encoder makes row t depend only on rows 0..t, so right padding is harmless.
        """
        # z / ||z|| keeps every sign, so the bits are read off z directly.
        bits = (self.encode_latent(x) > 0).long()
        weights = self.bit_weights(x.device)
        n = self.config.s1_bits
        return (bits[..., :n] * weights).sum(-1), (bits[..., n:] * weights).sum(-1)

    def ids_to_code(self, s1: Tensor, s2: Tensor) -> Tensor:
        """The ±1/sqrt(dim) code vector (B, L, dim) of token ids."""
        weights = self.bit_weights(s1.device)
        bits = torch.cat(((s1.unsqueeze(-1) & weights) != 0, (s2.unsqueeze(-1) & weights) != 0), dim=-1)
        return (bits.float() * 2 - 1) * (1.0 / self.config.codebook_dim**0.5)

    def decode_code(self, code: Tensor) -> Tensor:
        return self.head(causal_stack(self.decoder, self.post_quant_embed(code)))

    def decode(self, s1: Tensor, s2: Tensor) -> Tensor:
        """Normalized candles (B, L, 6) from token ids (B, L) each."""
        return self.decode_code(self.ids_to_code(s1, s2))
