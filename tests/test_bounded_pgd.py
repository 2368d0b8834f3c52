"""Budgeted steps and projections in l2 and linf, and bounded PGD against the shipped GloRo and KW networks."""

from __future__ import annotations

import pytest
import torch

from rsbench import registry
from rsbench.attacks.base import Target, Tracker
from rsbench.attacks.bounded_pgd import BoundedPGD
from rsbench.attacks.steps import ascent_direction, project, random_start
from rsbench.data import load_dataset
from rsbench.defenses import load_defense
from rsbench.defenses.smoothing import Smoothing
from rsbench.errors import RsbenchError

SLACK = 1e-6
"""Rounding allowed on a distance, relative and absolute: float32 candidates, and (x + eps) - x is not eps in float32."""


def distance(a: torch.Tensor, b: torch.Tensor, norm: str) -> float:
    delta = (a - b).flatten().double()
    return float(delta.norm() if norm == "l2" else delta.abs().max())


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_projection_lands_in_the_ball_and_the_box_and_is_nearest(norm: str) -> None:
    generator = torch.Generator().manual_seed(0)
    for _ in range(100):
        x = torch.rand(1, 4, 4, generator=generator)
        eps = float(torch.rand((), generator=generator)) * (1.0 if norm == "l2" else 0.3)
        z = x + 3 * eps * torch.randn(x.shape, generator=generator)
        y = project(z, x, eps, norm)
        assert distance(y, x, norm) <= eps * (1 + SLACK) + SLACK
        assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
        assert torch.allclose(project(y, x, eps, norm), y, atol=1e-6)  # feasible points stay put
        # no feasible point (random ones, and other points of the ball) is closer to z in l2
        for _ in range(10):
            other = random_start(x, eps, norm, generator)
            assert distance(other, x, norm) <= eps * (1 + SLACK) + SLACK
            assert distance(other, z, "l2") >= distance(y, z, "l2") - 1e-5


def test_linf_step_is_the_sign_and_l2_step_has_unit_length() -> None:
    grad = torch.tensor([[0.5, -2.0], [0.0, 3.0]])
    assert torch.equal(ascent_direction(grad, "linf"), torch.tensor([[1.0, -1.0], [0.0, 1.0]]))
    assert float(ascent_direction(grad, "l2").norm()) == pytest.approx(1.0)
    assert torch.equal(ascent_direction(torch.zeros(3), "l2"), torch.zeros(3))


SHIPPED = [(name, spec.norm) for name, spec in sorted(registry.all_specs("defenses").items()) if spec.kind in ("gloro", "kw")]
PGD_BY_NORM = {"l2": "pgd-l2", "linf": "pgd-linf"}


@pytest.mark.parametrize(("name", "norm"), [s for s in SHIPPED if "digits" in s[0]])
def test_bounded_pgd_never_breaks_a_certified_point_but_breaks_uncertified_ones(name: str, norm: str) -> None:
    defense = load_defense(name)
    eps = defense.epsilon
    spec = registry.get_attack(PGD_BY_NORM[norm])
    assert spec.norm == norm
    attack = BoundedPGD(registry.attack_params(spec), iterations=10, restarts=2)
    x, y = load_dataset("digits", "test").tensors
    x, y = x[:120], y[:120]
    labels, radii = defense.certify_batch(x)
    correct = labels == y
    certified = (correct & (radii >= eps)).nonzero()[:30, 0].tolist()
    uncertified = (correct & (radii < eps)).nonzero()[:15, 0].tolist()
    assert len(certified) == 30 and uncertified

    def attack_point(i: int) -> tuple[bool, list[torch.Tensor]]:
        offered: list[torch.Tensor] = []

        def judge(candidate: torch.Tensor) -> bool:
            offered.append(candidate)
            with torch.no_grad():
                return int(defense.model(candidate[None]).argmax()) != int(y[i])

        tracker = Tracker(x[i], judge, norm=norm)
        attack.run(Target(defense, eps, norm), x[i], int(y[i]), tracker, torch.Generator().manual_seed(i))
        assert offered and all(distance(c, x[i], norm) <= eps * (1 + SLACK) + SLACK for c in offered)
        assert all(float(c.min()) >= 0.0 and float(c.max()) <= 1.0 for c in offered)
        return tracker.best is not None, offered

    for i in certified:
        broken, offered = attack_point(i)
        assert not broken and len(offered) == 20  # every iterate of both restarts, none adversarial
    broken = sum(attack_point(i)[0] for i in uncertified)
    assert broken >= 1, f"no uncertified point of {name} broken out of {len(uncertified)}"


def test_bounded_pgd_refuses_smoothing(linear_model: torch.nn.Module) -> None:
    defense = Smoothing(linear_model, 2, 0.25)
    x = torch.full((4,), 0.5)
    with pytest.raises(RsbenchError, match="GloRo, KW and CROWN-IBP"):
        BoundedPGD().run(Target(defense, 0.1, "l2"), x, 0, Tracker(x, lambda _: False), torch.Generator())
