"""CROWN-IBP: IBP and CROWN-IBP bounds against scipy's MILP, closed forms and each other; the defense (certified
by IBP, as the paper verifies) against bounded PGD; training's schedule and seeding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import conv_as_dense, milp_min_margin, tiny_relu_net
from torch import nn

from rsbench import registry
from rsbench.attacks.base import Target, Tracker
from rsbench.attacks.bounded_pgd import BoundedPGD
from rsbench.data import load_dataset
from rsbench.defenses import load_defense
from rsbench.defenses.crown_ibp import CrownIBP, crown_ibp_margins, from_spec, ibp_margins, margin_bounds
from rsbench.defenses.kw import certified
from rsbench.errors import RsbenchError
from rsbench.models import create_model
from rsbench.specs import DefenseSpec


@pytest.mark.parametrize("box", [False, True])
def test_both_bounds_never_exceed_the_exact_milp_minimum_and_crown_ibp_is_exact_in_a_tiny_ball(box: bool) -> None:
    net = tiny_relu_net(0)
    generator = torch.Generator().manual_seed(1)
    for _ in range(3):
        x = torch.rand(4, generator=generator, dtype=torch.float64)
        label = int(net(x[None]).argmax())
        for eps in (0.002, 0.05, 0.2, 0.5):
            with torch.no_grad():
                interval, backward = margin_bounds(net, x[None], eps, torch.tensor([label]), box=box)
            for j in {0, 1, 2} - {label}:
                exact = milp_min_margin(net, x.numpy(), eps, np.eye(3)[label] - np.eye(3)[j], box)
                assert float(interval[0, j]) <= exact + 1e-9 and float(backward[0, j]) <= exact + 1e-9
                if eps == 0.002:  # no ReLU changes state: CROWN's lines are the ReLUs themselves
                    assert float(backward[0, j]) == pytest.approx(exact, abs=1e-9)


def test_a_linear_layer_is_bounded_exactly_by_both() -> None:
    torch.manual_seed(2)
    layer = nn.Linear(6, 4).double()
    x, labels = torch.rand(5, 6, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 1])
    weight, bias = layer.weight.detach(), layer.bias.detach()
    with torch.no_grad():
        interval, backward = margin_bounds(layer, x, 0.3, labels, box=False)
    for b in range(5):
        for j in range(4):
            c = torch.eye(4, dtype=torch.float64)[labels[b]] - torch.eye(4, dtype=torch.float64)[j]
            closed = float(c @ (weight @ x[b] + bias) - 0.3 * (weight.T @ c).abs().sum())
            assert float(interval[b, j]) == pytest.approx(closed, abs=1e-12)
            assert float(backward[b, j]) == pytest.approx(closed, abs=1e-12)


def test_convolutions_bound_like_their_dense_matrices() -> None:
    torch.manual_seed(4)
    conv1, conv2 = nn.Conv2d(1, 3, 3, stride=2, padding=1).double(), nn.Conv2d(3, 4, 2, stride=2).double()
    head = nn.Linear(4 * 2 * 2, 5).double()
    convolutional = nn.Sequential(conv1, nn.ReLU(), conv2, nn.ReLU(), nn.Flatten(), head)
    dense = nn.Sequential(nn.Flatten(), conv_as_dense(conv1, (1, 7, 7)), nn.ReLU(), conv_as_dense(conv2, (3, 4, 4)),
                          nn.ReLU(), head)
    x = torch.rand(4, 1, 7, 7, dtype=torch.float64)
    labels = convolutional(x).argmax(1)
    with torch.no_grad():
        for box in (False, True):
            for got, want in zip(margin_bounds(convolutional, x, 0.08, labels, box=box),
                                 margin_bounds(dense, x, 0.08, labels, box=box)):
                assert torch.allclose(got, want, atol=1e-10)


def test_neither_bound_dominates_and_only_ibp_is_monotonic_under_nested_balls() -> None:
    """Why a crownibp defense certifies with IBP, as the paper verifies: CROWN-IBP is tighter on most margins of
    random networks but looser on some, and the ball of radius eps around any x' within eps of x lies inside the
    ball of radius 2 eps around x, on which IBP's bound is never tighter, while CROWN-IBP's sometimes is."""
    tighter = looser = crown_regressions = 0
    for seed in range(6):
        net = tiny_relu_net(seed)
        generator = torch.Generator().manual_seed(seed)
        x = torch.rand(200, 4, generator=generator, dtype=torch.float64)
        labels = net(x).argmax(1)
        for eps in (0.05, 0.2):
            inner = x + eps * (2 * torch.rand(200, 4, generator=generator, dtype=torch.float64) - 1)
            with torch.no_grad():
                wide_ibp, wide_crown = margin_bounds(net, x, 2 * eps, labels, box=False)
                ibp, crown = margin_bounds(net, inner, eps, labels, box=False)
            assert (ibp >= wide_ibp - 1e-12).all()
            crown_regressions += int((crown < wide_crown - 1e-9).sum())
            tighter += int((wide_crown > wide_ibp + 1e-9).sum())
            looser += int((wide_crown < wide_ibp - 1e-9).sum())
    assert tighter > looser > 0 and crown_regressions > 0


def test_defense_certifies_with_ibp_and_bisects_its_radius() -> None:
    torch.manual_seed(5)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 24), nn.ReLU(), nn.Linear(24, 16), nn.ReLU(), nn.Linear(16, 4))
    defense = CrownIBP(net, 4, epsilon=0.02)
    assert defense.box and defense.bound is ibp_margins
    generator = torch.Generator().manual_seed(6)
    for _ in range(5):
        x = torch.rand(1, 4, 4, generator=generator)
        label = net(x[None]).argmax(1)
        certificate = defense.certify(x)
        with torch.no_grad():
            holds = bool(certified(net, x[None], certificate.radius, label, box=True, bound=ibp_margins))
            beyond = bool(certified(net, x[None], certificate.radius + defense.tolerance, label, box=True,
                                    bound=ibp_margins))
        assert certificate.prediction == int(label) and (certificate.radius == 0.0 or holds) and not beyond
        assert defense.predict(x) == (int(label) if defense.certified_at(x, 0.02) else None)
    x = torch.rand(8, 1, 4, 4, generator=generator, requires_grad=True)
    logits, labels = defense.surrogate()(x), net(x).argmax(1)
    assert torch.all(logits.gather(1, labels[:, None]) == 0)  # worst-case logits of the certifier's own bound
    wins = logits.masked_fill(nn.functional.one_hot(labels, 4).bool(), -torch.inf).max(1).values < 0
    with torch.no_grad():
        assert torch.equal(wins, certified(net, x, 0.02, labels, box=True, bound=ibp_margins))
    logits.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_refusals_name_crown_ibp() -> None:
    with pytest.raises(RsbenchError, match="CROWN-IBP certifies networks of"):
        CrownIBP(nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2)), 2, 0.1)
    with pytest.raises(RsbenchError, match="Linear last layer"):
        ibp_margins(nn.Sequential(nn.Linear(4, 4), nn.ReLU()), torch.rand(1, 4), 0.1, torch.tensor([0]))
    spec = registry.get_defense("crownibp-digits-0.10").model_copy(update={"norm": "l2"})
    with pytest.raises(RsbenchError, match="linf"):
        from_spec(spec, create_model(spec.architecture, 10))


def crown_spec(**options: float) -> DefenseSpec:
    return DefenseSpec.model_validate({
        "name": "crownibp-test", "kind": "crownibp", "norm": "linf", "epsilon": 0.05, "dataset": {"name": "digits"},
        "architecture": "digits-kw-cnn", "num_classes": 10,
        "weights": {"source": "package", "filename": "none.pt", "sha256": "0" * 64},
        "training": {"recipe": "crownibp", "epochs": 10, "batch_size": 50, "lr": 0.01, "options": options},
    })


def test_training_is_seeded_and_makes_ibp_certify() -> None:
    from rsbench.training.crown_ibp import fit

    x, y = load_dataset("digits", "train").tensors
    x, y = x[:200], y[:200]
    spec = crown_spec(warmup_epochs=1, ramp_epochs=5)
    trained = []
    for _ in range(2):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
        with torch.no_grad():
            before = float(certified(model, x, 0.05, y, box=True, bound=ibp_margins).float().mean())
        fit(model, torch.utils.data.TensorDataset(x, y), spec, torch.device("cpu"))
        trained.append(model)
    with torch.no_grad():
        after = float(certified(trained[0], x, 0.05, y, box=True, bound=ibp_margins).float().mean())
        crown = crown_ibp_margins(trained[0], x, 0.05, y)
    assert before < 0.05 and after > 0.4 and torch.isfinite(crown).all()
    for a, b in zip(trained[0].parameters(), trained[1].parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("options", [{"ramp": 3}, {"ramp_epochs": 20}, {"final_beta": 2.0}, {"final_kappa": "x"}])
def test_training_refuses_bad_options(options: dict[str, float]) -> None:
    from rsbench.training.crown_ibp import fit

    with pytest.raises(RsbenchError, match="CROWN-IBP option"):
        fit(nn.Linear(64, 10), torch.utils.data.TensorDataset(torch.rand(4, 64), torch.zeros(4, dtype=torch.long)),
            crown_spec(**options), torch.device("cpu"))


def test_shipped_digits_model_is_certified_by_ibp_and_never_broken_by_bounded_pgd() -> None:
    """The strongest bounded attack of the registry (pgd-linf, five restarts) breaks no point the defense
    certifies at its epsilon, and breaks some it does not."""
    defense = load_defense("crownibp-digits-0.10")
    eps = defense.epsilon
    attack = BoundedPGD(registry.attack_params(registry.get_attack("pgd-linf")))
    x, y = load_dataset("digits", "test").tensors
    labels, radii = defense.certify_batch(x[:100])
    correct = labels == y[:100]
    assert correct.float().mean() > 0.9 and (correct & (radii >= eps)).float().mean() > 0.6
    broken = {}
    for i in [*(correct & (radii >= eps)).nonzero()[:10, 0].tolist(), *(correct & (radii < eps)).nonzero()[:6, 0].tolist()]:
        def wrong(candidate: torch.Tensor, label: int = int(y[i])) -> bool:
            with torch.no_grad():
                return int(defense.model(candidate[None]).argmax()) != label

        tracker = Tracker(x[i], wrong, norm="linf")
        attack.run(Target(defense, eps, "linf"), x[i], int(y[i]), tracker, torch.Generator().manual_seed(i))
        broken[i] = tracker.best is not None
    assert not any(broken[i] for i in broken if radii[i] >= eps)
    assert any(broken[i] for i in broken if radii[i] < eps)
