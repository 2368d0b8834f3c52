"""Attacks on a binary linear classifier, whose exact minimum adversarial distance is known.

Smoothing a linear classifier gives the same decision boundary, so no input closer than
|w.x + b| / ||w|| can be adversarial for the smoothed classifier, and a good minimum-norm
attack lands just beyond it (success needs the new class's Goodman lower bound above the
old class's upper bound, which costs a little extra distance).
"""

from __future__ import annotations

import pytest
import torch
from conftest import BinaryLinear, harness

from rsbench import registry
from rsbench.attacks.base import Attack, Target, Tracker, ViewParams, view_options
from rsbench.defenses.smoothing import Smoothing

SIGMA = 0.25
EVASION_ATTACKS = sorted(
    name
    for name, spec in registry.all_specs("attacks").items()
    if spec.goal == "evasion" and issubclass(registry.resolve(spec.implementation).Params, ViewParams)
)
"""Evasion attacks on smoothing (they receive its view); bounded PGD on GloRo and KW is tested in test_bounded_pgd."""
SMALL_BUDGET = {"num_noise": 300, "iterations": 20, "eot": 2, "steps": 20, "select_n": 1000}
"""Keeps every registered attack quick on the toy problems: whichever of these fields its params have."""


def small(name: str) -> Attack:
    """The registered attack with a small budget."""
    spec = registry.get_attack(name)  # validates params with the implementation's Params model
    implementation = registry.resolve(spec.implementation)
    fields = implementation.Params.model_fields
    return implementation(registry.attack_params(spec), **{k: v for k, v in SMALL_BUDGET.items() if k in fields})


def linear_problem(distance: float, seed: int) -> tuple[Smoothing, torch.Tensor, float]:
    """A confident linear classifier (logits scaled by 50) and a mid-grey point at `distance` from its boundary."""
    generator = torch.Generator().manual_seed(seed)
    w = torch.randn(64, generator=generator)
    w /= w.norm()
    x = (0.5 + 0.05 * torch.randn(1, 8, 8, generator=generator)).clamp(0, 1)
    b = -float(w @ x.flatten()) - distance  # class 0 at x
    model = BinaryLinear(50 * w, 50 * b)
    assert model.distance(x) == pytest.approx(distance, rel=1e-5)
    return Smoothing(model, 2, SIGMA), x, distance


def attack(name: str, defense: Smoothing, x: torch.Tensor, seed: int = 0, budget: dict[str, object] | None = None):
    """Run a registered attack (params overridden by `budget`) through the engine's evasion job: its own
    view; the protocol's judge (N 1500, alpha 0.005), confirmation (15,000 copies) and Cohen radius."""
    spec = registry.get_attack(name)
    if budget is not None:
        fields = registry.resolve(spec.implementation).Params.model_fields
        spec = spec.model_copy(update={"params": {**spec.params, **{k: v for k, v in budget.items() if k in fields}}})
    record, example = harness(defense, [spec], sigma=defense.sigma, seed=seed).attack(name, x, 0, seed, None)
    return record, example


@pytest.mark.parametrize("name", ["caa", "caa-direct"])
@pytest.mark.parametrize(("distance", "seed"), [(0.7, 0), (1.0, 1)])
def test_certification_aware_attacks_come_within_ten_percent_of_the_exact_distance(
    name: str, distance: float, seed: int
) -> None:
    defense, x, exact = linear_problem(distance, seed)
    record, best = attack(name, defense, x, seed)
    assert record.success
    assert exact <= record.best_radius <= 1.10 * exact
    assert record.best_radius <= record.first_radius
    assert (best - x).norm() == pytest.approx(record.best_radius, rel=1e-6)


def test_carlini_wagner_searches_its_weight_to_near_the_exact_distance() -> None:
    """From the paper's weight 1e-4, at which the distance term wins, the search finds a working c."""
    defense, x, exact = linear_problem(0.7, seed=3)
    record, best = attack("cw", defense, x, budget={"num_noise": 300, "iterations": 60})
    assert record.success and record.rejected < record.candidates
    assert exact <= record.best_radius <= 1.25 * exact
    assert record.iterations == 9 * 60  # every search step ran its Adam steps


@pytest.mark.parametrize("name", EVASION_ATTACKS)
def test_no_attack_reports_a_radius_below_the_exact_distance(name: str) -> None:
    defense, x, exact = linear_problem(0.6, seed=2)
    record, best = attack(name, defense, x, budget=SMALL_BUDGET)
    assert record.cohen_radius <= exact  # the certificate is a lower bound (w.p. 1 - alpha)
    if record.success:
        assert record.best_radius >= exact
        assert record.first_radius >= record.best_radius
        assert float(best.min()) >= 0.0 and float(best.max()) <= 1.0


SPOOFING_ATTACKS = sorted(name for name, spec in registry.all_specs("attacks").items() if spec.goal == "spoofing")


@pytest.mark.parametrize("name", EVASION_ATTACKS + SPOOFING_ATTACKS)
def test_registered_attack_params_validate_and_examples_stay_in_the_box(name: str) -> None:
    attack = small(name)
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 3)
    x = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # steep logits, class 0 ahead of class 1 by 2 at x: the boundary is about 0.05 away
        layer.weight *= 50
        layer.bias.copy_(torch.tensor([2.0, 0.0, -2.0]) - layer.weight @ x.flatten())
    model = torch.nn.Sequential(torch.nn.Flatten(), layer).eval()
    defense = Smoothing(model, 3, 0.5)
    label = int(defense.sample_counts(x, 200, torch.Generator().manual_seed(0)).argmax())
    offered: list[torch.Tensor] = []

    def judge(candidate: torch.Tensor) -> bool:
        offered.append(candidate)
        return False

    tracker = Tracker(x, judge)
    spec = registry.get_attack(name)
    view = defense.surrogate(**view_options(attack.params)) if spec.goal == "evasion" else Target(defense, None, spec.norm)
    attack.run(view, x, label, tracker, torch.Generator().manual_seed(0))
    assert tracker.iterations > 0 and offered
    assert all(float(c.min()) >= 0.0 and float(c.max()) <= 1.0 and c.shape == x.shape for c in offered)
