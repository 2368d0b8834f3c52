"""The four baselines (PGD, C-W, DeepFool, AutoAttack) on problems with known answers, and their shared pieces."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import BinaryLinear
from scipy.optimize import minimize
from scipy.stats import norm
from torch import nn

from rsbench.attacks.apgd import AutoAttack, checkpoints
from rsbench.attacks.base import Attack, Tracker
from rsbench.attacks.cw import CarliniWagner
from rsbench.attacks.deepfool import DeepFool
from rsbench.attacks.losses import cross_entropy, dlr, margin
from rsbench.attacks.pgd import PGD
from rsbench.attacks.steps import project_l2_ball_box
from rsbench.attacks.success import is_adversarial, make_judge
from rsbench.defenses.smoothed_view import SmoothedView
from rsbench.defenses.smoothing import Smoothing
from rsbench.registry import attack_params, parse_spec
from rsbench.specs import AttackSpec

SIGMA = 0.25
# Test-sized settings. C-W starts at the paper's weight 1e-4 and must find its own c by its search.
# AutoAttack gets fewer EOT draws and iterations.
BASELINES: dict[str, tuple[type[Attack], dict[str, object]]] = {
    "pgd": (PGD, {}),
    "cw": (CarliniWagner, {}),
    "deepfool": (DeepFool, {}),
    "autoattack": (AutoAttack, {"eot": 2, "iterations": 30}),
}


@dataclass
class RecordingTracker(Tracker):
    """A Tracker that also keeps every candidate proposed to it."""

    offered: list[torch.Tensor] = field(default_factory=list)

    def offer(self, x_adv: torch.Tensor) -> bool:
        self.offered.append(x_adv.detach().clone())
        return super().offer(x_adv)


def run(attack: Attack, model: nn.Module, classes: int, x: torch.Tensor, label: int, num: int, seed: int):
    """Attack x with a fresh view and judge of N = num noisy copies, as the evaluate job does."""
    view = SmoothedView(model, classes, SIGMA, num_noise=num, chunk_size=num)
    tracker = RecordingTracker(x, make_judge(view, label, torch.Generator().manual_seed(1000 + seed)))
    attack.run(view, x, label, tracker, torch.Generator().manual_seed(seed))
    return tracker


def nearest_centre() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A confident 3-class nearest-centre classifier on [0, 1]^4 and two points near each centre."""
    centres = torch.tensor([[0.2, 0.2, 0.8, 0.5], [0.8, 0.3, 0.2, 0.5], [0.4, 0.8, 0.4, 0.5]])
    model = nn.Linear(4, 3)
    with torch.no_grad():  # logits 40 (2 c.x - |c|^2) = 40 (|x|^2 - |x - c|^2): largest for the nearest centre
        model.weight.copy_(80 * centres)
        model.bias.copy_(-40 * centres.square().sum(1))
    noise = 0.05 * torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    return model.eval(), (centres.repeat(2, 1) + noise).clamp(0, 1), torch.arange(3).repeat(2)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_each_baseline_breaks_most_points_of_a_separable_problem(name: str) -> None:
    cls, overrides = BASELINES[name]
    model, points, labels = nearest_centre()
    smoothed = Smoothing(model, 3, SIGMA, n=500, alpha=0.001)
    clean = adversarial = 0
    for i, (x, label) in enumerate(zip(points, labels.tolist())):
        tracker = run(cls(num_noise=200, **overrides), model, 3, x, label, 200, seed=i)
        assert tracker.iterations > 0 and tracker.offered
        assert all(float(c.min()) >= 0 and float(c.max()) <= 1 and c.shape == x.shape for c in tracker.offered)
        clean += smoothed.predict(x, generator=torch.Generator().manual_seed(i)) == label
        attacked = x if tracker.best is None else tracker.best.x_adv
        adversarial += smoothed.predict(attacked, generator=torch.Generator().manual_seed(i)) == label
    assert clean == len(points)
    assert adversarial <= 1  # Cohen's PREDICT on fresh noise agrees with the judge on at least 5 of 6


