"""The two training stages (tokenizer, then predictor on the frozen tokenizer's tokens) and the run around them.

A run writes the service's checkpoint layout: the predictor in ``out`` and the tokenizer in
``out/tokenizer``, each as config.json + model.safetensors. Batches and learning rates are pure
functions of (seed, step), and a stage saves its weights and optimizer state every
``save_every`` steps, so an interrupted run resumed with ``resume=True`` ends with the same
weights as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..devices import resolve_device
from ..errors import ConfigError
from ..nn.config import PredictorConfig, TokenizerConfig
from ..nn.predictor import Kronos
from ..nn.tokenizer import KronosTokenizer
from .data import CandleSeries, WindowBatch, WindowSampler
from .losses import predictor_losses, tokenizer_losses
from .settings import STAGES, StageResult, StageSettings, TrainSettings
from .state import StageState
from .validation import EarlyStopping, encode_batch, predictor_validation, tokenizer_validation, validation_windows

# --- initialization -------------------------------------------------------------------------


def init_predictor_weights(model: Kronos) -> None:
    """The published model's initialization: Xavier-normal linears with zero bias, embeddings N(0, d^-1/2).

    PyTorch's default N(0, 1) embeddings, scaled by sqrt(d_model) in the input, start far too large.
    Fixed (sinusoid) time tables are left alone.
    """
    std = model.config.d_model**-0.5
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.xavier_normal_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding) and module.weight.requires_grad:
            nn.init.normal_(module.weight, mean=0.0, std=std)


def new_pair(
    predictor_config: PredictorConfig, tokenizer_config: TokenizerConfig, seed: int
) -> tuple[Kronos, KronosTokenizer]:
    """A fresh (untrained) predictor and tokenizer, reproducible from the seed."""
    if predictor_config.s1_bits != tokenizer_config.s1_bits or predictor_config.s2_bits != tokenizer_config.s2_bits:
        raise ConfigError("predictor and tokenizer configs must use the same s1_bits/s2_bits")
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        tokenizer = KronosTokenizer(tokenizer_config)
        model = Kronos(predictor_config)
        init_predictor_weights(model)
    finally:
        torch.random.set_rng_state(generator_state)
    return model, tokenizer


# --- one stage ------------------------------------------------------------------------------


def _progress(total: int, initial: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, dynamic_ncols=True, leave=True)


def _mean_parts(log: list[dict[str, float]]) -> dict[str, float]:
    keys = [k for k in log[0] if k not in ("step", "lr")]
    return {k: sum(entry[k] for entry in log) / len(log) for k in keys}


def run_stage(
    stage: str,
    module: nn.Module,
    loss_fn: Callable[[WindowBatch], dict[str, Tensor]],
    val_fn: Callable[[], dict[str, float]],
    sampler: WindowSampler,
    stage_settings: StageSettings,
    settings: TrainSettings,
    device: torch.device,
    state_dir: Path,
    resume: bool,
    progress: bool,
) -> StageResult:
    """Optimize ``module`` on ``loss_fn`` (its "total" entry) for stage_settings.steps steps."""
    state = StageState(state_dir / stage, settings.stage_record(stage))
    decay = [p for n, p in module.named_parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for n, p in module.named_parameters() if p.requires_grad and p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": stage_settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=stage_settings.lr,
        betas=(0.9, 0.95),
    )
    start, log, validation = state.load(module, optimizer) if resume else (0, [], [])
    early = EarlyStopping(settings.patience if settings.eval_every else 0, state.folder / "best")
    early.replay(validation, module)
    began = time.perf_counter()
    module.train()
    bar = _progress(stage_settings.steps, start, stage, progress)
    smoothed = None
    for step in range(start if not early.stopped else stage_settings.steps, stage_settings.steps):
        lr = stage_settings.lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = sampler.batch(step, stage_settings.batch_size, stage_settings.batch_tokens).to(device)
        parts = loss_fn(batch)
        optimizer.zero_grad(set_to_none=True)
        parts["total"].backward()
        nn.utils.clip_grad_norm_(module.parameters(), stage_settings.grad_clip)
        optimizer.step()
        entry = {"step": step, "lr": lr, **{k: float(v.detach()) for k, v in parts.items()}}
        if not math.isfinite(entry["total"]):
            raise FloatingPointError(f"{stage}: loss is {entry['total']} at step {step}; lower the learning rate")
        log.append(entry)
        smoothed = entry["total"] if smoothed is None else 0.95 * smoothed + 0.05 * entry["total"]
        bar.update(1)
        postfix = {"loss": f"{entry['total']:.4f}", "avg": f"{smoothed:.4f}", "lr": f"{lr:.2e}"}
        if early.best_score is not None:
            postfix["val"] = f"{early.best_score:.4f}"
        bar.set_postfix(postfix)
        done = step + 1
        if settings.eval_every and done % settings.eval_every == 0 and done < stage_settings.steps:
            validation.append({"step": done, **val_fn()})
            module.train()
            early.update(validation[-1], module)
            bar.write(f"{stage} step {done}: " + _format(validation[-1]) + early.note())
        if early.stopped or done % settings.save_every == 0 or done == stage_settings.steps:
            state.save(module, optimizer, done, log, validation)
        if early.stopped:
            break
    bar.close()
    last_step = log[-1]["step"] + 1 if log else start
    if not early.stopped and (not validation or validation[-1]["step"] != last_step):
        validation.append({"step": last_step, **val_fn()})
        early.update(validation[-1], module)
    early.restore(module)
    module.eval()
    if progress:
        kept = f" (kept step {early.best_step})" if early.enabled else ""
        print(f"{stage}: validation {_format(early.best_entry or validation[-1])}{kept}", flush=True)
    tenth = max(len(log) // 10, 1)
    return StageResult(
        stage,
        last_step,
        time.perf_counter() - began,
        _mean_parts(log[:tenth]) if log else {},
        _mean_parts(log[-tenth:]) if log else {},
        validation,
        early.best_step if early.enabled else None,
    )


def _format(entry: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in entry.items() if k != "step")


# --- the two stages -------------------------------------------------------------------------


def train_tokenizer(
    tokenizer: KronosTokenizer,
    series: Sequence[CandleSeries],
    settings: TrainSettings,
    device: str | torch.device = "cpu",
    state_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = False,
) -> StageResult:
    """Stage 1: reconstruction (coarse and full code) plus the quantizer's losses."""
    device = resolve_device(device)
    tokenizer.to(device)
    sampler = _sampler(series, settings, stage_offset=0)
    windows = validation_windows(
        series,
        val_fraction=settings.val_fraction,
        max_window=settings.max_window,
        horizon=settings.horizon,
        clip=settings.clip,
        limit=settings.val_windows,
    )

    def loss_fn(batch: WindowBatch) -> dict[str, Tensor]:
        losses = tokenizer_losses(tokenizer, batch.candles)
        q = losses.quantizer
        return {
            "total": losses.total,
            "recon_coarse": losses.recon_coarse,
            "recon_full": losses.recon_full,
            "bsq": q.total,
            "codebook_entropy": q.codebook_entropy,
        }

    return run_stage(
        "tokenizer",
        tokenizer,
        loss_fn,
        lambda: tokenizer_validation(tokenizer, windows, device),
        sampler,
        settings.tokenizer,
        settings,
        device,
        _state_dir(state_dir),
        resume,
        progress,
    )


