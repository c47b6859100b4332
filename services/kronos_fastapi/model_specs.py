"""Which models one instance serves: ``KRONOS_MODELS`` (``name=source[@revision][#precision]`` pairs), or
the one model of ``KRONOS_MODEL_PATH``, each with its tokenizer, context length and precision (an entry's
``#fp32`` / ``#bf16`` / ``#int8``, else ``KRONOS_PRECISION``).

A source is a checkpoint folder, ``bundled`` (the shipped kronos-demo) or a hub id (``model/checkpoints/hub.py``).
Without ``KRONOS_TOKENIZER_PATH`` a model's tokenizer is ``<folder>/tokenizer`` or the official pairing;
without ``KRONOS_MAX_CONTEXT`` its context is the official one (Kronos-mini 2048), else 512. The
first model is the default unless ``KRONOS_DEFAULT_MODEL`` names another.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.checkpoints.hub import BUNDLED, default_context, default_tokenizer, is_hub_id
from model.errors import KronosError
from model.nn.precision import PRECISIONS

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class ModelSpec:
    """One served model: its request name, where its checkpoints come from, and its context length."""

    name: str
    source: str
    revision: str | None = None
    tokenizer: str | None = None  # None: the default tokenizer of ``source``
    tokenizer_revision: str | None = None
    max_context: int = 512
    precision: str = "fp32"  # model.nn.precision: fp32 (exact), bf16, int8


def _name_of(source: str) -> str:
    """The name a lone model is served under: its folder's or repository's name."""
    if source == BUNDLED:
        from model.checkpoints.bundled import BUNDLED_NAME

        return BUNDLED_NAME
    return Path(source).expanduser().resolve().name if not is_hub_id(source) else source.rsplit("/", 1)[-1]


def _parse_entry(entry: str) -> tuple[str, str, str | None, str | None]:
    name, sep, source = (part.strip() for part in entry.partition("="))
    source, hashed, precision = (part.strip() for part in source.partition("#"))
    if hashed and precision.lower() not in PRECISIONS:
        raise ValueError(f"KRONOS_MODELS: {entry!r}: the precision after # must be one of {', '.join(PRECISIONS)}")
    if not sep or not name or not source:
        raise ValueError(f"KRONOS_MODELS: {entry!r} is not name=source (e.g. small=NeoQuasar/Kronos-small)")
    if not _NAME.match(name):
        raise ValueError(
            f"KRONOS_MODELS: model name {name!r} must be 1 to 64 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )
    revision = None
    head, at, tail = source.rpartition("@")
    if at and is_hub_id(head):
        source, revision = head, tail.strip() or None
    if source != BUNDLED and not is_hub_id(source) and not Path(source).expanduser().is_dir():
        raise ValueError(f"KRONOS_MODELS: {name}={source}: neither a checkpoint folder, 'bundled' nor a hub id")
    return name, source, revision, precision.lower() if hashed else None


def model_specs(settings: Any) -> tuple[list[ModelSpec], str]:
    """The models of ``settings`` and the default one's name; ValueError names the variable at fault."""
    explicit_context = "max_context" in settings.model_fields_set

    def context(source: str) -> int:
        return settings.max_context if explicit_context else default_context(source)

    if not settings.models:
        source = str(settings.model_path)
        tokenizer = str(settings.tokenizer_path) if settings.tokenizer_path is not None else None
        specs = [
            ModelSpec(
                _name_of(source),
                source,
                settings.model_revision,
                tokenizer,
                settings.tokenizer_revision,
                context(source),
                settings.precision,
            )
        ]
    else:
        specs = []
        for entry in settings.models:
            name, source, revision, precision = _parse_entry(entry)
            if any(spec.name == name for spec in specs):
                raise ValueError(f"KRONOS_MODELS: the name {name!r} is given twice")
            try:
                default_tokenizer(source)
            except KronosError as exc:
                raise ValueError(f"KRONOS_MODELS: {name}: {exc}") from None
            precision = precision or settings.precision
            specs.append(ModelSpec(name, source, revision, None, None, context(source), precision))
    names = [spec.name for spec in specs]
    default = settings.default_model or names[0]
    if default not in names:
        raise ValueError(f"KRONOS_DEFAULT_MODEL: {default!r} is not one of the served models ({', '.join(names)})")
    return specs, default


def default_spec(settings: Any) -> ModelSpec:
    specs, default = model_specs(settings)
    return next(spec for spec in specs if spec.name == default)


def model_contexts(settings: Any) -> dict[str | None, int]:
    """Each served model's max_context by name, and the default model's under None: what a request's
    window slides past (the catalog serves exactly these specs)."""
    specs, default = model_specs(settings)
    contexts: dict[str | None, int] = {spec.name: spec.max_context for spec in specs}
    contexts[None] = contexts[default]
    return contexts
