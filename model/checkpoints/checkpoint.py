"""Reading and writing checkpoint folders (config.json + model.safetensors) — safetensors only, never pickle."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import CheckpointError, ConfigError
from .hub import CONFIG_FILE, WEIGHTS_FILE

_MAX_NAMES = 8

M = TypeVar("M", bound="PretrainedMixin")


def _folder(path: str | os.PathLike) -> Path:
    folder = Path(path).expanduser()
    if not folder.exists():
        raise CheckpointError(f"checkpoint folder {folder} does not exist")
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint path {folder} is not a folder")
    return folder


def read_config(folder: str | os.PathLike, config_class: type) -> Any:
    path = _folder(folder) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from None
    try:
        return config_class.from_dict(raw, source=str(path))
    except TypeError as exc:  # e.g. a field of the wrong JSON type reaching the dataclass
        raise ConfigError(f"{path}: {exc}") from None


def read_tensors(folder: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = _folder(folder) / WEIGHTS_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from None


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_NAMES])
    return shown + (f" and {len(names) - _MAX_NAMES} more" if len(names) > _MAX_NAMES else "")


def load_tensors_into(module: nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Strictly load tensors into module; refuse missing, unexpected or mis-shaped ones by name."""
    expected = module.state_dict()
    problems = []
    missing = sorted(expected.keys() - tensors.keys())
    unexpected = sorted(tensors.keys() - expected.keys())
    if missing:
        problems.append(f"missing tensors: {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors: {_names(unexpected)}")
    misshaped = [
        f"{k} {tuple(tensors[k].shape)} (config wants {tuple(v.shape)})"
        for k, v in expected.items()
        if k in tensors and tensors[k].shape != v.shape
    ]
    if misshaped:
        problems.append(f"mis-shaped tensors: {_names(misshaped)}")
    wrong_kind = [
        f"{k} ({tensors[k].dtype}, wants {v.dtype})"
        for k, v in expected.items()
        if k in tensors and tensors[k].is_floating_point() != v.is_floating_point()
    ]
    if wrong_kind:
        problems.append(f"tensors of the wrong kind: {_names(wrong_kind)}")
    if problems:
        raise CheckpointError(f"{source}: " + "; ".join(problems))
    cast = {k: t.to(expected[k].dtype) for k, t in tensors.items()}
    module.load_state_dict(cast, strict=True)


class PretrainedMixin:
    """``from_pretrained`` (a checkpoint folder, ``bundled`` or a hub id) / ``save_pretrained`` (a folder)."""

    config_class: type
    # Where this class's half of the bundled pair lives inside the bundled folder ("" = the folder itself).
    bundled_subfolder: str = ""

    @classmethod
    def from_pretrained(
        cls: type[M],
        source: str | os.PathLike,
        device: str | torch.device | None = None,
        *,
        revision: str | None = None,
    ) -> M:
        """Load ``source``: a folder, ``bundled``, or an ``org/name`` hub id (``revision``: a commit, branch
        or tag) fetched with huggingface_hub. ``model.checkpoint`` tells where it came from."""
        from .bundled import bundled_model_path
        from .hub import BUNDLED, resolve_checkpoint

        if str(source) == BUNDLED and cls.bundled_subfolder:
            source = bundled_model_path() / cls.bundled_subfolder
        checkpoint = resolve_checkpoint(source, revision)
        folder = checkpoint.folder
        config = read_config(folder, cls.config_class)
        model = cls(config)
        source = checkpoint.source if checkpoint.from_hub else folder / WEIGHTS_FILE
        load_tensors_into(model, read_tensors(folder), str(source))
        model.checkpoint = checkpoint
        model.eval()
        if device is not None:
            from ..devices import resolve_device

            model.to(resolve_device(device))
        return model

    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        (path / CONFIG_FILE).write_text(json.dumps(self.config.to_dict(), indent=2, sort_keys=True) + "\n")
        tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in self.state_dict().items()}
        save_file(tensors, str(path / WEIGHTS_FILE))
        # safetensors creates the file 0600; a model is read by other users (a container's non-root
        # user, from a mounted folder), so it gets a config's ordinary 0644.
        os.chmod(path / WEIGHTS_FILE, 0o644)
        return path
