"""The effective sampling settings: one function (``effective_sampling``) decides them for every tool
that picks them for you — ``/v1/predict/single`` and batch items, backtest windows, calibrated
predict, the page (which reads them from ``/ui/config.json``) and ``kronos-forecast`` (one series or
a universe) — so "this seed with these settings" always gives the same forecast, whichever way in.

**The one set of defaults.** A setting the caller gives is always kept. The others:

- **one sample path** (``sample_count`` 1, the default of predict and the CLI): **T 1.0, top_p 0.9**
  (``PLAIN``), upstream Kronos' defaults: a point forecast, at the lower point error.
- **several sample paths**: **T 1.1, top_p 0.95** (``BAND``). Whatever is read from several paths —
  quantile bands, P(up), the paths themselves, a backtest's coverage and CRPS, calibrated bands —
  reads their spread, and nucleus sampling at 0.9 cuts the tails of every step's token distribution,
  so the paths spread too little: measured with the bundled kronos-demo on held-out index candles
  (``python benchmarks/forecast_quality.py --heldout --grid 1:0.9 1:1 1.1:0.95``, table in
  ``model/bundled/kronos-demo/README.md``), the raw 10-90% band covers 65% at 1.0 / 0.9 and 70% at
  1.1 / 0.95, at a slightly higher point error (1.19x against 1.11x the last-value MAE; send T 1.0
  and top_p 0.9 for the lower one).
- ``top_k`` 0 (off; with ``top_k > 0`` top_p is not applied, as upstream, #262).

Why the number of paths decides and not the ``quantiles`` field: ``sample_count`` is itself a
sampling setting, echoed with the others, so the settings an answer reports are all it takes to
reproduce it; a backtest (20 paths by default, bands scored) therefore samples as a predict with as
many paths does, and a window's rows, ``sample_count`` and seed reproduce it through predict, with or
without ``quantiles``.

Not decided here: the Python API (``KronosPredictor.predict``, ``predict_df``) keeps upstream's
signature defaults (T 1.0, top_p 0.9), a drop-in; and the original service's request shape
(``candles`` / ``overrides``) keeps that service's (``PLAIN``, whatever the paths).

Every answer echoes what was used (the service's ``sampling`` object, the CLI's closing note), seed
included. Plain Python, no torch: the CLI and the service import it before any model is loaded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class Sampling:
    """The sampling settings a forecast runs with (``seed`` None: drawn when it runs)."""

    temperature: float
    top_k: int
    top_p: float
    sample_count: int
    seed: int | None = None

    def with_seed(self, seed: int | None) -> Sampling:
        return replace(self, seed=seed)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


TOP_K = 0
SAMPLE_COUNT = 1
PLAIN = {"temperature": 1.0, "top_p": 0.9}  # one sample path: upstream's defaults
BAND = {"temperature": 1.1, "top_p": 0.95}  # several paths: measured for their spread (see the docstring)


def effective_sampling(
    *,
    sample_count: int | None = None,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    plain: bool = False,
) -> Sampling:
    """The settings a forecast samples with: each one given is kept (None: not given), the rest from
    ``BAND`` with 2 or more sample paths, else from ``PLAIN`` (``plain``: always ``PLAIN``, the original
    service's request shape). See the module docstring."""
    paths = SAMPLE_COUNT if sample_count is None else sample_count
    base = PLAIN if plain or paths < 2 else BAND
    return Sampling(
        temperature=base["temperature"] if temperature is None else temperature,
        top_k=TOP_K if top_k is None else top_k,
        top_p=base["top_p"] if top_p is None else top_p,
        sample_count=paths,
        seed=seed,
    )


def describe(sampling: Sampling) -> str:
    """``T 1.1, top_p 0.95, top_k 0, 20 sample paths, seed 7``: how the CLI says what it used."""
    paths = f"{sampling.sample_count} sample path{'s' if sampling.sample_count != 1 else ''}"
    text = f"T {sampling.temperature:g}, top_p {sampling.top_p:g}, top_k {sampling.top_k}, {paths}"
    return text if sampling.seed is None else f"{text}, seed {sampling.seed}"


def defaults() -> dict[str, Any]:
    """The defaults as a client shows them (``/ui/config.json``'s ``sampling``)."""
    return {"one_path": dict(PLAIN), "several_paths": dict(BAND), "top_k": TOP_K, "sample_count": SAMPLE_COUNT}


# --- the window: where a forecast outgrows the model's context ------------------------------------
# Step i (0 = the first forecast candle) is predicted from the rows plus the i candles before it. While
# that fits in max_context tokens the step costs one token (the cache); past it the window slides: the
# exact path recomputes the whole max_context-token window for that step (the reference's arithmetic),
# about max_context times the work. Nothing else changes, so a forecast that slides says so.


def rows_that_fit(pred_len: int, max_context: int) -> int:
    """The rows a forecast of ``pred_len`` uses by default so that rows + pred_len stay within max_context
    (at least 2): every token it reads and writes fits in the window, which never slides. (One row more
    would not slide either, the last candle being written, not read; the round rule is easier to keep.)"""
    return max(2, max_context - pred_len)


def sliding_steps(rows: int, pred_len: int, max_context: int) -> int:
    """How many of the ``pred_len`` steps recompute the whole window (0: the forecast fits)."""
    return max(0, min(pred_len, rows + pred_len - 1 - max_context))


def sliding_note(
    rows: int,
    pred_len: int,
    max_context: int,
    fewer: str = "send at most the last {fit} rows",
    rolling: str = '"window": "rolling"',
) -> str | None:
    """What a forecast that slides is told: that it does, what it costs and the two ways out (``fewer``
    rows, a ``rolling`` window), in the caller's words; None when it fits."""
    steps = sliding_steps(rows, pred_len, max_context)
    if not steps:
        return None
    fit = rows_that_fit(pred_len, max_context)
    # Measured (bundled model, CPU, 20 paths, pred_len 20): 494 rows (1 step slides) 2x the time of 493,
    # 512 rows (19 steps) 17x, 1,000 rows (20) 42x: roughly steps + 1 times, more with longer histories.
    return (
        f"the window slides: {rows} rows + pred_len {pred_len} outgrow the model's max_context of {max_context}, "
        f"so {steps} of the {pred_len} steps recompute the whole {max_context}-token window for every sample path "
        f"instead of adding one token: roughly {steps + 1}x the time of a forecast that fits, or more. Two ways out: "
        f"{fewer.format(fit=fit)}, or {rolling} (keeps the cache and drops the oldest token: fast, not the "
        "reference's numbers once it slides)"
    )