def judge_margin(num: int, alpha: float) -> float:
    """Distance beyond a linear boundary, in units of sigma, at which a judge of `num` draws almost surely passes.

    For a binary linear base classifier the adversarial class has probability Phi(t / sigma)
    at distance t beyond the boundary; take the smallest probability whose count three
    standard deviations below its mean still passes the Goodman test.
    """
    p = 0.5
    while True:
        low_count = math.floor(num * p - 3 * math.sqrt(num * p * (1 - p)))
        if is_adversarial(torch.tensor([num - low_count, low_count]), 0, alpha):
            return float(norm.ppf(p))
        p += 0.001


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_no_baseline_beats_the_exact_distance_on_a_linear_classifier(name: str, linear_model: BinaryLinear) -> None:
    """Smoothing a linear classifier keeps its boundary, so nothing closer than |w.x + b| / ||w|| is adversarial."""
    cls, overrides = BASELINES[name]
    if name == "autoattack":
        overrides = {**overrides, "min_epsilon": 0.6}  # a budget beyond the boundary, so that it succeeds
    num, slack = 2000, judge_margin(2000, 0.005) * SIGMA
    for i, x in enumerate(torch.tensor([[0.5, 0.3, 0.5, 0.5], [0.4, 0.5, 0.6, 0.3], [0.6, 0.6, 0.4, 0.5]])):
        exact, label = linear_model.distance(x), int(float(linear_model(x.unsqueeze(0))[0, 1]) > 0)
        tracker = run(cls(num_noise=num, **overrides), linear_model, 2, x, label, num, seed=i)
        assert tracker.best is not None
        assert tracker.best.radius >= exact
        if name == "deepfool":  # linearisation is exact here: it lands on the boundary up to sampling error
            assert tracker.best.radius <= exact + 2 * slack


def test_deepfool_needs_few_steps_on_a_linear_classifier(linear_model: BinaryLinear) -> None:
    x = torch.tensor([0.5, 0.3, 0.5, 0.5])
    tracker = run(DeepFool(num_noise=2000), linear_model, 2, x, 1, 2000, seed=0)
    assert tracker.best is not None and tracker.iterations <= 10
    steps = torch.stack(tracker.offered) - x
    direction = -linear_model.w / linear_model.w.norm()  # label 1: towards lower w.x
    assert torch.allclose(steps / steps.norm(dim=1, keepdim=True), direction.expand_as(steps), atol=1e-5)


def first_flip(iterates: list[torch.Tensor], model: nn.Module, x: torch.Tensor, label: int, num: int, seed: int) -> int:
    """1-based index of the first iterate whose view prediction is not `label`, replaying DeepFool's noise: the
    clean linearisation takes the first seed pair, then iteration t draws the seed of the noise shared by the
    linearisation of iterate t - 1 (and the clean input for t = 1)."""
    view = SmoothedView(model, 2, SIGMA, num_noise=num, chunk_size=num)
    generator = torch.Generator().manual_seed(seed)
    view.bounds(x, generator)
    seeds = [int(torch.randint(0, 2**62, (1,), generator=generator)) for _ in range(len(iterates) + 1)]
    tops = [view.bounds(it, torch.Generator().manual_seed(s)).top for it, s in zip(iterates, seeds[1:])]
    return next(t for t, top in enumerate(tops, 1) if top != label)


def test_deepfool_stop_on_flip_ends_at_the_first_flipped_prediction(linear_model: BinaryLinear) -> None:
    """Classic DeepFool's rule ends the same path at the first flip, before the judge confirms any iterate."""
    num, shortened = 2000, 0
    for x in torch.tensor([[0.5, 0.3, 0.5, 0.5], [0.4, 0.5, 0.6, 0.3], [0.6, 0.6, 0.4, 0.5]]):
        label = int(float(linear_model(x.unsqueeze(0))[0, 1]) > 0)
        default = run(DeepFool(num_noise=num), linear_model, 2, x, label, num, seed=0)
        classic = run(DeepFool(num_noise=num, stop_on_flip=True), linear_model, 2, x, label, num, seed=0)
        flip = first_flip(default.offered, linear_model, x, label, num, seed=0)
        assert classic.iterations == len(classic.offered) == flip <= default.iterations
        assert all(torch.equal(a, b) for a, b in zip(classic.offered, default.offered[:flip], strict=True))
        shortened += flip < default.iterations
    assert shortened == 3  # on all three, the first flip is short of what the judge confirms


