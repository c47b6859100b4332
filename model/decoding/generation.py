"""Autoregressive generation of (s1, s2) tokens: the cached fast path and the recompute oracle.

Both follow the reference exactly: at every step the predictor sees the most recent
``max_context`` tokens with positions restarting at 0 at the window start. While a series fits
in the window, its keys/values are cached and each step feeds one token. Once it is longer than
the window, the window slides by one token per step; every retained token's state changes (its
oldest context was dropped and positions shift), so such a step recomputes the whole window —
exactly what the reference does, but only for the rows that slide.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..nn.inference import InferenceWeights
from ..nn.kv_cache import aligned
from ..nn.precision import DEFAULT_PRECISION
from ..nn.predictor import Kronos
from .sampling import RowSampler, SamplingParams


@dataclass
class SeriesTokens:
    """One series to continue: its tokens, the time features of its input and future rows."""

    s1: Tensor  # (n,) int64
    s2: Tensor  # (n,) int64
    stamps: Tensor  # (n + pred_len, 5) int64: input rows then future rows
    pred_len: int
    sample_count: int
    params: SamplingParams
    generator: torch.Generator
    # Set from another thread to stop generating this series (e.g. its client went away); it
    # is then returned with fewer than pred_len tokens.
    cancel: threading.Event | None = field(default=None)

    @property
    def cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()


def _row_layout(series: list[SeriesTokens]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    repeats = np.array([s.sample_count for s in series], dtype=np.int64)
    row_series = np.repeat(np.arange(len(series)), repeats)
    lengths = np.array([len(s.s1) for s in series], dtype=np.int64)[row_series]
    pred_lens = np.array([s.pred_len for s in series], dtype=np.int64)[row_series]
    return repeats, row_series, lengths, pred_lens


def _token_buffers(
    series: list[SeriesTokens], row_series: np.ndarray, width: int, device
) -> tuple[Tensor, Tensor, Tensor]:
    """Right-padded per-row token and stamp buffers (R, width); stamps past a row's end repeat its last one."""
    rows = len(row_series)
    tok1 = torch.zeros(rows, width, dtype=torch.long, device=device)
    tok2 = torch.zeros_like(tok1)
    stamps = torch.zeros(rows, width, 5, dtype=torch.long, device=device)
    for r, b in enumerate(row_series):
        s = series[b]
        n, m = len(s.s1), len(s.stamps)
        tok1[r, :n] = s.s1
        tok2[r, :n] = s.s2
        stamps[r, :m] = s.stamps
        stamps[r, m:] = s.stamps[-1]
    return tok1, tok2, stamps


@torch.inference_mode()
def generate_recompute(model: Kronos, series: list[SeriesTokens], max_context: int) -> list[tuple[Tensor, Tensor]]:
    """The oracle: the reference's loop, one series at a time, whole window recomputed every step.

    Returns, per series, the generated (s1, s2) ids, each (sample_count, pred_len).
    """
    device = next(model.parameters()).device
    results = []
    for s in series:
        sampler = RowSampler([s.params], [s.generator], np.array([s.sample_count]), device)
        rows = np.arange(s.sample_count)
        tok1 = s.s1.to(device).unsqueeze(0).repeat(s.sample_count, 1)
        tok2 = s.s2.to(device).unsqueeze(0).repeat(s.sample_count, 1)
        stamps = s.stamps.to(device).unsqueeze(0).repeat(s.sample_count, 1, 1)
        n = tok1.shape[1]
        for i in range(s.pred_len):
            if s.cancelled:
                break
            end = n + i
            start = max(0, end - max_context)
            s1_logits, h = model.decode_s1(tok1[:, start:end], tok2[:, start:end], stamps[:, start:end])
            next_s1 = sampler(s1_logits[:, -1], rows)
            s2_logits = model.decode_s2(h, next_s1.unsqueeze(1))
            next_s2 = sampler(s2_logits[:, -1], rows)
            tok1 = torch.cat((tok1, next_s1.unsqueeze(1)), dim=1)
            tok2 = torch.cat((tok2, next_s2.unsqueeze(1)), dim=1)
        results.append((tok1[:, n:], tok2[:, n:]))
    return results


