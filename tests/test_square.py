"""The Square attack: forward passes only, inside the ball and the box, exact against a linear classifier's closed
form, and what finds the points a network with masked gradients hides from PGD."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rsbench import registry
from rsbench.attacks.base import Target, Tracker
from rsbench.attacks.bounded_pgd import BoundedPGD
from rsbench.attacks.square import Square, window_share
from rsbench.data import load_dataset
from rsbench.defenses import load_defense

SLACK = 1e-6


class NoGradient(torch.autograd.Function):
    """Identity forward, zero backward: the input gradient of whatever follows it is masked."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        return torch.zeros_like(grad)


class Masked(nn.Module):
    """A network's forward with no usable input gradient."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(NoGradient.apply(x))


class Plain:
    """The least a bounded attack reads of a deterministic defense: its network and device."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.device = model.eval(), torch.device("cpu")


def distance(a: torch.Tensor, b: torch.Tensor, norm: str) -> float:
    delta = (a - b).flatten().double()
    return float(delta.norm() if norm == "l2" else delta.abs().max())


def attack(defense: object, attack_: object, x: torch.Tensor, label: int, eps: float, norm: str,
           seed: int) -> tuple[Tracker, list[torch.Tensor]]:
    """Run the attack on x, judged by the network's label; every candidate offered is kept."""
    offered: list[torch.Tensor] = []

    def judge(candidate: torch.Tensor) -> bool:
        offered.append(candidate)
        with torch.no_grad():
            return int(defense.model(candidate[None]).argmax()) != label

    tracker = Tracker(x, judge, norm=norm)
    attack_.run(Target(defense, eps, norm), x, label, tracker, torch.Generator().manual_seed(seed))
    return tracker, offered


def test_the_window_share_halves_on_the_papers_marks_scaled_to_the_budget() -> None:
    assert window_share(0.4, 0, 1000) == 0.4
    assert window_share(0.4, 2, 1000) == 0.2  # past 10 of 10,000 -> past 1 of 1,000
    assert window_share(0.4, 999, 1000) == 0.4 / 2**9


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_square_finds_a_linear_classifiers_closest_boundary_using_the_forward_pass_alone(norm: str) -> None:
    generator = torch.Generator().manual_seed(1)
    weight = torch.randn(1, 64, generator=generator, dtype=torch.float64)
    x = torch.full((1, 8, 8), 0.5, dtype=torch.float64)
    gap = 0.04 if norm == "linf" else 0.3  # the boundary's distance from x in the norm
    dual = weight.abs().sum() if norm == "linf" else weight.norm()  # the dual norm of w
    bias = -(weight @ x.flatten()) + gap * dual  # w.x + b = gap * ||w||_*: the closest boundary point at `gap`
    linear = nn.Sequential(nn.Flatten(), nn.Linear(64, 2, dtype=torch.float64))
    with torch.no_grad():
        linear[1].weight.copy_(torch.cat([weight, -weight]) / 2)
        linear[1].bias.copy_(torch.cat([bias, -bias]) / 2)
    defense = Plain(Masked(linear))
    found = 0
    for seed in range(5):
        tracker, offered = attack(defense, Square(queries=2000), x, 0, 1.3 * gap, norm, seed)
        assert all(distance(c, x, norm) <= 1.3 * gap * (1 + SLACK) for c in offered)
        assert all(0 <= float(c.min()) and float(c.max()) <= 1 for c in offered)
        found += tracker.first is not None
        if tracker.first is not None:
            assert tracker.first.radius >= gap * (1 - SLACK)  # nothing closer than the closed form exists
        assert attack(defense, Square(queries=200), x, 0, 0.99 * gap, norm, seed)[0].first is None
    assert found == 5


def test_square_breaks_points_a_network_with_masked_gradients_hides_from_pgd() -> None:
    kw = load_defense("kw-digits-0.10")
    defense = Plain(Masked(kw.model))
    x, y = load_dataset("digits", "test").tensors
    eps, pgd, square, attacked = 0.2, 0, 0, 0
    pgd_attack = BoundedPGD(registry.attack_params(registry.get_attack("pgd-linf")), iterations=20, restarts=2)
    square_attack = Square(registry.attack_params(registry.get_attack("square-linf")), queries=300)
    for i in range(10):
        if int(kw.model(x[i][None]).argmax()) != int(y[i]):
            continue
        attacked += 1
        pgd += attack(defense, pgd_attack, x[i], int(y[i]), eps, "linf", i)[0].first is not None
        square += attack(defense, square_attack, x[i], int(y[i]), eps, "linf", i)[0].first is not None
    assert attacked >= 8
    assert pgd <= attacked // 5 < attacked // 2 <= square


def test_square_is_determined_by_its_generator() -> None:
    kw = load_defense("kw-digits-0.10")
    x, y = load_dataset("digits", "test")[0]
    runs = [attack(kw, Square(queries=50), x, int(y), 0.2, "linf", 7)[1] for _ in range(2)]
    assert len(runs[0]) == len(runs[1]) and all(torch.equal(a, b) for a, b in zip(*runs))
