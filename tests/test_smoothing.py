import math

import pytest
import torch
from conftest import BinaryLinear, Constant
from scipy.stats import norm
from torch import nn

from rsbench import registry
from rsbench.data import load_dataset
from rsbench.defenses import load_defense
from rsbench.defenses.smoothing import Smoothing
from rsbench.errors import RsbenchError


def point(linear: BinaryLinear, distance: float) -> torch.Tensor:
    """An input in [0,1] at a given signed l2 distance from the linear boundary (positive: class 1)."""
    center = torch.full((4,), 0.5)
    w = linear.w / linear.w.norm()
    offset = (center @ linear.w + linear.b) / linear.w.norm()
    return (center + (distance - offset) * w).view(1, 2, 2)


def test_constant_classifier_certifies_the_all_samples_bound() -> None:
    sigma, n, alpha = 0.5, 2000, 0.001
    smoothing = Smoothing(Constant(3, 10), 10, sigma, n0=10, n=n, alpha=alpha)
    certificate = smoothing.certify(torch.rand(1, 8, 8), generator=torch.Generator().manual_seed(0))
    assert certificate.prediction == 3
    assert certificate.radius == pytest.approx(sigma * norm.ppf(alpha ** (1 / n)), rel=1e-9)


def test_linear_radius_exceeds_exact_distance_at_most_alpha_often(linear_model: BinaryLinear) -> None:
    x = point(linear_model, 0.4)
    exact = linear_model.distance(x)
    alpha, trials = 0.05, 300
    smoothing = Smoothing(linear_model, 2, sigma=0.5, n0=50, n=500, alpha=alpha)
    too_large = 0
    for seed in range(trials):
        certificate = smoothing.certify(x, generator=torch.Generator().manual_seed(seed))
        too_large += certificate.prediction is not None and certificate.radius > exact
    # binomial(trials, <= alpha): allow three standard deviations above alpha
    assert too_large / trials <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / trials)


def test_linear_radius_approaches_exact_distance_as_n_grows(linear_model: BinaryLinear) -> None:
    x = point(linear_model, 0.4)
    exact = linear_model.distance(x)
    gaps = []
    for n in (1_000, 10_000, 200_000):
        smoothing = Smoothing(linear_model, 2, sigma=0.5, n=n, batch_size=10_000)
        radii = [smoothing.certify(x, generator=torch.Generator().manual_seed(s)).radius for s in range(5)]
        gaps.append(exact - sum(radii) / len(radii))
    assert gaps[0] > gaps[1] > gaps[2] > 0
    assert gaps[2] < 0.03 * exact


def test_abstains_on_the_decision_boundary(linear_model: BinaryLinear) -> None:
    x = point(linear_model, 0.0)
    smoothing = Smoothing(linear_model, 2, sigma=0.5, n0=100, n=2000, alpha=0.001)
    for seed in range(5):
        generator = torch.Generator().manual_seed(seed)
        assert smoothing.certify(x, generator=generator).prediction is None
        assert smoothing.predict(x, generator=generator) is None


def test_predicts_far_from_the_boundary(linear_model: BinaryLinear) -> None:
    smoothing = Smoothing(linear_model, 2, sigma=0.25, n=1000)
    generator = torch.Generator().manual_seed(0)
    assert smoothing.predict(point(linear_model, 0.5), generator=generator) == 1
    assert smoothing.predict(point(linear_model, -0.5), generator=generator) == 0


def test_identical_seeds_give_identical_results(linear_model: BinaryLinear) -> None:
    smoothing = Smoothing(linear_model, 2, sigma=0.5, n=3000, batch_size=700)
    x = point(linear_model, 0.2)
    first = smoothing.certify(x, generator=torch.Generator().manual_seed(7))
    again = smoothing.certify(x, generator=torch.Generator().manual_seed(7))
    other = smoothing.certify(x, generator=torch.Generator().manual_seed(8))
    assert first == again
    assert first.p_lower != other.p_lower


class BatchRecorder(nn.Module):
    """Wraps a model and remembers the largest batch it was given."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.largest = model, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.largest = max(self.largest, x.shape[0])
        return self.model(x)


def test_noise_is_processed_in_batches(linear_model: BinaryLinear) -> None:
    recorder = BatchRecorder(linear_model)
    smoothing = Smoothing(recorder, 2, sigma=0.5, n0=10, n=25_000, batch_size=1000)
    counts = smoothing.sample_counts(point(linear_model, 0.1), 25_000, torch.Generator().manual_seed(0))
    assert int(counts.sum()) == 25_000
    assert recorder.largest == 1000


@pytest.mark.parametrize(
    "x,message",
    [
        (torch.full((1, 2, 2), float("nan")), "NaN"),
        (torch.full((1, 2, 2), 1.5), "[0, 1]"),
        (torch.full((1, 2, 2), -0.1), "[0, 1]"),
    ],
)
def test_bad_inputs_are_refused(linear_model: BinaryLinear, x: torch.Tensor, message: str) -> None:
    with pytest.raises(RsbenchError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Smoothing(linear_model, 2, sigma=0.5, n=10).certify(x)


@pytest.mark.parametrize(
    "kwargs,message",
    [({"n0": 0}, "n0"), ({"n": -5}, "n must"), ({"alpha": 0.0}, "alpha"), ({"alpha": 1.0}, "alpha")],
)
def test_bad_sampling_settings_are_refused(linear_model: BinaryLinear, kwargs: dict, message: str) -> None:
    smoothing = Smoothing(linear_model, 2, sigma=0.5, n=10)
    with pytest.raises(RsbenchError, match=message):
        smoothing.certify(torch.full((1, 2, 2), 0.5), **kwargs)


@pytest.mark.parametrize("name", ["smoothing-rgbdigits-0.25", "smoothing-rgbdigits-0.50"])
def test_shipped_rgbdigits_models_load_and_certify(name: str) -> None:
    spec = registry.get_defense(name)
    assert spec.weights.source == "package" and spec.dataset.name == "rgbdigits"
    defense = load_defense(spec)  # refuses weights whose sha256 differs from the pin
    x, y = load_dataset("rgbdigits", "test").tensors
    generator = torch.Generator().manual_seed(0)
    certificates = [defense.certify(x[i], n=1000, generator=generator) for i in range(10)]
    correct = [c.prediction == int(y[i]) and c.radius > 0 for i, c in enumerate(certificates)]
    assert sum(correct) >= 6  # the model cards report 82-96% clean accuracy