# Told the series that have just got all their tokens: (index, s1, s2), each (sample_count, pred_len).
OnFinished = Callable[[list[tuple[int, Tensor, Tensor]]], None]


@torch.inference_mode()
def generate_cached(
    model: Kronos,
    series: list[SeriesTokens],
    max_context: int,
    on_finished: OnFinished | None = None,
    precision: str = DEFAULT_PRECISION,
) -> list[tuple[Tensor, Tensor]]:
    """The fast path: every series and every sample path decoded together in one batched loop.

    Series may differ in length, pred_len, sample_count and sampling settings. The sample paths of
    a series share one prefill. Returns what ``generate_recompute`` returns. ``on_finished`` hears
    of each series (not cancelled) as soon as it has all its tokens, while the others go on.
    ``precision``: the arithmetic (``model.nn.precision``); fp32 is the reference's.
    """
    device = next(model.parameters()).device
    net = InferenceWeights.of(model, precision)
    window = max_context
    repeats, row_series, cur, pred_lens = _row_layout(series)
    n_rows, steps = len(row_series), int(pred_lens.max())
    tok1, tok2, stamps = _token_buffers(series, row_series, int(cur.max()) + steps, device)
    sampler = RowSampler([s.params for s in series], [s.generator for s in series], repeats, device)
    first_row = np.concatenate(([0], np.cumsum(repeats)[:-1]))

    # Prefill the series that fit in the window once each, then share it across their sample paths.
    cache = None
    cached_rows = np.nonzero(cur <= window)[0]
    sliding = cur > window
    if len(cached_rows):
        fits = [b for b in range(len(series)) if len(series[b].s1) <= window]
        lengths = np.array([len(series[b].s1) for b in fits])
        width = int(lengths.max())
        prefill_rows = torch.as_tensor(first_row[fits], device=device)
        x = net.embed(tok1[prefill_rows, :width], tok2[prefill_rows, :width], stamps[prefill_rows, :width])
        expand = torch.as_tensor(repeats[fits], device=device)
        capacity = width + int(pred_lens[cached_rows].max())
        cache = model.new_cache(rows=len(cached_rows), capacity=capacity, lengths=cur[cached_rows], expand=expand)
        h = net.trunk(x, cache)
        keys, values = net.dep_keys_values(h)
        h_last = h[torch.arange(len(fits), device=device), torch.as_tensor(lengths - 1, device=device)]
        h_last = h_last.repeat_interleave(expand, dim=0)
        keys, values = keys.repeat_interleave(expand, dim=0), values.repeat_interleave(expand, dim=0)
        cache.dep.k[:, :, :width], cache.dep.v[:, :, :width] = keys, values
        cols = aligned(width)  # attended as a decode step attends (kv_cache.KEY_ALIGN)
        dep_mask = _length_mask(cur[cached_rows], cols, device)
        cached = (h_last, None, cache.dep.k[:, :, :cols], cache.dep.v[:, :, :cols], dep_mask)

    out1 = torch.zeros(n_rows, steps, dtype=torch.long, device=device)
    out2 = torch.zeros_like(out1)
    delivered = np.zeros(len(series), dtype=bool)

    def deliver(done_steps: int) -> None:
        if on_finished is None:
            return
        ready = [b for b, s in enumerate(series) if not delivered[b] and not s.cancelled and s.pred_len <= done_steps]
        if ready:
            delivered[ready] = True
            rows = [slice(first_row[b], first_row[b] + repeats[b]) for b in ready]
            on_finished(
                [(b, out1[r, : series[b].pred_len], out2[r, : series[b].pred_len]) for b, r in zip(ready, rows)]
            )

    positions_window = torch.arange(window, device=device)
    for i in range(steps):
        deliver(i)
        for b, s in enumerate(series):
            if s.cancelled and pred_lens[first_row[b]] > i:
                pred_lens[first_row[b] : first_row[b] + repeats[b]] = i  # its rows stop here
        if not (pred_lens > i).any():
            break
        if i > 0 and cache is not None:
            keep = (pred_lens[cached_rows] > i) & (cur[cached_rows] <= window)
            if not keep.all():
                sliding[cached_rows[~keep]] = True
                if keep.any():
                    cache.keep(np.nonzero(keep)[0])
                    cached_rows = cached_rows[keep]
                else:
                    cache, cached_rows = None, cached_rows[:0]
            if cache is not None:
                cached = _decode_step(net, cache, tok1, tok2, stamps, cached_rows, cur, device)
        groups = []
        if len(cached_rows):
            groups.append((cached_rows, *cached))
        slide_rows = np.nonzero(sliding & (pred_lens > i))[0]
        if len(slide_rows):
            index = torch.as_tensor(cur[slide_rows] - window, device=device).unsqueeze(1) + positions_window
            rows_t = torch.as_tensor(slide_rows, device=device).unsqueeze(1)
            x = net.embed(tok1[rows_t, index], tok2[rows_t, index], stamps[rows_t, index])
            h = net.trunk(x)
            keys, values = net.dep_keys_values(h)
            pad = aligned(window) - window  # as the step-level engine attends a window's slab columns
            if pad:
                keys, values = F.pad(keys, (0, 0, 0, pad)), F.pad(values, (0, 0, 0, pad))
            mask = _length_mask(np.full(len(slide_rows), window), window + pad, device)
            groups.append((slide_rows, h[:, -1], None, keys, values, mask))

        for rows, h_last, s1_logits, keys, values, mask in groups:
            next_s1 = sampler(net.s1_logits(h_last) if s1_logits is None else s1_logits, rows)
            next_s2 = sampler(net.s2_logits(h_last, next_s1, keys, values, mask), rows)
            rows_t = torch.as_tensor(rows, device=device)
            cols = torch.as_tensor(cur[rows], device=device)
            tok1[rows_t, cols] = next_s1
            tok2[rows_t, cols] = next_s2
            out1[rows_t, i] = next_s1
            out2[rows_t, i] = next_s2
            cur[rows] += 1

    deliver(steps)
    results = []
    for b, s in enumerate(series):
        rows = slice(first_row[b], first_row[b] + repeats[b])
        done = int(pred_lens[first_row[b]]) if s.cancelled else s.pred_len
        results.append((out1[rows, :done], out2[rows, :done]))
    return results


def _length_mask(lengths: np.ndarray, width: int, device) -> Tensor | None:
    if (lengths == lengths[0]).all() and lengths[0] == width:
        return None
    cols = torch.arange(width, device=device)
    return (cols.unsqueeze(0) < torch.as_tensor(lengths, device=device).unsqueeze(1))[:, None, None, :]


def _decode_step(net: InferenceWeights, cache, tok1, tok2, stamps, rows: np.ndarray, cur: np.ndarray, device):
    """Feed each cached row's newest token; returns its hidden state, s1 logits and the dependency
    keys/values (and mask) of the whole window."""
    rows_t = torch.as_tensor(rows, device=device)
    last = torch.as_tensor(cur[rows] - 1, device=device)
    x = net.embed(tok1[rows_t, last].unsqueeze(1), tok2[rows_t, last].unsqueeze(1), stamps[rows_t, last].unsqueeze(1))
    cache.begin_step()
    h = net.trunk(x, cache)[:, 0]
    s1_logits, keys, values = net.step_heads(h)
    dep_keys, dep_values, mask = cache.dep.append(keys, values)
    cache.end_step()
    return h, s1_logits, dep_keys, dep_values, mask
