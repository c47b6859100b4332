"""Typed configs of the two networks, read from and written to an official ``config.json``."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from ..errors import ConfigError

logger = logging.getLogger(__name__)

C = TypeVar("C", bound="_Config")


@dataclass(frozen=True)
class _Config:
    # Fields that must be positive integers; checked by validate().
    _positive_ints: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_dict(cls: type[C], raw: dict[str, Any], source: str = "config") -> C:
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: expected a JSON object, got {type(raw).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        required = {
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        missing = sorted(required - raw.keys())
        if missing:
            raise ConfigError(f"{source}: missing field(s) {', '.join(missing)}")
        unknown = sorted(raw.keys() - names)
        if unknown:
            # The published configs carry extra keys over time; they are not ours to refuse.
            logger.debug("%s: ignoring unknown field(s) %s", source, ", ".join(unknown))
        config = cls(**{k: v for k, v in raw.items() if k in names})
        config.validate(source)
        return config

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self, source: str = "config") -> None:
        for name in self._positive_ints:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{source}: {name} must be a positive integer, got {value!r}")
        for f in dataclasses.fields(self):
            if f.name.endswith("_dropout_p"):
                value = getattr(self, f.name)
                if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                    raise ConfigError(f"{source}: {f.name} must be in [0, 1), got {value!r}")
        if self.s1_bits != self.s2_bits:
            # The published decoder unpacks both halves with the same bit count.
            raise ConfigError(f"{source}: s1_bits ({self.s1_bits}) and s2_bits ({self.s2_bits}) must be equal")
        if self.s1_bits > 20:
            raise ConfigError(f"{source}: s1_bits {self.s1_bits} is too large (vocabulary 2^bits)")
        _check_heads(source, self.d_model, self.n_heads, "n_heads")


def _check_heads(source: str, d_model: int, heads: int, heads_name: str) -> None:
    if d_model % heads:
        raise ConfigError(f"{source}: d_model ({d_model}) must be divisible by {heads_name} ({heads})")
    if (d_model // heads) % 2:
        raise ConfigError(
            f"{source}: head size d_model/{heads_name} = {d_model // heads} must be even for rotary embedding"
        )


@dataclass(frozen=True)
class TokenizerConfig(_Config):
    """Constructor arguments of ``KronosTokenizer`` (one-to-one with its config.json)."""

    _positive_ints: ClassVar[tuple[str, ...]] = (
        "d_in",
        "d_model",
        "n_heads",
        "ff_dim",
        "n_enc_layers",
        "n_dec_layers",
        "s1_bits",
        "s2_bits",
        "group_size",
    )

    d_in: int
    d_model: int
    n_heads: int
    ff_dim: int
    n_enc_layers: int
    n_dec_layers: int
    s1_bits: int
    s2_bits: int
    ffn_dropout_p: float = 0.0
    attn_dropout_p: float = 0.0
    resid_dropout_p: float = 0.0
    beta: float = 0.05
    gamma0: float = 1.0
    gamma: float = 1.1
    zeta: float = 0.05
    group_size: int = 4

    @property
    def codebook_dim(self) -> int:
        return self.s1_bits + self.s2_bits

    def validate(self, source: str = "config") -> None:
        super().validate(source)
        if self.d_in != 6:
            raise ConfigError(f"{source}: d_in must be 6 (open, high, low, close, volume, amount), got {self.d_in}")
        if self.codebook_dim % self.group_size:
            raise ConfigError(
                f"{source}: s1_bits + s2_bits ({self.codebook_dim}) must be divisible by group_size ({self.group_size})"
            )


@dataclass(frozen=True)
class PredictorConfig(_Config):
    """Constructor arguments of ``Kronos`` (one-to-one with its config.json)."""

    _positive_ints: ClassVar[tuple[str, ...]] = ("s1_bits", "s2_bits", "n_layers", "d_model", "n_heads", "ff_dim")

    s1_bits: int
    s2_bits: int
    n_layers: int
    d_model: int
    n_heads: int
    ff_dim: int
    ffn_dropout_p: float = 0.0
    attn_dropout_p: float = 0.0
    resid_dropout_p: float = 0.0
    token_dropout_p: float = 0.0
    learn_te: bool = True

    # The dependency layer always uses four heads, whatever n_heads says.
    DEP_HEADS: ClassVar[int] = 4

    def validate(self, source: str = "config") -> None:
        super().validate(source)
        if not isinstance(self.learn_te, bool):
            raise ConfigError(f"{source}: learn_te must be true or false, got {self.learn_te!r}")
        _check_heads(source, self.d_model, self.DEP_HEADS, "the dependency layer's 4 heads")
