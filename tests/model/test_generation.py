"""The fast (KV-cached, batched) decoder against the recompute oracle, and batch invariance.

Random sampling is used on purpose: with seeded per-series generators, equal logits give equal
ids, so exact id equality checks every step, including the steps where the window slides.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from model.decoding.forecast import SeriesInput
from model.decoding.generation import SeriesTokens, generate_cached, generate_recompute
from model.decoding.sampling import SamplingParams

COLUMNS = ["open", "high", "low", "close", "volume", "amount"]


def _jobs(tokenizer, frame, specs, seed0=0):
    """SeriesTokens for (length, pred_len, sample_count, params) specs cut from one input frame."""
    x = frame[COLUMNS].to_numpy(np.float32)
    x = (x - x.mean(0)) / (x.std(0) + 1e-5)
    jobs = []
    for i, (length, pred_len, samples, params) in enumerate(specs):
        s1, s2 = tokenizer.encode(torch.from_numpy(x[-length:]).unsqueeze(0))
        stamps = torch.randint(0, 7, (length + pred_len, 5))
        generator = torch.Generator().manual_seed(seed0 + i)
        jobs.append(SeriesTokens(s1[0], s2[0], stamps, pred_len, samples, params, generator))
    return jobs


def _fresh(jobs, seed0=0):
    return [
        SeriesTokens(
            j.s1, j.s2, j.stamps, j.pred_len, j.sample_count, j.params, torch.Generator().manual_seed(seed0 + i)
        )
        for i, j in enumerate(jobs)
    ]


SAMPLED = SamplingParams(temperature=1.0, top_k=0, top_p=0.9)


@pytest.mark.parametrize(
    "max_context,specs",
    [
        pytest.param(128, [(80, 16, 1, SAMPLED)], id="fits"),
        pytest.param(88, [(80, 16, 2, SAMPLED)], id="slides-midway"),
        pytest.param(48, [(80, 10, 3, SAMPLED)], id="input-longer-than-window"),
        pytest.param(
            48,
            [
                (20, 12, 2, SAMPLED),
                (47, 5, 1, SamplingParams(0.7, 5, 1.0)),
                (48, 9, 3, SamplingParams(1.3, 0, 0.5)),
                (60, 3, 1, SamplingParams(1.0, 1, 1.0)),
                (36, 20, 2, SAMPLED),
            ],
            id="mixed-lengths-pred-lens-samples-settings",
        ),
    ],
)
def test_fast_path_ids_equal_recompute_oracle(tokenizer, predictor_model, conformance_input, max_context, specs):
    jobs = _jobs(tokenizer, conformance_input, specs)
    oracle = generate_recompute(predictor_model, jobs, max_context)
    fast = generate_cached(predictor_model, _fresh(jobs), max_context)
    for (o1, o2), (f1, f2), (_, pred_len, samples, _) in zip(oracle, fast, specs):
        assert o1.shape == (samples, pred_len)
        torch.testing.assert_close(f1, o1, rtol=0, atol=0)
        torch.testing.assert_close(f2, o2, rtol=0, atol=0)


def test_batch_companions_do_not_change_a_series(tokenizer, predictor_model, conformance_input):
    specs = [(40, 12, 2, SAMPLED), (80, 6, 1, SAMPLED), (25, 20, 3, SamplingParams(0.8, 3, 1.0))]
    jobs = _jobs(tokenizer, conformance_input, specs)
    together = generate_cached(predictor_model, jobs, 48)
    for i in range(len(jobs)):
        (alone,) = generate_cached(predictor_model, [_fresh(jobs)[i]], 48)
        torch.testing.assert_close(alone[0], together[i][0], rtol=0, atol=0)
        torch.testing.assert_close(alone[1], together[i][1], rtol=0, atol=0)


def test_sample_paths_differ_and_seed_reproduces(make_predictor, conformance_input, future_timestamps):
    predictor = make_predictor(max_context=64)
    series = SeriesInput(
        candles=conformance_input[COLUMNS].to_numpy(),
        timestamps=pd.DatetimeIndex(conformance_input["timestamps"]),
        future_timestamps=pd.DatetimeIndex(future_timestamps),
        temperature=1.0,
        top_p=0.9,
        sample_count=4,
        seed=123,
    )
    (first,) = predictor.forecast([series])
    (again,) = predictor.forecast([series])
    assert first.samples.shape == (4, 16, 6)
    np.testing.assert_array_equal(first.samples, again.samples)
    assert not np.allclose(first.samples[0], first.samples[1])
    np.testing.assert_allclose(first.mean, first.samples.mean(axis=0), rtol=1e-5, atol=1e-6)
    bands = first.quantiles([0.1, 0.5, 0.9])
    assert bands.shape == (3, 16, 6)
    assert (bands[0] <= bands[1]).all() and (bands[1] <= bands[2]).all()
    series.seed = 124
    (other,) = predictor.forecast([series])
    assert not np.array_equal(other.samples, first.samples)


def test_a_cancelled_series_stops_and_leaves_the_others_untouched(make_predictor, conformance_input, future_timestamps):
    import threading

    predictor = make_predictor(max_context=64)

    def series(seed, cancel=None):
        return SeriesInput(
            candles=conformance_input[COLUMNS].to_numpy(),
            timestamps=pd.DatetimeIndex(conformance_input["timestamps"]),
            future_timestamps=pd.DatetimeIndex(future_timestamps),
            sample_count=2,
            seed=seed,
            cancel=cancel,
        )

    cancelled = threading.Event()
    cancelled.set()
    (alone,) = predictor.forecast([series(5)])
    for fast in (True, False):
        kept, dropped = predictor.forecast([series(5), series(6, cancelled)], fast=fast)
        assert dropped is None
        np.testing.assert_allclose(kept.samples, alone.samples, rtol=1e-5)
    assert predictor.forecast([series(6, cancelled)]) == [None]


def test_each_series_is_handed_over_as_soon_as_its_tokens_are_done(make_predictor, conformance_input):
    """on_done hears of a short series while a longer batch mate is still decoding, and with the
    same forecast that the call returns and that the series gets alone."""
    predictor = make_predictor(max_context=128)
    stamps = pd.DatetimeIndex(conformance_input["timestamps"])
    step = stamps[-1] - stamps[-2]

    def series(pred_len, seed):
        future = pd.date_range(stamps[-1] + step, periods=pred_len, freq=step)
        return SeriesInput(conformance_input[COLUMNS].to_numpy(), stamps, future, sample_count=2, seed=seed)

    batch = [series(40, 1), series(3, 2), series(40, 3), series(12, 4)]
    heard = []

    def on_done(i, forecast):
        heard.append((i, forecast))

    results = predictor.forecast(batch, on_done=on_done)
    assert [i for i, _ in heard] == [1, 3, 0, 2]  # in the order their pred_len ends
    for i, forecast in heard:
        assert forecast is results[i]
    (alone,) = predictor.forecast([series(3, 2)])
    np.testing.assert_allclose(results[1].samples, alone.samples, rtol=1e-5)

    heard.clear()  # the recompute path tells the same, at the end
    oracle = predictor.forecast(batch, fast=False, on_done=on_done)
    assert sorted(i for i, _ in heard) == [0, 1, 2, 3]
    np.testing.assert_allclose(oracle[3].samples, results[3].samples, rtol=1e-5)


# --- iteration-level decoding: series join and leave at any step ------------------------------------


def _engine_series(conformance_input, length, pred_len, sample_count, seed, **sampling):
    stamps = pd.DatetimeIndex(conformance_input["timestamps"])[-length:]
    step = stamps[-1] - stamps[-2]
    return SeriesInput(
        conformance_input[COLUMNS].to_numpy()[-length:],
        stamps,
        pd.date_range(stamps[-1] + step, periods=pred_len, freq=step),
        sample_count=sample_count,
        seed=seed,
        **sampling,
    )


def _run_engine(engine, arrivals):
    """Step the engine, admitting arrivals[(step, key, series)] at their steps; forecasts by key."""
    done, pending, step = {}, sorted(arrivals, key=lambda a: a[0]), 0
    while pending or not engine.idle:
        while pending and pending[0][0] <= step:
            _, key, series = pending.pop(0)
            engine.admit(key, series)
        for key, forecast in engine.step().finished:
            done[key] = forecast
        step += 1
    return done


ENGINE_SPECS = [  # length, pred_len, sample_count, sampling
    (20, 12, 2, {}),
    (47, 5, 1, {"temperature": 0.7, "top_k": 5}),
    (48, 9, 3, {"top_p": 0.5}),
    (60, 3, 1, {}),  # longer than a 48-token window from the start
    (80, 10, 2, {"temperature": 1.3}),
]


@pytest.mark.parametrize("max_context,chunk", [(48, 20), (128, 16)], ids=["slides-chunked", "fits-chunked"])
def test_series_admitted_mid_batch_get_bit_for_bit_their_solo_forecast(
    make_predictor, conformance_input, max_context, chunk
):
    """Whoever joins or leaves beside it, a series' forecast is exactly what it gets alone (and what
    the request-level path gives it), with chunked prefills and sliding windows."""
    from model.decoding.engine import DecodeEngine

    predictor = make_predictor(max_context=max_context)
    series = [
        _engine_series(conformance_input, n, p, s, seed=10 + i, **kw) for i, (n, p, s, kw) in enumerate(ENGINE_SPECS)
    ]
    engine = DecodeEngine(predictor, slots=10, chunk=chunk)
    together = _run_engine(engine, [(3 * i, i, s) for i, s in enumerate(series)])  # one joins every 3 steps
    assert sorted(together) == list(range(len(series)))
    for i, s in enumerate(series):
        (alone,) = predictor.forecast([s])
        assert np.array_equal(together[i].samples, alone.samples), f"series {i}"
        assert np.array_equal(together[i].mean, alone.mean) and together[i].seed == alone.seed
    assert engine.idle and engine.decoding == 0 and not (engine.slab.lengths > 0).any()


def test_the_engine_slab_is_allocated_once(make_predictor, conformance_input):
    from model.decoding.engine import DecodeEngine
    from model.nn.kv_cache import aligned

    engine = DecodeEngine(make_predictor(max_context=48), slots=6, chunk=16)
    tensors = [t.data_ptr() for t in (*engine.slab.k, *engine.slab.v, engine.slab.dep_k)]
    _run_engine(engine, [(i, i, _engine_series(conformance_input, 30 + i, 20, 2, seed=i)) for i in range(3)])
    assert [t.data_ptr() for t in (*engine.slab.k, *engine.slab.v, engine.slab.dep_k)] == tensors
    layers = len(engine.slab.k)
    columns = aligned(48)  # a window's columns rounded up as decode steps attend them (kv_cache.KEY_ALIGN)
    assert engine.slab.k[0].shape[2] == columns >= 48
    assert engine.slab.nbytes == 6 * columns * 4 * (
        2 * layers * engine.slab.k[0].shape[1] * engine.slab.k[0].shape[3] + 2 * 4 * engine.slab.dep_k.shape[3]
    )


def test_a_cancelled_series_leaves_the_engine_and_the_others_keep_their_numbers(make_predictor, conformance_input):
    import threading

    from model.decoding.engine import DecodeEngine

    predictor = make_predictor(max_context=48)
    keep = _engine_series(conformance_input, 30, 20, 2, seed=1)
    cancel = threading.Event()
    gone = _engine_series(conformance_input, 40, 20, 2, seed=2, cancel=cancel)
    engine = DecodeEngine(predictor, slots=6, chunk=16)
    engine.admit("keep", keep)
    engine.admit("gone", gone)
    for _ in range(5):
        engine.step()
    cancel.set()
    report = engine.step()
    assert report.dropped == ["gone"] and engine.keys() == ["keep"]
    done = _run_engine(engine, [])
    assert np.array_equal(done["keep"].samples, predictor.forecast([keep])[0].samples)


def test_a_failed_step_changes_nothing_so_evicting_the_newest_and_stepping_again_is_exact(
    make_predictor, conformance_input, monkeypatch
):
    """An out-of-memory step is retried without the newest series; the rest get their solo numbers
    (the failed step's draws are taken back), and the evicted one, run again later, does too."""
    import model.decoding.engine as engine_module

    predictor = make_predictor(max_context=48)
    series = [_engine_series(conformance_input, 25 + 10 * i, 15, 2, seed=30 + i) for i in range(3)]
    engine = engine_module.DecodeEngine(predictor, slots=8, chunk=16)
    for i, s in enumerate(series):
        engine.admit(i, s)
    for _ in range(6):
        engine.step()
    real_sample, calls = engine_module.sample, []

    def failing_sample(*args):  # the s2 draw of the next step fails: its s1 draws were already taken
        calls.append(1)
        if len(calls) == 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return real_sample(*args)

    monkeypatch.setattr(engine_module, "sample", failing_sample)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        engine.step()
    monkeypatch.setattr(engine_module, "sample", real_sample)
    newest = engine.keys()[-1]
    engine.remove(newest)
    done = _run_engine(engine, [(0, "again", series[newest])])
    done[newest] = done.pop("again")
    for i, s in enumerate(series):
        assert np.array_equal(done[i].samples, predictor.forecast([s])[0].samples), f"series {i}"


def test_a_prefill_runs_whole_for_a_series_alone_and_in_chunks_beside_others(make_predictor, conformance_input):
    """A series alone holds nobody up, so its window is prefilled in one step; beside others (decoding
    or prefilling: each waits for the step) it goes in chunks. The chunk boundaries change with the
    load, the numbers do not."""
    from model.decoding.engine import DecodeEngine

    predictor = make_predictor(max_context=64)
    long = _engine_series(conformance_input, 60, 4, 2, seed=7)
    short = _engine_series(conformance_input, 20, 30, 1, seed=8)
    (long_alone,) = predictor.forecast([long])

    lone = DecodeEngine(predictor, slots=6, chunk=16)
    lone.admit("long", long)
    lone.step()
    assert lone.series["long"].state == "decode"  # its 60-token window ran in the first step

    pair = DecodeEngine(predictor, slots=6, chunk=16)  # two prefills, nobody decoding yet: still chunks
    pair.admit("long", long)
    pair.admit("long too", long)
    pair.step()
    assert [pair.series[key].windows[0].done for key in ("long", "long too")] == [16, 0]
    for forecast in _run_engine(pair, []).values():
        assert np.array_equal(forecast.samples, long_alone.samples)

    busy = DecodeEngine(predictor, slots=6, chunk=16)
    finished = {}

    def step():
        finished.update(busy.step().finished)

    busy.admit("short", short)
    step()  # the short one's window: it decodes from now on
    busy.admit("long", long)
    windows = []
    while busy.series["long"].state == "prefill":
        step()
        windows.append(busy.series["long"].windows[0].done if busy.series["long"].windows else 60)
    assert windows == [16, 32, 48, 60]  # at most one chunk of 16 per step beside the decoding row
    other = _engine_series(conformance_input, 50, 4, 1, seed=9)
    busy.admit("long again", long)
    busy.admit("other", other)

    def prefilled(key: str, size: int) -> int:  # context tokens of a newcomer prefilled so far
        entry = busy.series[key]
        return entry.windows[0].done if entry.state == "prefill" else size

    sizes = {"long again": 60, "other": 50}
    progress = []  # per step: tokens prefilled for each newcomer
    while any(prefilled(k, n) < n for k, n in sizes.items()):
        before = {k: prefilled(k, n) for k, n in sizes.items()}
        step()
        progress.append({k: prefilled(k, n) - before[k] for k, n in sizes.items()})
    totals = [sum(p.values()) for p in progress]
    assert sum(totals) == 110 and all(16 <= t <= 31 for t in totals[:-1])  # chunks start while < 16 ran
    for key in sizes:  # round-robin: neither newcomer waits two steps in a row for a chunk
        served = [p[key] > 0 for p in progress]
        last = max(i for i, s in enumerate(served) if s)
        assert all(served[i] or served[i + 1] for i in range(last))
    done = {**finished, **_run_engine(busy, [])}
    for forecast in (_run_engine(lone, [])["long"], done["long"], done["long again"]):
        assert np.array_equal(forecast.samples, long_alone.samples)
    assert np.array_equal(done["other"].samples, predictor.forecast([other])[0].samples)
    assert np.array_equal(done["short"].samples, predictor.forecast([short])[0].samples)


# --- window="rolling": sliding-window attention instead of recomputing the window ---------------------


def _greedy_sliding_window_oracle(predictor, series, window, monkeypatch):
    """The forecast of sliding-window attention computed the slow way: the whole sequence (the input's
    last ``window`` tokens, then each new token) through the plain modules with a band mask (token i
    sees tokens i-window+1 .. i), greedy (top_k=1) so no draw is involved."""
    import torch.nn.functional as F

    from model.decoding.forecast import finish_forecast

    model = predictor.model
    features, stamps, seed = predictor._prepare(0, series)
    with torch.inference_mode():
        ((s1, s2),) = predictor._encode([features])
    start = max(0, len(s1) - window)
    t1, t2, stamps = s1[start:].clone(), s2[start:].clone(), stamps[start:]
    real = F.scaled_dot_product_attention

    def banded(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, **kwargs):
        if is_causal:
            i = torch.arange(q.shape[2])
            attn_mask = (i[None, :] <= i[:, None]) & (i[None, :] > i[:, None] - window)
        return real(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, **kwargs)

    with monkeypatch.context() as patch, torch.inference_mode():
        patch.setattr(F, "scaled_dot_product_attention", banded)
        for _ in range(series.pred_len):
            n = len(t1)
            _, h = model.decode_s1(t1[None], t2[None], stamps[None, :n])
            h_last = h[:, -1]
            next_s1 = model.head.proj_s1(h_last).argmax(-1)
            keys, values = model.dep_layer.cross_attn.keys_values(h[:, -window:])
            next_s2 = model.s2_logits_last(h_last, next_s1, keys, values).argmax(-1)
            t1, t2 = torch.cat((t1, next_s1)), torch.cat((t2, next_s2))
    job = SeriesTokens(s1, s2, stamps, series.pred_len, 1, SamplingParams(top_k=1), None)
    generated = (t1[None, -series.pred_len :], t2[None, -series.pred_len :])
    with torch.inference_mode():
        (paths,) = predictor._decode([job], [generated])
    return finish_forecast(series, features, paths, seed)


@pytest.mark.parametrize("length,pred_len", [(20, 30), (60, 25)], ids=["fills-then-rolls", "input-outgrows-window"])
def test_a_rolling_forecast_is_sliding_window_attention(
    make_predictor, conformance_input, monkeypatch, length, pred_len
):
    """window="rolling" keeps the cache and drops the oldest key/value per token: exactly a transformer
    whose tokens see the last max_context tokens (a band mask), and what exact gives until it slides."""
    import dataclasses

    predictor = make_predictor(max_context=32)
    exact = _engine_series(conformance_input, length, pred_len, 1, seed=3, top_k=1)
    rolling = dataclasses.replace(exact, window="rolling")
    (got,) = predictor.forecast([rolling])
    want = _greedy_sliding_window_oracle(predictor, rolling, 32, monkeypatch)
    np.testing.assert_allclose(got.samples, want.samples, rtol=1e-6)
    (reference,) = predictor.forecast([exact])
    fits = max(0, 32 - length)  # tokens generated before the window first slides
    assert fits == 0 or np.array_equal(got.samples[:, :fits], reference.samples[:, :fits])
    assert not np.allclose(got.samples, reference.samples)  # it is not the reference's once it slides


def test_a_rolling_series_decodes_a_token_per_step_and_keeps_its_numbers_beside_others(
    make_predictor, conformance_input
):
    """No recomputation: past the window a rolling series still gets a token at every step; and like an
    exact one its forecast is bit-for-bit what it gets alone, whoever joins or leaves beside it."""
    import dataclasses

    from model.decoding.engine import DecodeEngine

    predictor = make_predictor(max_context=48)
    rolling = [
        dataclasses.replace(_engine_series(conformance_input, n, p, s, seed=40 + i, **kw), window="rolling")
        for i, (n, p, s, kw) in enumerate(ENGINE_SPECS)
    ]
    lone = DecodeEngine(predictor, slots=4, chunk=16)
    lone.admit("r", rolling[4])  # 80 rows: its window is the last 48, prefilled in the first step
    steps = 0
    while not lone.idle:
        lone.step()
        steps += 1
    assert steps == rolling[4].pred_len  # one step per token: the window is never recomputed
    assert lone.decoding == 0 and not lone.slab.rolling.any()

    exact = [
        _engine_series(conformance_input, n, p, s, seed=10 + i, **kw) for i, (n, p, s, kw) in enumerate(ENGINE_SPECS)
    ]
    engine = DecodeEngine(predictor, slots=20, chunk=16)
    arrivals = [(2 * i, ("rolling", i), s) for i, s in enumerate(rolling)] + [
        (2 * i + 1, ("exact", i), s) for i, s in enumerate(exact)
    ]
    together = _run_engine(engine, arrivals)
    for (kind, i), forecast in together.items():
        (alone,) = predictor.forecast([(rolling if kind == "rolling" else exact)[i]])
        assert np.array_equal(forecast.samples, alone.samples), (kind, i)


def test_window_must_be_exact_or_rolling(make_predictor, conformance_input):
    import dataclasses

    from model.errors import InputError

    series = dataclasses.replace(_engine_series(conformance_input, 20, 5, 1, seed=1), window="sliding")
    with pytest.raises(InputError, match="window must be one of exact, rolling"):
        make_predictor().forecast([series])