def train_predictor(
    model: Kronos,
    tokenizer: KronosTokenizer,
    series: Sequence[CandleSeries],
    settings: TrainSettings,
    device: str | torch.device = "cpu",
    state_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = False,
) -> StageResult:
    """Stage 2: next-token cross-entropy on s1 and s2 over the frozen tokenizer's tokens."""
    device = resolve_device(device)
    if model.config.s1_bits != tokenizer.config.s1_bits:
        raise ConfigError(
            f"predictor ({model.config.s1_bits} bits) and tokenizer ({tokenizer.config.s1_bits} bits) don't match"
        )
    model.to(device)
    tokenizer.to(device).eval()
    for p in tokenizer.parameters():
        p.requires_grad_(False)
    sampler = _sampler(series, settings, stage_offset=1)
    windows = validation_windows(
        series,
        val_fraction=settings.val_fraction,
        max_window=settings.max_window,
        horizon=settings.horizon,
        clip=settings.clip,
        limit=settings.val_windows,
    )

    def loss_fn(batch: WindowBatch) -> dict[str, Tensor]:
        s1, s2 = encode_batch(tokenizer, batch)
        losses = predictor_losses(model, s1, s2, batch.stamps)
        return {"total": losses.total, "ce_s1": losses.s1, "ce_s2": losses.s2}

    try:
        return run_stage(
            "predictor",
            model,
            loss_fn,
            lambda: predictor_validation(model, tokenizer, windows, device),
            sampler,
            settings.predictor,
            settings,
            device,
            _state_dir(state_dir),
            resume,
            progress,
        )
    finally:
        for p in tokenizer.parameters():
            p.requires_grad_(True)


