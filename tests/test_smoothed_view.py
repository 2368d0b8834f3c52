"""The differentiable smoothed view and the success function, against independent references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import norm
from statsmodels.stats.proportion import multinomial_proportions_confint
from torch import nn

from rsbench.attacks.success import is_adversarial, make_judge
from rsbench.defenses.smoothed_view import SmoothedView, goodman_bounds
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


def plain_autograd_gradient(view: SmoothedView, x: torch.Tensor, seed: int, draws: int) -> torch.Tensor:
    """The mean radius's gradient over `draws` sets of N copies, all in one autograd graph: the unchunked reference."""
    seeds = torch.randint(0, 2**62, (2,), generator=torch.Generator().manual_seed(seed)).tolist()
    owner, noise, gumbel = (torch.cat(parts) for parts in zip(*view.noise(x, (int(seeds[0]), int(seeds[1])), draws)))
    assert owner.tolist() == [c // view.num_noise for c in range(draws * view.num_noise)]
    leaf = x.clone().requires_grad_(True)
    votes = view.soft_votes(leaf.unsqueeze(0), noise, gumbel)
    radii = []
    for draw in range(draws):
        freq = votes[draw * view.num_noise : (draw + 1) * view.num_noise].mean(0)
        lower, upper = goodman_bounds(freq, view.num_noise, view.alpha)
        top, runner_up = freq.detach().topk(2).indices.tolist()
        radii.append(view.sigma / 2 * (torch.special.ndtri(lower[top]) - torch.special.ndtri(upper[runner_up])))
    return torch.autograd.grad(sum(radii) / draws, leaf)[0]


@pytest.mark.parametrize("draws", [1, 3])
@pytest.mark.parametrize("chunk_size", [1800, 600, 128, 37])
def test_chunked_gradient_equals_the_unchunked_gradient(chunk_size: int, draws: int) -> None:
    x = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(1))
    whole = SmoothedView(small_net(), 4, 0.5, num_noise=600, chunk_size=600 * draws)
    chunked = SmoothedView(small_net(), 4, 0.5, num_noise=600, chunk_size=chunk_size)
    value_whole, _, grad_whole = whole.grad(x, lambda out, _: out.radius, torch.Generator().manual_seed(5), draws=draws)
    value_chunked, _, grad_chunked = chunked.grad(
        x, lambda out, _: out.radius, torch.Generator().manual_seed(5), draws=draws
    )
    reference = plain_autograd_gradient(whole, x, seed=5, draws=draws)
    assert value_chunked == pytest.approx(value_whole, rel=1e-5)
    assert float(reference.abs().max()) > 0
    torch.testing.assert_close(grad_whole, reference, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(grad_chunked, reference, rtol=1e-4, atol=1e-6)


def test_draws_are_independent_sets_of_n_copies() -> None:
    view = SmoothedView(small_net(), 4, 0.5, num_noise=400, chunk_size=150)
    x = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(2))
    freq = view.frequencies(x, torch.Generator().manual_seed(3), draws=4)
    assert freq.shape == (4, 4)
    torch.testing.assert_close(freq.sum(1), torch.ones(4), rtol=0, atol=1e-5)
    assert len({tuple(row.tolist()) for row in freq}) == 4  # each draw has its own noise
    # the first draw is the single-draw frequency of the same generator state: draws extend one stream
    torch.testing.assert_close(freq[0], view.frequencies(x, torch.Generator().manual_seed(3))[0])


def test_hard_radius_is_equation_3_on_hard_votes(linear_model: nn.Module) -> None:
    view = Smoothing(linear_model, 2, 0.25).surrogate(num_noise=1000, alpha=0.005)
    x = torch.tensor([0.6, 0.1, 0.3, 0.2])
    counts = view.hard_counts(x, torch.Generator().manual_seed(4)).numpy()
    bounds = multinomial_proportions_confint(counts, alpha=0.005, method="goodman")
    top, runner_up = np.argsort(counts)[::-1][:2]
    expected = 0.125 * (norm.ppf(bounds[top, 0]) - norm.ppf(bounds[runner_up, 1]))
    assert view.hard_radius(x, torch.Generator().manual_seed(4)) == pytest.approx(expected, rel=1e-9)
    # the smoothed linear classifier's exact radius is the distance to the boundary; eq. 3 stays below it
    assert 0 < expected < linear_model.distance(x)


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
