"""The differentiable smoothed view and the success function, against independent references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import norm
from statsmodels.stats.proportion import multinomial_proportions_confint
from torch import nn

from rsbench.attacks.smoothed_view import SmoothedView, goodman_bounds
from rsbench.attacks.success import is_adversarial, make_judge
from rsbench.defenses.smoothing import Smoothing


def small_net(num_classes: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, num_classes)).eval()


@pytest.mark.parametrize(
    "counts",
    [[1400, 60, 30, 10], [1500, 0, 0, 0], [700, 690, 110, 0], [3, 2], [0, 5, 995], list(range(1, 11))],
)
@pytest.mark.parametrize("alpha", [0.005, 0.05])
def test_goodman_bounds_match_statsmodels(counts: list[int], alpha: float) -> None:
    counts_np = np.array(counts)
    expected = multinomial_proportions_confint(counts_np, alpha=alpha, method="goodman")
    freq = torch.tensor(counts_np / counts_np.sum(), dtype=torch.float64)
    lower, upper = goodman_bounds(freq, int(counts_np.sum()), alpha)
    np.testing.assert_allclose(lower.numpy(), expected[:, 0], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(upper.numpy(), expected[:, 1], rtol=1e-12, atol=1e-14)


def test_bounds_follow_algorithm_2() -> None:
    view = SmoothedView(small_net(), 4, 0.5, num_noise=300, alpha=0.01)
    out = view.bounds(torch.rand(1, 8, 8), torch.Generator().manual_seed(0))
    assert float(out.freq.sum()) == pytest.approx(1.0, abs=1e-5)
    order = out.freq.detach().argsort(descending=True)
    assert (out.top, out.runner_up) == (int(order[0]), int(order[1]))
    expected = multinomial_proportions_confint(out.freq.detach().numpy() * 300, alpha=0.01, method="goodman")
    assert float(out.e0_lower) == pytest.approx(expected[out.top, 0], rel=1e-5)
    assert float(out.e1_upper) == pytest.approx(expected[out.runner_up, 1], rel=1e-5)
    radius = 0.25 * (norm.ppf(expected[out.top, 0]) - norm.ppf(expected[out.runner_up, 1]))
    assert float(out.radius) == pytest.approx(radius, rel=1e-4, abs=1e-6)


def plain_autograd_gradient(view: SmoothedView, x: torch.Tensor, seed: int) -> torch.Tensor:
    """The radius's gradient with every noisy copy in one autograd graph: the unchunked reference."""
    seeds = torch.randint(0, 2**62, (2,), generator=torch.Generator().manual_seed(seed)).tolist()
    noise, gumbel = (torch.cat(parts) for parts in zip(*view.noise(x, (int(seeds[0]), int(seeds[1])))))
    leaf = x.clone().requires_grad_(True)
    freq = view.soft_votes(leaf, noise, gumbel).mean(0)
    lower, upper = goodman_bounds(freq, view.num_noise, view.alpha)
    top, runner_up = freq.detach().topk(2).indices.tolist()
    radius = view.sigma / 2 * (torch.special.ndtri(lower[top]) - torch.special.ndtri(upper[runner_up]))
    return torch.autograd.grad(radius, leaf)[0]


@pytest.mark.parametrize("chunk_size", [600, 128, 37])
def test_chunked_gradient_equals_the_unchunked_gradient(chunk_size: int) -> None:
    x = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(1))
    whole = SmoothedView(small_net(), 4, 0.5, num_noise=600, chunk_size=600)
    chunked = SmoothedView(small_net(), 4, 0.5, num_noise=600, chunk_size=chunk_size)
    value_whole, _, grad_whole = whole.grad(x, lambda out, _: out.radius, torch.Generator().manual_seed(5))
    value_chunked, _, grad_chunked = chunked.grad(x, lambda out, _: out.radius, torch.Generator().manual_seed(5))
    reference = plain_autograd_gradient(whole, x, seed=5)
    assert value_chunked == pytest.approx(value_whole, rel=1e-5)
    assert float(reference.abs().max()) > 0
    torch.testing.assert_close(grad_whole, reference, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(grad_chunked, reference, rtol=1e-4, atol=1e-6)


def test_loss_terms_of_the_input_reach_the_gradient() -> None:
    view = SmoothedView(small_net(), 4, 0.5, num_noise=50)
    x = torch.rand(1, 8, 8)
    clean = x.clone()
    _, _, grad = view.grad(x + 0.1, lambda out, leaf: 0 * out.radius + (leaf - clean).norm(), torch.Generator())
    torch.testing.assert_close(grad, torch.full_like(x, 0.1) / (0.1 * 8))


def reference_is_adversarial(counts: np.ndarray, original: int, alpha: float) -> bool:
    """Equation 6 read literally with statsmodels' intervals: some j != original beats every other class."""
    bounds = multinomial_proportions_confint(counts, alpha=alpha, method="goodman")
    return any(
        all(bounds[j, 0] > bounds[k, 1] for k in range(len(counts)) if k != j)
        for j in range(len(counts))
        if j != original
    )


def test_success_function_matches_equation_6() -> None:
    rng = np.random.default_rng(0)
    verdicts = []
    for _ in range(300):
        probabilities = rng.dirichlet(np.full(4, 0.3))
        counts = rng.multinomial(500, probabilities)
        original = int(rng.integers(4))
        verdict = is_adversarial(torch.from_numpy(counts), original, 0.005)
        assert verdict == reference_is_adversarial(counts, original, 0.005)
        verdicts.append(verdict)
    assert 0 < sum(verdicts) < len(verdicts)  # both outcomes exercised
    assert not is_adversarial(torch.tensor([10, 990, 0]), 1, 0.005)  # the original class is not an attack
    assert not is_adversarial(torch.tensor([500, 500, 0]), 2, 0.005)  # a tie is not a confident prediction


def test_judge_counts_fresh_hard_votes(linear_model: nn.Module) -> None:
    view = Smoothing(linear_model, 2, 0.25).surrogate(num_noise=400, alpha=0.005)
    assert int(view.hard_counts(torch.zeros(4), torch.Generator()).sum()) == 400
    far_positive = torch.tensor([1.0, 0.0, 0.0, 1.0])  # w.x + b = 2.3, class 1 by 9 sigma
    judge = make_judge(view, 0, torch.Generator().manual_seed(0))
    assert judge(far_positive)
    assert not make_judge(view, 1, torch.Generator().manual_seed(0))(far_positive)
    assert not judge(torch.zeros(4))