def test_registry_deepfool_keeps_its_hash_and_the_default_stopping_rule() -> None:
    """The track's deepfool records were made with this spec; stop_on_flip must stay off there."""
    root = Path(__file__).parents[1]
    spec = parse_spec(root / "registry" / "attacks" / "deepfool.yaml", AttackSpec)
    track = json.loads((root / "leaderboards" / "evasion-smoothing-mnist-0.50" / "v1.json").read_text())
    assert spec.spec_hash() == next(e["attack_hash"] for e in track["entries"] if e["name"] == "deepfool")
    assert "stop_on_flip" not in spec.params and attack_params(spec).stop_on_flip is False


def test_pgd_takes_steps_of_the_paper_length() -> None:
    model, points, labels = nearest_centre()
    never = RecordingTracker(points[0], lambda _: False)
    attack = PGD(num_noise=100, iterations=4)
    attack.run(SmoothedView(model, 3, SIGMA, num_noise=100), points[0], 0, never, torch.Generator().manual_seed(0))
    path = torch.stack([points[0], *never.offered])
    assert never.iterations == 4
    assert torch.allclose((path[1:] - path[:-1]).norm(dim=1), torch.full((4,), 20 / 255), atol=1e-6)


def test_autoattack_stays_in_its_budget_and_runs_dlr_only_with_three_classes(linear_model: BinaryLinear) -> None:
    model, points, _ = nearest_centre()
    settings = {"num_noise": 50, "eot": 1, "iterations": 12, "radius_factor": 1e-9, "min_epsilon": 0.2}
    for net, classes, x, label, runs in [(model, 3, points[0], 0, 2), (linear_model, 2, torch.full((4,), 0.5), 1, 1)]:
        never = RecordingTracker(x, lambda _: False)
        view = SmoothedView(net, classes, SIGMA, num_noise=50)
        AutoAttack(**settings).run(view, x, label, never, torch.Generator().manual_seed(0))
        assert never.iterations == runs * 12  # APGD-CE, then APGD-DLR as nothing was found
        distances = torch.stack([(c - x).norm() for c in never.offered])
        assert float(distances.max()) <= 0.2 + 1e-6
        assert all(float(c.min()) >= 0 and float(c.max()) <= 1 for c in never.offered)


def test_autoattack_budget_is_twice_equation_3s_radius_at_the_clean_input(linear_model: BinaryLinear) -> None:
    x = torch.tensor([0.5, 0.45, 0.5, 0.5])  # w.x + b = 0.35: the smoothed class 1 holds a radius of about 0.1
    view = SmoothedView(linear_model, 2, SIGMA, num_noise=2000)
    radius = view.hard_radius(x, torch.Generator().manual_seed(7))  # the draw the attack makes first
    assert 0.05 < radius < linear_model.distance(x)
    never = RecordingTracker(x, lambda _: False)
    AutoAttack(num_noise=2000, eot=2, iterations=5).run(view, x, 1, never, torch.Generator().manual_seed(7))
    distances = torch.stack([(c - x).norm() for c in never.offered])
    # APGD starts on the sphere of radius eps; from x = 0.5 +- 0.05 it does not reach the box
    assert float(distances[0]) == pytest.approx(max(2 * radius, 0.1), rel=1e-5)
    assert float(distances.max()) <= max(2 * radius, 0.1) + 1e-6


def reference_checkpoints(iterations: int) -> list[int]:
    """ceil(p_j N) with exact rational p_j: p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)."""
    p = [Fraction(0), Fraction(22, 100)]
    while p[-1] <= 1:
        p.append(p[-1] + max(p[-1] - p[-2] - Fraction(3, 100), Fraction(6, 100)))
    return sorted({math.ceil(q * iterations) for q in p if q <= 1})


