"""Iteration-level decoding: series join and leave a running batch at every decode step.

A ``DecodeEngine`` owns one ``KVSlab`` (allocated once, reused by every series). Its caller admits
series whenever it likes and calls ``step()`` in a loop; each step

1. drops the series whose ``cancel`` event is set;
2. feeds every decoding row its newest token (one batched step over the packed slab rows);
3. runs prefill chunks, least recently served first (round-robin), within the step's budget. With
   other series in the engine (each waits for this step for its next token, whether it decodes or
   recomputes a sliding window): chunks of at most ``chunk`` tokens, started while fewer than
   ``chunk`` tokens ran, so prefills never hold the others' next token for more than about two
   chunks' time (a context that fits in one chunk is never split). A series alone in the engine
   holds nobody up: its budget is ``idle_chunk`` (default: the whole window), so a lone long
   forecast pays no chunking overhead;
4. samples the next (s1, s2) of every row that has a fresh hidden state, with each series' own
   generator, and hands over the series that are done.

A series is computed as the reference computes it: while it fits in the window its keys/values are
cached; once it outgrows the window, every token recomputes the whole window (chunked like a
prefill). Its sample draws and its tokenizer passes depend on nothing but the series itself, and its
chunk boundaries, which do depend on the load, do not change its numbers: a chunk's attention runs
query rows over the keys before them with PyTorch's CPU attention kernel, whose result for one query
row does not depend on the other rows in the call, and the row-wise products give every row the same
bits in any batch (pinned by the tests). So its forecast is what it gets alone whoever joins or
leaves beside it.

``SeriesInput.window == "rolling"`` (opt-in, never the default) skips the recomputation: once the
window is full, each new token's keys/values overwrite the oldest ones in the series' cache rows (a
ring, sliding-window attention as Mistral-style models use) and decoding goes on one token per step.
The retained tokens keep the states they were computed with, which saw context older than the
window, so a rolling forecast is not the reference's once the window slides (it is until then); it is
still a function of the series alone, exact whoever runs beside it.

A step that raises (e.g. out of memory) leaves the engine as it was before the step (generator
states are restored, no token is committed), so the caller can remove a series and step again.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..nn.inference import InferenceWeights
from ..nn.kv_cache import KVSlab, aligned
from .engine_rows import DECODE, PREFILL, EngineSeries, PrefillWindow, StepReport, row_params, row_selector
from .forecast import Forecast, SeriesInput, finish_forecast
from .generation import SeriesTokens
from .sampling import SamplingParams, sample

if TYPE_CHECKING:  # the predictor is passed in; at run time this module never imports pipeline.py
    from .pipeline import KronosPredictor


class DecodeEngine:
    """Step-level batched decoding for one ``KronosPredictor`` (see the module docstring)."""

    def __init__(self, predictor: KronosPredictor, *, slots: int, chunk: int = 128, idle_chunk: int | None = None):
        if slots < 1 or chunk < 1 or (idle_chunk is not None and idle_chunk < 1):
            raise ValueError("slots, chunk and idle_chunk must be >= 1")
        self.predictor = predictor
        self.model = predictor.model
        self.window = predictor.max_context
        self.chunk = chunk
        self.idle_chunk = max(chunk, self.window if idle_chunk is None else idle_chunk)
        self.device = predictor.device
        attn = self.model.transformer[0].self_attn
        dep = self.model.dep_layer.cross_attn
        with torch.inference_mode():
            self.slab = KVSlab(
                slots=slots,
                width=self.window,
                layers=[(attn.n_heads, attn.head_dim)] * len(self.model.transformer),
                dep=(dep.n_heads, dep.head_dim),
                dtype=torch.float32,  # at every precision: attention runs in float32 (nn/attention.py)
                device=self.device,
            )
            # The newest token of each decode row, fed at the next step.
            self.slot_s1 = torch.zeros(slots, dtype=torch.long, device=self.device)
            self.slot_s2 = torch.zeros_like(self.slot_s1)
            self.slot_stamp = torch.zeros(slots, 5, dtype=torch.long, device=self.device)
        self.owner: list[EngineSeries | None] = [None] * slots
        self.decoding = 0  # decode rows occupy slots 0..decoding-1
        self.series: dict[Hashable, EngineSeries] = {}
        self._order = itertools.count()
        self.steps = 0
        self._net: InferenceWeights | None = None

    # --- what the caller sees -----------------------------------------------------------------
    @property
    def rows(self) -> int:
        """Sample paths admitted and not yet done."""
        return sum(s.paths for s in self.series.values())

    @property
    def idle(self) -> bool:
        return not self.series

    def keys(self) -> list[Hashable]:
        """The admitted series, oldest first."""
        return [s.key for s in sorted(self.series.values(), key=lambda s: s.order)]

    @torch.inference_mode()
    def admit(self, key: Hashable, series: SeriesInput) -> None:
        """Start a series (it decodes from the next step on). Raises ``InputError`` for a bad one."""
        if key in self.series:
            raise ValueError(f"series {key!r} is already admitted")
        if series.sample_count > self.slab.slots:
            raise ValueError(f"sample_count {series.sample_count} exceeds the KV slab's {self.slab.slots} rows")
        p = self.predictor
        features, stamps, seed = p._prepare(0, series)
        ((s1, s2),) = p._encode([features])
        params = SamplingParams(series.temperature, series.top_k, series.top_p)
        generator = torch.Generator().manual_seed(seed)
        job = SeriesTokens(s1, s2, stamps, series.pred_len, series.sample_count, params, generator, series.cancel)
        n, paths = len(s1), series.sample_count
        tok1 = torch.zeros(paths, n + job.pred_len, dtype=torch.long, device=self.device)
        tok2 = torch.zeros_like(tok1)
        tok1[:, :n], tok2[:, :n] = s1.to(self.device), s2.to(self.device)
        rolling = series.window == "rolling"
        entry = EngineSeries(key, next(self._order), series, job, features, seed, tok1, tok2, cur=n, rolling=rolling)
        job.stamps = stamps.to(self.device)
        width = min(n, self.window)
        entry.windows = [PrefillWindow(self._take_free(entry), 0, n - width, width, served=self.steps - 0.5)]
        self.series[key] = entry

    def remove(self, key: Hashable) -> None:
        """Take a series out (evicted, failed or cancelled); its slots are free at once."""
        entry = self.series.pop(key, None)
        if entry is not None:
            self._release(entry)
        if not self.series:
            self._net = None  # idle: the next series looks the weights up again

    @torch.inference_mode()
    def step(self) -> StepReport:
        report = StepReport()
        for entry in [s for s in self.series.values() if s.job.cancelled]:
            self.remove(entry.key)
            report.dropped.append(entry.key)
        if not self.series:
            return report
        generators = {key: s.job.generator.get_state() for key, s in self.series.items()}
        try:
            sampled, progress = self._compute()
        except BaseException:
            for key, state in generators.items():
                self.series[key].job.generator.set_state(state)
            raise
        self.steps += 1
        for window, (done, h_last) in progress.items():
            window.done, window.h_last, window.served = done, h_last, self.steps
        for entry, next_s1, next_s2 in sampled:  # first every row's token and cache length ...
            col = entry.cur
            entry.tok1[:, col], entry.tok2[:, col] = next_s1, next_s2
            entry.cur += 1
            if entry.state == DECODE:
                self.slab.lengths[entry.slots] += 1
        for entry, _, _ in sampled:  # ... then rows move (a moved row takes its new column along)
            if entry.done:
                self.remove(entry.key)
                try:
                    report.finished.append((entry.key, self._forecast(entry)))
                except Exception as exc:  # noqa: BLE001 — e.g. out of memory in the tokenizer: this series only
                    report.failed.append((entry.key, exc))
            else:
                self._advance(entry)
        return report

    # --- one step -----------------------------------------------------------------------------
    def _compute(self):
        """The step's arithmetic; changes nothing but slab columns that no row counts yet."""
        # The prepared weights are looked up once per busy spell (the lookup walks every parameter:
        # about 1-2 ms, a tenth of a decode step on a CPU); weights that changed under series in flight
        # would not match their cached keys/values anyway.
        if self._net is None:
            self._net = InferenceWeights.of(self.model, self.predictor.precision)
        net = self._net
        groups = []  # (series list, row index per series, h_last, s1 logits, dep keys, dep values, mask)
        if self.decoding:
            n = self.decoding
            rows = self.slab.rows(n)
            x = net.embed(self.slot_s1[:n, None], self.slot_s2[:n, None], self.slot_stamp[:n, None])
            h = net.trunk(x, rows)[:, 0]
            s1_logits, keys, values = net.step_heads(h)
            dep_keys, dep_values, mask = rows.dep.append(keys, values)
            decoding = [s for s in self.series.values() if s.state == DECODE]
            groups.append((decoding, [s.slots for s in decoding], h, s1_logits, dep_keys, dep_values, mask))

        progress = self._prefill(net)
        for entry in self.series.values():
            if entry.state != PREFILL:
                continue
            states = [progress.get(w, (w.done, w.h_last)) for w in entry.windows]
            if any(done < w.width for w, (done, _) in zip(entry.windows, states)):
                continue
            # Its windows' keys/values, KEY_ALIGN-wide with the columns past the window masked out, as a
            # decode step attends them (and as the batched loop does).
            width = entry.windows[0].width
            cols = aligned(width)
            mask = None if cols == width else (torch.arange(cols, device=self.device) < width)[None, None, None]
            if len(entry.windows) == 1:  # the input's window: shared by every path
                (w,) = entry.windows
                h = states[0][1].expand(entry.paths, -1).contiguous()
                dep_keys = self.slab.dep_k[w.slot : w.slot + 1, :, :cols].expand(entry.paths, -1, -1, -1)
                dep_values = self.slab.dep_v[w.slot : w.slot + 1, :, :cols].expand(entry.paths, -1, -1, -1)
            else:
                h = torch.cat([h_last for _, h_last in states])
                dep_keys = torch.stack([self.slab.dep_k[w.slot, :, :cols] for w in entry.windows])
                dep_values = torch.stack([self.slab.dep_v[w.slot, :, :cols] for w in entry.windows])
            groups.append(([entry], [list(range(entry.paths))], h, None, dep_keys, dep_values, mask))

        sampled = []
        for members, rows_of, h, s1_logits, dep_keys, dep_values, mask in groups:
            rows = h.shape[0]
            params = row_params(members, rows_of, rows, self.device)
            s1_logits = net.s1_logits(h) if s1_logits is None else s1_logits
            next_s1 = sample(s1_logits, *params, self._uniforms(members, rows_of, rows))
            s2_logits = net.s2_logits(h, next_s1, dep_keys, dep_values, mask)
            next_s2 = sample(s2_logits, *params, self._uniforms(members, rows_of, rows))
            selectors = [row_selector(mine, self.device) for mine in rows_of]
            sampled += [(entry, next_s1[i], next_s2[i]) for entry, i in zip(members, selectors)]
        return sampled, progress

    def _prefill(self, net: InferenceWeights) -> dict[PrefillWindow, tuple[int, Tensor | None]]:
        """Run prefill chunks, least recently served first, while fewer tokens than the step's budget ran:
        ``chunk`` with several series in the engine, ``idle_chunk`` for a series alone. A window enters
        the round at its admission, ahead of those served in the step before it (round-robin: a stream
        of newcomers cannot starve a window that is part way through)."""
        budget = self.idle_chunk if len(self.series) == 1 else self.chunk
        waiting = [
            (w.served, entry.order, w.path, w, entry)
            for entry in self.series.values()
            if entry.state == PREFILL
            for w in entry.windows
            if w.done < w.width
        ]
        progress = {}
        spent = 0
        for _, _, _, w, entry in sorted(waiting, key=lambda item: item[:3]):
            if spent >= budget:
                break
            size = min(budget, w.width - w.done)
            spent += size
            lo, hi = w.start + w.done, w.start + w.done + size
            stamps = entry.job.stamps[lo:hi].unsqueeze(0)
            x = net.embed(entry.tok1[w.path : w.path + 1, lo:hi], entry.tok2[w.path : w.path + 1, lo:hi], stamps)
            h = net.prefill_chunk(x, self.slab.layer_views(w.slot), w.done)
            keys, values = net.dep_keys_values(h)
            self.slab.dep_k[w.slot, :, w.done : w.done + size] = keys[0]
            self.slab.dep_v[w.slot, :, w.done : w.done + size] = values[0]
            done = w.done + size
            progress[w] = (done, h[:, -1] if done == w.width else None)
        return progress

    def _uniforms(self, members: list[EngineSeries], rows_of: list[list[int]], rows: int) -> Tensor:
        """One uniform per row, each series drawing its paths' together from its own generator (on the
        host, sent once; put in row order when the series' rows are not already in it)."""
        draws = [torch.rand(entry.paths, generator=entry.job.generator) for entry in members]
        u = torch.cat(draws) if len(draws) > 1 else draws[0]
        order = [r for mine in rows_of for r in mine]
        if order != list(range(rows)):
            u = torch.empty_like(u).index_copy_(0, torch.as_tensor(order), u)
        return u.to(self.device)

    # --- bookkeeping --------------------------------------------------------------------------
    def _advance(self, entry: EngineSeries) -> None:
        """After a token: move the series to its next state; a decode row gets the token to feed."""
        if entry.state == PREFILL and (entry.cur <= self.window or entry.rolling):
            self._to_decode(entry)  # its whole context fits (or it rolls): cache it, feed one token per step
        elif entry.cur > self.window and not entry.rolling:
            self._to_window(entry)  # the window slides: recompute it for the next token
        if entry.state == DECODE:
            col = entry.cur - 1
            slots = row_selector(entry.slots, self.device)
            self.slot_s1[slots], self.slot_s2[slots] = entry.tok1[:, col], entry.tok2[:, col]
            self.slot_stamp[slots] = entry.job.stamps[col]

    def _to_decode(self, entry: EngineSeries) -> None:
        (w,) = entry.windows
        saved = self.slab.save(w.slot, w.width)  # its slot may be needed to make room
        self._free(w.slot)
        entry.windows = []
        targets = list(range(self.decoding, self.decoding + entry.paths))
        for t in targets:
            other = self.owner[t]
            if other is not None:  # a prefill of another series sits there: move it out of the way
                window = next(x for x in other.windows if x.slot == t)
                window.slot = self._take_free(other, avoid=targets)
                self.slab.move(t, window.slot, window.done)
                self._free(t)
        for t in targets:
            self.slab.load(t, saved)
            self.slab.rolling[t] = entry.rolling
            self.owner[t] = entry
        self.decoding += entry.paths
        entry.slots, entry.state = targets, DECODE

    def _to_window(self, entry: EngineSeries) -> None:
        if entry.state == DECODE:
            self._release(entry)
        elif len(entry.windows) == 1 and entry.paths > 1:  # the shared input window splits per path
            for _ in range(entry.paths - 1):
                entry.windows.append(PrefillWindow(self._take_free(entry), 0, 0, 0, served=entry.windows[0].served))
        start = entry.cur - self.window
        entry.windows = [
            PrefillWindow(w.slot, path, start, self.window, served=w.served) for path, w in enumerate(entry.windows)
        ] or [
            PrefillWindow(self._take_free(entry), p, start, self.window, served=self.steps - 0.5)
            for p in range(entry.paths)
        ]
        entry.state = PREFILL

    def _release(self, entry: EngineSeries) -> None:
        for w in entry.windows:
            self._free(w.slot)
        entry.windows = []
        if entry.state == DECODE and entry.slots:
            leaving = set(entry.slots)
            keep = self.decoding - len(leaving)
            holes = sorted(s for s in leaving if s < keep)
            movers = [s for s in range(keep, self.decoding) if s not in leaving]
            for hole, source in zip(holes, movers):
                self.slab.move(source, hole)
                self.slot_s1[hole], self.slot_s2[hole] = self.slot_s1[source], self.slot_s2[source]
                self.slot_stamp[hole] = self.slot_stamp[source]
                other = self.owner[source]
                other.slots[other.slots.index(source)] = hole
                self.owner[hole] = other
                self._free(source)
            for s in leaving:
                if self.owner[s] is entry:
                    self._free(s)
            self.decoding = keep
            entry.slots = []

    def _take_free(self, entry: EngineSeries, avoid=()) -> int:
        """A free slot for a prefill, from the top (decode rows grow from the bottom)."""
        for slot in range(self.slab.slots - 1, self.decoding - 1, -1):
            if self.owner[slot] is None and slot not in avoid:
                self.owner[slot] = entry
                return slot
        raise RuntimeError("the KV slab has no free row (the row budget exceeds its slots)")

    def _free(self, slot: int) -> None:
        self.owner[slot] = None
        self.slab.lengths[slot] = 0
        self.slab.rolling[slot] = False

    def _forecast(self, entry: EngineSeries) -> Forecast:
        """Decode the series alone (so its numbers never depend on its batch mates)."""
        n = len(entry.job.s1)
        generated = (entry.tok1[:, n:], entry.tok2[:, n:])
        (paths,) = self.predictor._decode([entry.job], [generated])
        return finish_forecast(entry.series, entry.features, paths, entry.seed)
