"""``KronosPredictor``: candles and timestamps in, forecast candles out (the reference API plus more).

The array-level entry point is ``KronosPredictor.forecast`` over ``SeriesInput`` objects; the
pandas calls ``predict`` / ``predict_batch`` are thin adapters over it. What a series and a forecast
are lives in ``forecast.py``; the step-level engine (``engine.py``) decodes rolling windows here and
serves the step-level scheduler.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from ..devices import resolve_device
from ..errors import InputError
from ..nn.precision import DEFAULT_PRECISION, check_precision
from ..nn.predictor import Kronos
from ..nn.tokenizer import KronosTokenizer
from .engine import DecodeEngine
from .forecast import (
    MIN_ROWS,
    PRICE_COLUMNS,
    SEED_BITS,
    WINDOWS,
    Forecast,
    SeriesInput,
    as_timestamps,
    column_stats,
    complete_features,
    finish_forecast,
    frame_columns,
    time_features,
)
from .generation import SeriesTokens, generate_cached, generate_recompute
from .sampling import SamplingParams
from .table import DEFAULT_BATCH_SIZE, TableSettings, run_table


def global_seed() -> int:
    """A seed drawn from torch's global CPU generator (``torch.manual_seed`` governs it, as upstream)."""
    return int(torch.randint(0, 2**SEED_BITS, (1,)).item())