def _sampler(series: Sequence[CandleSeries], settings: TrainSettings, stage_offset: int) -> WindowSampler:
    # Each stage draws its own batches: seed and stage together pick them.
    return WindowSampler(
        series,
        settings.val_fraction,
        settings.min_window,
        settings.max_window,
        settings.horizon,
        settings.clip,
        seed=settings.seed * len(STAGES) + stage_offset,
        aggregate=settings.aggregate,
        invert_prob=settings.invert_prob,
    )


def _state_dir(state_dir: str | Path | None) -> Path:
    if state_dir is None:
        raise ValueError("a state_dir is needed to save resumable progress")
    return Path(state_dir)


# --- a whole run ----------------------------------------------------------------------------


@dataclass
class RunResult:
    predictor_dir: Path | None
    tokenizer_dir: Path
    stages: list[StageResult]

    def summary(self) -> dict[str, Any]:
        return {
            "predictor": None if self.predictor_dir is None else str(self.predictor_dir),
            "tokenizer": str(self.tokenizer_dir),
            "stages": [dataclasses.asdict(s) for s in self.stages],
        }


def train(
    series: Sequence[CandleSeries],
    out: str | Path,
    settings: TrainSettings,
    *,
    model: Kronos,
    tokenizer: KronosTokenizer,
    stages: Sequence[str] = STAGES,
    device: str | torch.device = "cpu",
    state_dir: str | Path | None = None,
    resume: bool = False,
    keep_state: bool = False,
    progress: bool = False,
) -> RunResult:
    """Train the given stages and write ``out`` (predictor) and ``out/tokenizer``.

    Training only the tokenizer writes ``out/tokenizer`` alone: a predictor trained on the old
    tokens would not match the new ones.
    """
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        raise ValueError(f"stages must be among {', '.join(STAGES)}, got {', '.join(stages) or 'none'}")
    out = Path(out)
    state = Path(state_dir) if state_dir is not None else out.parent / f"{out.name}.train-state"
    if not resume and state.exists():
        shutil.rmtree(state)
    state.mkdir(parents=True, exist_ok=True)
    results = []
    if "tokenizer" in stages:
        results.append(train_tokenizer(tokenizer, series, settings, device, state, resume, progress))
    tokenizer_dir = tokenizer.save_pretrained(out / "tokenizer")
    predictor_dir = None
    if "predictor" in stages:
        results.append(train_predictor(model, tokenizer, series, settings, device, state, resume, progress))
        predictor_dir = model.save_pretrained(out)
    summary = RunResult(predictor_dir, tokenizer_dir, results)
    if not keep_state:
        shutil.rmtree(state, ignore_errors=True)
    return summary
