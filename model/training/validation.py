"""Validation of a training stage: the held-out windows, their losses (tokenizer reconstruction, predictor
cross-entropy) and early stopping on them, which keeps the best weights (also on disk, for ``--resume``)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..nn.predictor import Kronos
from ..nn.tokenizer import KronosTokenizer
from .data import CandleSeries, WindowBatch, heldout_windows
from .losses import predictor_losses, tokenizer_losses

_VAL_BATCH = 16  # validation windows of one length per forward pass


@torch.no_grad()
def tokenizer_validation(tokenizer: KronosTokenizer, windows: Sequence[WindowBatch], device) -> dict[str, float]:
    """Held-out reconstruction MSE (normalized units) from the coarse and the full code, row-weighted."""
    tokenizer.eval()
    sums, rows = {"recon_coarse": 0.0, "recon_full": 0.0}, 0
    for w in windows:
        w = w.to(device)
        losses = tokenizer_losses(tokenizer, w.candles, w.loss_mask)
        n = int(w.loss_mask.sum())
        sums["recon_coarse"] += float(losses.recon_coarse) * n
        sums["recon_full"] += float(losses.recon_full) * n
        rows += n
    return {k: v / max(rows, 1) for k, v in sums.items()}


@torch.no_grad()
def encode_batch(tokenizer: KronosTokenizer, batch: WindowBatch) -> tuple[Tensor, Tensor]:
    return tokenizer.encode(batch.candles)


@torch.no_grad()
def predictor_validation(
    model: Kronos, tokenizer: KronosTokenizer, windows: Sequence[WindowBatch], device
) -> dict[str, float]:
    """Held-out next-token cross-entropy of s1 and s2, target-weighted."""
    model.eval()
    sums, count = {"ce_s1": 0.0, "ce_s2": 0.0}, 0
    for w in windows:
        w = w.to(device)
        s1, s2 = encode_batch(tokenizer, w)
        losses = predictor_losses(model, s1, s2, w.stamps, w.loss_mask)
        n = int(w.loss_mask[:, 1:].sum())
        sums["ce_s1"] += float(losses.s1) * n
        sums["ce_s2"] += float(losses.s2) * n
        count += n
    return {k: v / max(count, 1) for k, v in sums.items()}


def validation_windows(
    series: Sequence[CandleSeries], *, val_fraction: float, max_window: int, horizon: int, clip: float, limit: int
) -> list[WindowBatch]:
    """The validation windows (at most ``limit`` when set, evenly spread), those of one length batched together."""
    context = max_window - horizon
    windows = heldout_windows(series, val_fraction, context, horizon, clip)
    if limit and len(windows) > limit:
        picks = np.linspace(0, len(windows) - 1, limit).round().astype(int)
        windows = [windows[i] for i in sorted(set(picks.tolist()))]
    by_length: dict[int, list[WindowBatch]] = {}
    for w in windows:
        by_length.setdefault(w.candles.shape[1], []).append(w)
    batches = []
    for group in by_length.values():
        for i in range(0, len(group), _VAL_BATCH):
            part = group[i : i + _VAL_BATCH]
            batches.append(
                WindowBatch(
                    torch.cat([w.candles for w in part]),
                    torch.cat([w.stamps for w in part]),
                    torch.cat([w.loss_mask for w in part]),
                )
            )
    return batches


def validation_score(entry: dict[str, float]) -> float:
    """One validation number: the mean of a validation entry's losses."""
    values = [v for k, v in entry.items() if k != "step"]
    return sum(values) / len(values)


class EarlyStopping:
    """Keeps the weights of the best validation so far (also on disk, for --resume) and says when to stop."""

    def __init__(self, patience: int, folder: Path):
        self.patience, self.folder = patience, folder
        self.best_score: float | None = None
        self.best_step: int | None = None
        self.best_entry: dict[str, float] | None = None
        self.best_state: dict[str, Tensor] | None = None
        self.waited = 0
        self.stopped = False

    @property
    def enabled(self) -> bool:
        return self.patience > 0

    def update(self, entry: dict[str, float], module: nn.Module, save: bool = True) -> None:
        if not self.enabled:
            return
        score = validation_score(entry)
        if self.best_score is None or score < self.best_score:
            self.best_score, self.best_step, self.best_entry, self.waited = score, int(entry["step"]), entry, 0
            if module is not None:
                self.best_state = copy.deepcopy(module.state_dict())
                if save:
                    module.save_pretrained(self.folder)
        else:
            self.waited += 1
            self.stopped = self.waited >= self.patience

    def replay(self, validation: list[dict[str, float]], module: nn.Module) -> None:
        """After a resume: the same best step and patience count as the interrupted run, best weights from disk."""
        if not self.enabled or not validation:
            return
        for entry in validation:
            self.update(entry, None)
        if (self.folder / "model.safetensors").is_file():
            from ..checkpoints.checkpoint import load_tensors_into, read_tensors

            best = copy.deepcopy(module)
            load_tensors_into(best, read_tensors(self.folder), str(self.folder))
            self.best_state = best.state_dict()

    def restore(self, module: nn.Module) -> None:
        if self.enabled and self.best_state is not None:
            module.load_state_dict(self.best_state)

    def note(self) -> str:
        if not self.enabled:
            return ""
        return f" (best {self.best_score:.4f} at step {self.best_step}, {self.waited}/{self.patience} without)"