@pytest.mark.parametrize("iterations", [10, 37, 100, 250, 1000])
def test_apgd_checkpoints_follow_the_recurrence(iterations: int) -> None:
    assert checkpoints(iterations) == reference_checkpoints(iterations)


def test_apgd_checkpoints_for_100_iterations_shrink_from_22_by_3_down_to_6() -> None:
    marks, length = [0], 22  # AutoAttack's integer form of the same schedule
    while marks[-1] + length <= 100:
        marks.append(marks[-1] + length)
        length = max(length - 3, 6)
    assert checkpoints(100) == marks


def dykstra(z: np.ndarray, x: np.ndarray, eps: float, rounds: int = 500) -> np.ndarray:
    """Dykstra's alternating projections onto the box and the ball: converges to the projection onto both."""
    point, box_fix, ball_fix = z.copy(), np.zeros_like(z), np.zeros_like(z)
    for _ in range(rounds):
        boxed = np.clip(point + box_fix, 0, 1)
        box_fix = point + box_fix - boxed
        shifted = boxed + ball_fix - x
        point = x + shifted * min(1.0, eps / max(np.linalg.norm(shifted), 1e-300))
        ball_fix = boxed + ball_fix - point
    return point


def test_projection_onto_ball_and_box_matches_dykstra_and_a_numerical_solver() -> None:
    rng = np.random.default_rng(0)
    for trial in range(40):
        d = int(rng.integers(1, 7))
        x = rng.uniform(0, 1, d)
        x[0] = 0.0 if trial % 4 == 0 else x[0]  # a clean pixel on the box's face
        z = x + rng.normal(0, rng.uniform(0.1, 2), d)
        eps = float(rng.uniform(0.05, 1.5))
        ours = project_l2_ball_box(torch.tensor(z), torch.tensor(x), eps).numpy()
        np.testing.assert_allclose(ours, dykstra(z, x, eps), atol=1e-6)
        solved = minimize(  # SLSQP from our answer must not find a feasible point nearer to z
            lambda y: ((y - z) ** 2).sum(),
            ours,
            jac=lambda y: 2 * (y - z),
            bounds=[(0, 1)] * d,
            constraints=[{"type": "ineq", "fun": lambda y: eps**2 - ((y - x) ** 2).sum(), "jac": lambda y: -2 * (y - x)}],
            method="SLSQP",
        )
        feasible = np.linalg.norm(solved.x - x) <= eps + 1e-9
        assert not feasible or ((solved.x - z) ** 2).sum() >= ((ours - z) ** 2).sum() - 1e-9


def test_projection_leaves_feasible_points_alone_and_zero_budget_returns_the_centre() -> None:
    x = torch.tensor([0.2, 0.9, 0.5])
    inside = torch.tensor([0.25, 0.95, 0.45])
    assert torch.equal(project_l2_ball_box(inside, x, 0.2), inside)
    assert torch.allclose(project_l2_ball_box(torch.tensor([3.0, -1.0, 0.4]), x, 0.0), x)


def test_losses_on_log_probabilities_equal_their_logit_forms() -> None:
    logits = torch.tensor([1.5, -0.3, 2.0, 0.1])
    log_probs = torch.log_softmax(logits, 0)
    assert float(cross_entropy(log_probs, 2)) == pytest.approx(-float(log_probs[2]))
    assert float(margin(log_probs, 0)) == pytest.approx(1.5 - 2.0)
    by_hand = -(1.5 - 2.0) / (2.0 - 0.1)  # -(z_y - max other) / (z_pi1 - z_pi3)
    assert float(dlr(logits, 0)) == pytest.approx(by_hand)
    assert float(dlr(3 * log_probs + 7, 0)) == pytest.approx(by_hand)  # shift and scale invariant
    with pytest.raises(ValueError, match="at least 3 classes"):
        dlr(torch.tensor([0.1, 0.2]), 0)
