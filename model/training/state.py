"""A training stage's resumable state: weights, optimizer state, step, settings and log.

Everything is written as safetensors or JSON; nothing is pickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ..checkpoints.checkpoint import load_tensors_into, read_tensors
from ..errors import KronosError


class ResumeError(KronosError):
    """Saved training state that cannot be continued with the settings given."""


def _save_optimizer(optimizer: torch.optim.Optimizer, folder: Path) -> None:
    """Optimizer state as safetensors (its tensors) + JSON (the rest): no pickle anywhere."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entry in state["state"].items():
        for name, value in entry.items():
            key = f"{index}.{name}"
            if isinstance(value, Tensor):
                tensors[key] = value.detach().to("cpu").contiguous()
            else:
                scalars[key] = value
    save_file(tensors, str(folder / "optimizer.safetensors"))
    meta = {"param_groups": state["param_groups"], "scalars": scalars}
    (folder / "optimizer.json").write_text(json.dumps(meta))


def _load_optimizer(optimizer: torch.optim.Optimizer, folder: Path) -> None:
    meta = json.loads((folder / "optimizer.json").read_text())
    state: dict[int, dict[str, Any]] = {}
    entries = [*load_file(str(folder / "optimizer.safetensors")).items(), *meta["scalars"].items()]
    for key, value in entries:
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


class StageState:
    """A stage's resumable state: weights (safetensors), optimizer state, step, settings and log."""

    def __init__(self, folder: Path, record: dict[str, Any]):
        self.folder, self.record = folder, record

    def load(self, module: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[int, list[dict], list[dict]]:
        progress_file = self.folder / "progress.json"
        if not progress_file.is_file():
            return 0, [], []
        progress = json.loads(progress_file.read_text())
        if progress["settings"] != self.record:
            changed = sorted(k for k in self.record if progress["settings"].get(k) != self.record[k])
            raise ResumeError(
                f"{self.folder}: cannot resume: settings differ from the interrupted run ({', '.join(changed)})"
            )
        load_tensors_into(module, read_tensors(self.folder), str(self.folder))
        _load_optimizer(optimizer, self.folder)
        return int(progress["step"]), progress["log"], progress["validation"]

    def save(self, module, optimizer, step: int, log: list[dict], validation: list[dict]) -> None:
        module.save_pretrained(self.folder)
        _save_optimizer(optimizer, self.folder)
        progress = {"step": step, "settings": self.record, "log": log, "validation": validation}
        tmp = self.folder / "progress.json.tmp"
        tmp.write_text(json.dumps(progress))
        tmp.replace(self.folder / "progress.json")
