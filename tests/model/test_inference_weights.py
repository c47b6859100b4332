"""The fast decoder's prepared weights (model/nn/inference.py) against the plain module code.

Every piece the fast path uses — embedding tables, the trunk with and without a cache (its long
windows take the blocked causal attention), one-token decode steps at per-row positions, the
dependency layer's keys/values and both heads — must give the module path's numbers within
float32 rounding, and must follow the model when its weights change.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.nn.config import PredictorConfig
from model.nn.inference import InferenceWeights
from model.nn.predictor import Kronos

TOL = 1e-4


@pytest.fixture(scope="module")
def model() -> Kronos:
    torch.manual_seed(0)
    m = Kronos(PredictorConfig(s1_bits=6, s2_bits=6, n_layers=2, d_model=64, n_heads=4, ff_dim=96))
    with torch.no_grad():  # non-trivial norm weights and biases, so folding them is really tested
        for name, p in m.named_parameters():
            if name.endswith("norm.weight") or ".norm" in name:
                p.uniform_(0.5, 1.5)
            elif name.endswith("bias"):
                p.normal_(0, 0.1)
    return m.eval()


def _inputs(batch: int, length: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    s1 = torch.randint(0, 64, (batch, length), generator=g)
    s2 = torch.randint(0, 64, (batch, length), generator=g)
    stamps = torch.stack([torch.randint(0, n, (batch, length), generator=g) for n in (60, 24, 7, 32, 13)], dim=-1)
    return s1, s2, stamps


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape
    assert (a - b).abs().max().item() < TOL


@pytest.mark.parametrize("length", [1, 7, 128, 300])
@torch.inference_mode()
def test_embedding_and_trunk_match_the_module_path(model, length):
    net = InferenceWeights.of(model)
    s1, s2, stamps = _inputs(2, length)
    x = model.embed(s1, s2, stamps)
    _close(net.embed(s1, s2, stamps), x)
    _close(net.trunk(x), model.trunk(x))


@torch.inference_mode()
def test_prefill_then_decode_steps_match_the_full_recompute(model):
    """Rows of different lengths: prefill, then one token per row per step at its own position."""
    net = InferenceWeights.of(model)
    lengths = np.array([150, 90, 131])
    steps = 6
    s1, s2, stamps = _inputs(3, int(lengths.max()) + steps, seed=2)
    x = model.embed(s1, s2, stamps)
    cache = model.new_cache(rows=3, capacity=int(lengths.max()) + steps, lengths=lengths)
    net.trunk(x[:, : lengths.max()], cache)
    for _ in range(steps):
        cur = cache.lengths.copy()
        new = x[torch.arange(3), torch.as_tensor(cur)].unsqueeze(1)
        cache.begin_step()
        h = net.trunk(new, cache)[:, 0]
        cache.end_step()
        for r, n in enumerate(cur):
            _close(h[r], model.trunk(x[r : r + 1, : n + 1])[0, -1])


@torch.inference_mode()
def test_heads_and_dependency_layer_match_the_module_path(model):
    net = InferenceWeights.of(model)
    s1, s2, stamps = _inputs(3, 40, seed=3)
    h = model.trunk(model.embed(s1, s2, stamps))
    keys, values = model.dep_layer.cross_attn.keys_values(h)
    net_keys, net_values = net.dep_keys_values(h)
    _close(net_keys, keys)
    _close(net_values, values)
    step_s1, step_keys, step_values = net.step_heads(h[:, -1])  # a decode step's fused product
    _close(step_s1, model.head.proj_s1(h[:, -1]))
    _close(step_keys, keys[:, :, -1:])
    _close(step_values, values[:, :, -1:])
    chosen = torch.tensor([5, 0, 63])
    _close(net.s1_logits(h[:, -1]), model.head.proj_s1(h[:, -1]))
    _close(net.s2_logits(h[:, -1], chosen, keys, values), model.s2_logits_last(h[:, -1], chosen, keys, values))
    # ... and equal to the reference-style s2 over the whole window, at its last position
    _close(net.s2_logits(h[:, -1], chosen, keys, values), model.decode_s2(h, chosen.unsqueeze(1))[:, -1])


def test_prepared_weights_follow_weight_changes(model):
    s1, s2, stamps = _inputs(1, 20, seed=4)
    fresh = Kronos(model.config).eval()
    fresh.load_state_dict(model.state_dict())
    before = InferenceWeights.of(fresh)
    assert InferenceWeights.of(fresh) is before  # cached while nothing changes

    other = Kronos(model.config).eval()  # different random weights, loaded in place
    fresh.load_state_dict(other.state_dict())
    with torch.inference_mode():
        x = fresh.embed(s1, s2, stamps)
        assert InferenceWeights.of(fresh) is not before
        _close(InferenceWeights.of(fresh).trunk(x), other.trunk(x))

    with torch.no_grad():  # an in-place update (as an optimizer step makes)
        fresh.transformer[0].ffn.w2.weight.mul_(2)
    with torch.inference_mode():
        x = fresh.embed(s1, s2, stamps)
        _close(InferenceWeights.of(fresh).trunk(x), fresh.trunk(x))
