"""The rule of model/nn/kernels.py and model/nn/attention.py: a row's numbers do not depend on its batch mates.

Pinned bit for bit at the level where it used to break (before, a row's hidden state and logits
changed in their last bits with the rows beside it: MKL's 1-row product sums in another order than
its GEMM, and attention's products change with the number of key columns): every product kernel
at 1, a few and many rows; a decode step for rows of different lengths, alone and together; a
prefill alone, right-padded beside longer ones, and in chunks of any size; whole forecasts.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.nn import kernels
from model.nn.config import PredictorConfig
from model.nn.inference import InferenceWeights
from model.nn.kv_cache import KVSlab
from model.nn.precision import cpu_has_bf16
from model.nn.predictor import Kronos

# Kronos-small's products (d_model 512, ff 1024, 10-bit heads) in two layers, and the conformance model's shape.
SHAPES = {
    "small-shaped": PredictorConfig(s1_bits=10, s2_bits=10, n_layers=2, d_model=512, n_heads=8, ff_dim=1024),
    "tiny": PredictorConfig(s1_bits=6, s2_bits=6, n_layers=2, d_model=32, n_heads=4, ff_dim=64),
}
ROWS = (1, 2, 3, 8, 17, 33, 64, 129)


NETS = [
    ("small-shaped", "fp32"),
    ("tiny", "fp32"),
    ("small-shaped", "bf16"),
    ("small-shaped", "int8"),
    ("tiny", "bf16"),
]


@pytest.fixture(scope="module", params=NETS, ids=["-".join(n) for n in NETS])
def net(request):
    shape, precision = request.param
    if precision != "fp32" and not cpu_has_bf16():
        pytest.skip("this CPU has no bf16 arithmetic")
    torch.manual_seed(0)
    model = Kronos(SHAPES[shape]).eval()
    return model, InferenceWeights.of(model, precision)


def _products(net: InferenceWeights) -> list[kernels.Product]:
    blocks = [p for b in net.blocks for p in (b.qkv, b.out, b.w13, b.w2)]
    return blocks + [net.step_heads_product, net.dep_kv, net.head_s1, net.head_s2, net.dep_out]


@torch.inference_mode()
def test_every_product_gives_a_row_the_same_bits_alone_and_among_few_or_many(net):
    _, net = net
    assert not kernels.NOT_INVARIANT  # the preparation's own check passed for every weight
    g = torch.Generator().manual_seed(3)
    for product in _products(net):
        x = torch.randn(max(ROWS), product.shape[0], generator=g)
        for bulk in (False, True):  # a decode step's rows, a prefill's
            alone = torch.cat([product(x[i : i + 1], bulk=bulk) for i in range(max(ROWS))])
            for rows in ROWS:
                assert torch.equal(product(x[:rows], bulk=bulk), alone[:rows]), (product.kind, product.shape, rows)


def _tokens(cfg: PredictorConfig, rows: int, length: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    vocab = 2**cfg.s1_bits
    s1, s2 = (torch.randint(0, vocab, (rows, length), generator=g) for _ in range(2))
    stamps = torch.stack([torch.randint(0, n, (rows, length), generator=g) for n in (60, 24, 7, 32, 13)], dim=-1)
    return s1, s2, stamps


@torch.inference_mode()
def test_a_decode_step_gives_a_row_its_own_bits_beside_rows_of_other_lengths(net):
    model, net = net
    lengths = np.array([100, 37, 150, 64, 129, 90, 101, 17])
    width = int(lengths.max()) + 1
    x = net.embed(*_tokens(model.config, len(lengths), width))

    def step(rows: list[int]):
        cache = model.new_cache(rows=len(rows), capacity=width, lengths=lengths[rows])
        for j, r in enumerate(rows):  # each row's prefill alone, copied into the shared cache
            alone = model.new_cache(rows=1, capacity=width, lengths=lengths[[r]])
            net.trunk(x[r : r + 1, : lengths[r]], alone)
            for shared, own in zip(cache.layers, alone.layers):
                shared.k[j], shared.v[j] = own.k[0], own.v[0]
        cache.begin_step()
        h = net.trunk(x[torch.as_tensor(rows), torch.as_tensor(lengths[rows])].unsqueeze(1), cache)[:, 0]
        s1_logits, keys, values = net.step_heads(h)
        dep_keys, dep_values, mask = cache.dep.append(keys, values)
        chosen = torch.as_tensor(rows) % 7  # an s1 per row, the same alone and together
        return h, s1_logits, net.s2_logits(h, chosen, dep_keys, dep_values, mask)

    alone = [step([r]) for r in range(len(lengths))]
    for n in (2, 3, len(lengths)):
        together = step(list(range(n)))
        for r in range(n):
            for got, want in zip(together, alone[r]):
                assert torch.equal(got[r], want[0]), (n, r)


@torch.inference_mode()
def test_a_prefill_gives_a_row_its_own_bits_padded_in_a_batch_and_in_chunks_of_any_size(net):
    model, net = net
    cfg = model.config
    lengths = [100, 37, 300]
    x = net.embed(*_tokens(cfg, 3, max(lengths), seed=2))
    alone = [net.trunk(x[i : i + 1, :n])[0] for i, n in enumerate(lengths)]
    together = net.trunk(x)  # right-padded to the longest
    for i, n in enumerate(lengths):
        assert torch.equal(together[i, :n], alone[i])
    heads, head_dim = cfg.n_heads, cfg.d_model // cfg.n_heads
    for chunk in (1, 16, 100, 128, 300):
        slab = KVSlab(slots=1, width=320, layers=[(heads, head_dim)] * cfg.n_layers, dep=(4, cfg.d_model // 4))
        parts = [net.prefill_chunk(x[2:3, s : s + chunk], slab.layer_views(0), s)[0] for s in range(0, 300, chunk)]
        assert torch.equal(torch.cat(parts), alone[2]), chunk


def test_a_forecast_is_bit_for_bit_the_same_alone_and_in_a_batch(make_predictor, conformance_input):
    from model.decoding.forecast import SeriesInput

    frame = conformance_input
    cols = ["open", "high", "low", "close", "volume", "amount"]

    def series(n: int, pred_len: int, paths: int, seed: int) -> SeriesInput:
        window = frame.iloc[-n:]
        step = window["timestamps"].iloc[-1] - window["timestamps"].iloc[-2]
        future = [window["timestamps"].iloc[-1] + step * (i + 1) for i in range(pred_len)]
        return SeriesInput(
            candles=window[cols].to_numpy(), timestamps=window["timestamps"], future_timestamps=future,
            sample_count=paths, seed=seed,
        )  # fmt: skip

    predictor = make_predictor(max_context=64)
    specs = [(40, 12, 2, 1), (64, 20, 1, 2), (25, 30, 3, 3), (50, 8, 1, 4)]  # some slide past the window
    together = predictor.forecast([series(*s) for s in specs])
    for spec, forecast in zip(specs, together):
        (alone,) = predictor.forecast([series(*spec)])
        assert np.array_equal(forecast.samples, alone.samples), spec