class KronosPredictor:
    """Forecast candles with a Kronos predictor and its tokenizer (a drop-in for the reference).

    ``precision``: "fp32" (the default: the reference's arithmetic), or opt-in "bf16" / "int8" (faster on
    hardware with bf16 arithmetic, not the reference's numbers; see ``model/nn/precision.py``). A machine
    that cannot run it at speed raises ``PrecisionError`` here.
    """

    def __init__(
        self,
        model: Kronos,
        tokenizer: KronosTokenizer,
        device: str | torch.device | None = None,
        max_context: int = 512,
        clip: float = 5,
        precision: str = DEFAULT_PRECISION,
    ):
        if isinstance(max_context, bool) or not isinstance(max_context, int) or max_context < 1:
            raise InputError(f"max_context must be a positive integer, got {max_context!r}")
        if not isinstance(clip, (int, float)) or not clip > 0:
            raise InputError(f"clip must be a number > 0, got {clip!r}")
        if model.config.s1_bits != tokenizer.config.s1_bits or model.config.s2_bits != tokenizer.config.s2_bits:
            raise InputError(
                f"predictor and tokenizer disagree on token bits: predictor s1/s2 = {model.config.s1_bits}/"
                f"{model.config.s2_bits}, tokenizer {tokenizer.config.s1_bits}/{tokenizer.config.s2_bits}"
            )
        self.device = resolve_device(device)
        self.precision = check_precision(precision, self.device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer.to(self.device).eval()
        self.max_context = max_context
        self.clip = float(clip)

    # --- array level ---------------------------------------------------------------------
    def forecast(
        self,
        series: Sequence[SeriesInput],
        *,
        fast: bool = True,
        on_done: Callable[[int, Forecast], None] | None = None,
    ) -> list[Forecast | None]:
        """Forecast every series together; ``fast=False`` runs the recompute oracle instead.

        The entry of a series whose ``cancel`` event was set is None. ``on_done(i, forecast)`` is
        called once per finished series: on the fast path as soon as its tokens are all generated
        (a series with a short ``pred_len`` need not wait for its batch mates), else at the end.
        """
        if not series:
            raise InputError("no series given")
        prepared = [self._prepare(i, s) for i, s in enumerate(series)]
        if not fast and self.precision != DEFAULT_PRECISION:
            raise InputError(f"the recompute oracle (fast=False) is the reference's fp32, not {self.precision}")
        if any(s.window == "rolling" for s in series):
            if not fast:
                raise InputError("window='rolling' has no recompute oracle: it needs the cached path (fast=True)")
            return self._forecast_stepwise(series, on_done)
        results: list[Forecast | None] = [None] * len(series)

        def finish(done: list[tuple[int, torch.Tensor, torch.Tensor]]) -> None:
            paths = self._decode([jobs[i] for i, _, _ in done], [(g1, g2) for _, g1, g2 in done])
            for (i, _, _), p in zip(done, paths):
                x, _, seed = prepared[i]
                results[i] = finish_forecast(series[i], x, p, seed)
                if on_done is not None:
                    on_done(i, results[i])

        with torch.inference_mode():
            tokens = self._encode([p[0] for p in prepared])
            jobs = []
            for s, (s1, s2), (_, stamps, seed) in zip(series, tokens, prepared):
                generator = torch.Generator().manual_seed(seed)
                params = SamplingParams(s.temperature, s.top_k, s.top_p)
                jobs.append(SeriesTokens(s1, s2, stamps, s.pred_len, s.sample_count, params, generator, s.cancel))
            if fast:
                generated = generate_cached(
                    self.model, jobs, self.max_context, on_finished=finish, precision=self.precision
                )
            else:
                generated = generate_recompute(self.model, jobs, self.max_context)
            rest = [i for i, job in enumerate(jobs) if results[i] is None and not job.cancelled]
            if rest:
                finish([(i, *generated[i]) for i in rest])
        return results

    def _forecast_stepwise(
        self, series: Sequence[SeriesInput], on_done: Callable[[int, Forecast], None] | None
    ) -> list[Forecast | None]:
        """The series through a private step-level engine (the one path with rolling windows); a
        series that is not rolling gets there exactly what the batched loop gives it."""
        engine = DecodeEngine(self, slots=sum(s.sample_count for s in series), chunk=self.max_context)
        for i, s in enumerate(series):
            engine.admit(i, s)
        results: list[Forecast | None] = [None] * len(series)
        while not engine.idle:
            report = engine.step()
            for _, exc in report.failed:
                raise exc
            for i, forecast in report.finished:
                results[i] = forecast
                if on_done is not None:
                    on_done(i, forecast)
        return results

    def _prepare(self, index: int, s: SeriesInput) -> tuple[np.ndarray, torch.Tensor, int]:
        name = f"series[{index}]" if index else "candles"
        x = complete_features(s.candles, name)
        if len(x) < MIN_ROWS:
            raise InputError(f"{name}: needs at least {MIN_ROWS} rows, got {len(x)}")
        if isinstance(s.pred_len, bool) or s.pred_len < 1:
            raise InputError(f"{name}: pred_len must be >= 1, got {s.pred_len}")
        if s.pred_len > self.max_context:
            raise InputError(f"{name}: pred_len {s.pred_len} exceeds max_context {self.max_context}")
        if isinstance(s.sample_count, bool) or not isinstance(s.sample_count, (int, np.integer)) or s.sample_count < 1:
            raise InputError(f"{name}: sample_count must be an integer >= 1, got {s.sample_count!r}")
        SamplingParams(s.temperature, s.top_k, s.top_p)
        if s.window not in WINDOWS:
            raise InputError(f"{name}: window must be one of {', '.join(WINDOWS)}, got {s.window!r}")
        x_ts = as_timestamps(s.timestamps, f"{name}: x_timestamp", len(x))
        y_ts = as_timestamps(s.future_timestamps, f"{name}: y_timestamp", s.pred_len)
        if y_ts[0] <= x_ts[-1]:
            raise InputError(f"{name}: y_timestamp must start after the last input timestamp {x_ts[-1]}")
        stamps = torch.from_numpy(np.concatenate([time_features(x_ts), time_features(y_ts)]))
        seed = s.seed if s.seed is not None else secrets.randbits(SEED_BITS)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**63:
            raise InputError(f"{name}: seed must be an integer in [0, 2^63), got {seed!r}")
        return x, stamps, int(seed)

    def _normalize(self, x: np.ndarray) -> np.ndarray:
        center, scale = column_stats(x)
        return np.clip((x - center) / scale, -self.clip, self.clip)

    def _encode(self, inputs: list[np.ndarray]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        # Right-padded batch: the causal encoder keeps padding out of every real row.
        lengths = [len(x) for x in inputs]
        batch = np.zeros((len(inputs), max(lengths), 6), dtype=np.float32)
        for i, x in enumerate(inputs):
            batch[i, : len(x)] = self._normalize(x)
        s1, s2 = self.tokenizer.encode(torch.from_numpy(batch).to(self.device))
        return [(s1[i, :n].cpu(), s2[i, :n].cpu()) for i, n in enumerate(lengths)]

    def _decode(self, jobs: list[SeriesTokens], generated) -> list[np.ndarray]:
        """Normalized sample paths (S, pred_len, 6) per series: the tokenizer decodes the last
        max_context tokens (input + generated) of each path, as the reference does."""
        windows, spans = [], []
        for job, (g1, g2) in zip(jobs, generated):
            paths = g1.shape[0]
            s1 = torch.cat((job.s1.to(self.device).expand(paths, -1), g1), dim=1)
            s2 = torch.cat((job.s2.to(self.device).expand(paths, -1), g2), dim=1)
            s1, s2 = s1[:, -self.max_context :], s2[:, -self.max_context :]
            windows.append((s1, s2))
            spans.append(s1.shape[1])
        width = max(spans)
        rows = sum(w[0].shape[0] for w in windows)
        b1 = torch.zeros(rows, width, dtype=torch.long, device=self.device)
        b2 = torch.zeros_like(b1)
        r = 0
        for s1, s2 in windows:
            b1[r : r + len(s1), : s1.shape[1]] = s1
            b2[r : r + len(s2), : s2.shape[1]] = s2
            r += len(s1)
        decoded = self.tokenizer.decode(b1, b2).float().cpu().numpy()
        out, r = [], 0
        for job, (s1, _), span in zip(jobs, windows, spans):
            out.append(decoded[r : r + len(s1), span - job.pred_len : span])
            r += len(s1)
        return out

    # --- the reference's pandas API ------------------------------------------------------
    def predict(
        self,
        df: pd.DataFrame,
        x_timestamp,
        y_timestamp,
        pred_len: int,
        T: float = 1.0,
        top_k: int = 0,
        top_p: float = 0.9,
        sample_count: int = 1,
        verbose: bool = True,
        seed: int | None = None,
        *,
        clean: bool = False,
        window: str = "exact",
    ) -> pd.DataFrame:
        """Forecast pred_len candles after df; a DataFrame indexed by y_timestamp.

        ``clean=True``: every sample path's candles are repaired to be valid (so the mean is) and the
        columns df lacks (volume, amount) are left out, instead of the reference's numbers.
        ``window="rolling"``: see ``SeriesInput.window`` (faster once the window slides; not the reference's).
        ``model.future_timestamps(x_timestamp, pred_len)`` makes a y_timestamp on df's own calendar.
        Without ``seed`` the seed is drawn from torch's global generator, so ``torch.manual_seed(n)``
        before the call makes it reproducible, as with the reference. ``verbose`` is accepted for the
        reference's signature (default True as there); the cached decoder prints no progress.
        """
        seed = global_seed() if seed is None else seed
        series = self._frame_input(df, x_timestamp, y_timestamp, pred_len, T, top_k, top_p, sample_count, seed)
        series.clean, series.window = clean, window
        (forecast,) = self.forecast([series])
        return forecast.to_frame()

    def predict_batch(
        self,
        df_list: Sequence[pd.DataFrame],
        x_timestamp_list: Sequence,
        y_timestamp_list: Sequence,
        pred_len: int | Sequence[int],
        T: float = 1.0,
        top_k: int = 0,
        top_p: float = 0.9,
        sample_count: int = 1,
        verbose: bool = True,
        seed: int | None = None,
        *,
        clean: bool = False,
        window: str = "exact",
    ) -> list[pd.DataFrame]:
        """Forecast several series in one batch; unlike the reference, lengths and pred_len may differ.

        With a seed, series i uses seed + i, so each answer is the one ``predict`` gives with that seed.
        ``clean``, ``window``, ``verbose`` and a missing seed (drawn once, from torch's generator) as in ``predict``.
        """
        seed = global_seed() if seed is None else seed
        if not isinstance(df_list, (list, tuple)) or not df_list:
            raise InputError("df_list must be a non-empty list of DataFrames")
        n = len(df_list)
        if len(x_timestamp_list) != n or len(y_timestamp_list) != n:
            raise InputError(
                f"df_list, x_timestamp_list and y_timestamp_list must have the same length "
                f"({n}, {len(x_timestamp_list)}, {len(y_timestamp_list)})"
            )
        pred_lens = list(pred_len) if isinstance(pred_len, (list, tuple)) else [pred_len] * n
        if len(pred_lens) != n:
            raise InputError(f"pred_len has {len(pred_lens)} entries for {n} series")
        inputs = [
            self._frame_input(df, xs, ys, p, T, top_k, top_p, sample_count, seed + i, i)
            for i, (df, xs, ys, p) in enumerate(zip(df_list, x_timestamp_list, y_timestamp_list, pred_lens))
        ]
        for series in inputs:
            series.clean, series.window = clean, window
        return [f.to_frame() for f in self.forecast(inputs)]

    def predict_df(
        self,
        df: pd.DataFrame,
        *,
        pred_len: int,
        id_column: str = "id",
        timestamp_column: str = "timestamps",
        sample_count: int = 1,
        T: float = 1.0,
        top_k: int = 0,
        top_p: float = 0.9,
        seed: int | None = None,
        clean: bool = False,
        window: str = "exact",
        quantiles: Sequence[float] = (),
        freq: str | None = None,
        calendar: str | None = None,
        lookback: int | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        on_error: str = "collect",
    ) -> pd.DataFrame:
        """Forecast every series of a long table (one row per id and timestamp, any order) in one call.

        Out: one row per id and forecast step: ``id``, ``timestamps`` (the series' own calendar, or
        ``freq`` / ``calendar``), ``step``, the mean candle (the columns the input has), ``close_q<level>``
        per quantile, ``p_up`` (share of paths whose close ends above the last input close) with 2+ paths.
        Each series' seed comes from ``seed`` and its id (``model.decoding.table.series_seed``), so its
        rows do not depend on the rest of the table. ``attrs["errors"]``: the ids left out and why (id → message);
        ``attrs["seed"]``: the call's seed (without ``seed``, drawn from torch's global generator as in
        ``predict``, so ``torch.manual_seed`` governs it). At most ``batch_size`` series are decoded at a time.
        ``lookback``: forecast from each series' last ``lookback`` rows. See ``model/decoding/table.py``.
        """
        settings = TableSettings(
            pred_len=pred_len,
            id_column=id_column,
            timestamp_column=timestamp_column,
            sample_count=sample_count,
            T=T,
            top_k=top_k,
            top_p=top_p,
            seed=global_seed() if seed is None else seed,
            clean=clean,
            window=window,
            quantiles=tuple(quantiles),
            freq=freq,
            calendar=calendar,
            lookback=lookback,
            batch_size=batch_size,
        )
        return run_table(self.forecast, df, settings, on_error=on_error)

    @staticmethod
    def _frame_input(
        df, x_timestamp, y_timestamp, pred_len, T, top_k, top_p, sample_count, seed, index=None
    ) -> SeriesInput:
        name = "df" if index is None else f"df_list[{index}]"
        if not isinstance(df, pd.DataFrame):
            raise InputError(f"{name} must be a pandas DataFrame, got {type(df).__name__}")
        df = frame_columns(df, name)
        missing = [c for c in PRICE_COLUMNS if c not in df.columns]
        if missing:
            raise InputError(f"{name} is missing price column(s) {', '.join(missing)}")
        if isinstance(pred_len, bool) or not isinstance(pred_len, (int, np.integer)) or pred_len < 1:
            raise InputError(f"pred_len must be a positive integer, got {pred_len!r}")
        columns = list(PRICE_COLUMNS)
        if "volume" in df.columns:
            columns.append("volume")
            if "amount" in df.columns:
                columns.append("amount")
        try:
            candles = df[columns].to_numpy(dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InputError(f"{name}: price/volume columns must be numeric ({exc})") from None
        bad = ~np.isfinite(candles)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise InputError(f"{name}: column {columns[col]} has a NaN or infinite value at row {row}")
        if y_timestamp is None or len(y_timestamp) != pred_len:
            got = "none" if y_timestamp is None else len(y_timestamp)
            raise InputError(f"y_timestamp must have pred_len = {pred_len} entries, got {got}")
        return SeriesInput(
            candles=candles,
            timestamps=as_timestamps(x_timestamp, f"{name}: x_timestamp", len(df)),
            future_timestamps=as_timestamps(y_timestamp, f"{name}: y_timestamp", pred_len),
            temperature=T,
            top_k=top_k,
            top_p=top_p,
            sample_count=sample_count,
            seed=seed,
        )
