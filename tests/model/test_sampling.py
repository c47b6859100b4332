"""Sampling semantics: temperature, top-k (ties kept, top-p then skipped), top-p nucleus, inverse CDF."""

from __future__ import annotations

import torch

from model.decoding.sampling import filter_logits, sample


def _params(n, t=1.0, k=0, p=1.0):
    return torch.full((n,), t), torch.full((n,), k, dtype=torch.long), torch.full((n,), p)


def test_top_k_keeps_the_k_best_and_ignores_top_p():
    logits = torch.tensor([[1.0, 4.0, 3.0, 2.0, 0.0]])
    kept = torch.isfinite(filter_logits(logits, *_params(1, k=2, p=0.01)))
    assert kept.tolist() == [[False, True, True, False, False]]


def test_top_p_keeps_smallest_nucleus_reaching_p_and_always_the_best():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    assert torch.isfinite(filter_logits(logits, *_params(1, p=0.79))).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, *_params(1, p=0.81))).tolist() == [[True, True, True, False]]
    assert torch.isfinite(filter_logits(logits, *_params(1, p=0.1))).tolist() == [[True, False, False, False]]


def test_temperature_scales_logits():
    logits = torch.tensor([[2.0, 4.0]])
    torch.testing.assert_close(filter_logits(logits, *_params(1, t=2.0)), torch.tensor([[1.0, 2.0]]))


def test_inverse_cdf_draws_follow_the_distribution():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0]]).log_softmax(-1).expand(4, 4)
    u = torch.tensor([0.0, 0.26, 0.51, 0.99])
    assert sample(logits, *_params(4), u).tolist() == [0, 1, 2, 3]


def test_zero_probability_tokens_are_never_drawn():
    logits = torch.tensor([[-float("inf"), 0.0, -float("inf"), 0.0]]).expand(3, 4)
    ids = sample(logits, *_params(3), torch.tensor([0.0, 0.5, 0.999999]))
    assert set(ids.tolist()) <= {1, 3}


def test_draws_walk_the_kept_tokens_from_the_most_probable():
    probs = torch.tensor([0.1, 0.6, 0.3])
    logits = probs.log().expand(3, 3)
    assert sample(logits, *_params(3), torch.tensor([0.0, 0.65, 0.95])).tolist() == [1, 2, 0]


def test_each_token_is_drawn_with_its_filtered_probability():
    """An even grid of uniforms gives every kept token its exact share of the draws."""
    probs = torch.tensor([0.05, 0.5, 0.1, 0.35])
    n = 2000
    u = (torch.arange(n) + 0.5) / n
    full = torch.bincount(sample(probs.log().expand(n, 4), *_params(n), u), minlength=4)
    torch.testing.assert_close(full / n, probs, atol=1 / n, rtol=0)
    # top_p 0.8 keeps 0.5 and 0.35 (the crossing token stays), renormalized over 0.85
    nucleus = torch.bincount(sample(probs.log().expand(n, 4), *_params(n, p=0.8), u), minlength=4)
    torch.testing.assert_close(nucleus / n, torch.tensor([0, 0.5, 0, 0.35]) / 0.85, atol=1 / n, rtol=0)


def test_per_row_settings():
    logits = torch.tensor([[1.0, 3.0, 2.0]]).expand(3, 3)
    temperature, top_k, top_p = torch.tensor([1.0, 1.0, 1.0]), torch.tensor([1, 0, 2]), torch.tensor([1.0, 1.0, 1.0])
    ids = sample(logits, temperature, top_k, top_p, torch.tensor([0.999, 0.999, 0.999]))
    assert ids.tolist() == [1, 0, 2]  # greedy; the least probable of all three; the second of the best two


def test_the_fast_descending_order_is_torch_sorts_stable_order():
    """sampling._descending_order (NumPy's vectorized sort of distinct int64 keys on a CPU) gives exactly
    torch.sort(descending=True, stable=True)'s indices: ties in vocabulary order, -0.0 equal to 0.0, -inf last."""
    from model.decoding.sampling import _descending_order

    g = torch.Generator().manual_seed(0)
    for trial in range(60):
        rows, vocab = int(torch.randint(2, 40, (), generator=g)), int(torch.randint(2, 1100, (), generator=g))
        x = torch.randn(rows, vocab, generator=g) * 10.0 ** int(torch.randint(-3, 4, (), generator=g))
        if trial % 3 == 0:
            x = x.round()  # many ties
        if trial % 5 == 0:
            x[0, : vocab // 2] = float("-inf")
        if trial % 7 == 0:
            x[:, 0] = -0.0
        assert torch.equal(_descending_order(x), torch.sort(x, dim=-1, descending=True, stable=True).indices)
