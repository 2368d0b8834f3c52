"""KW (Wong & Kolter 2018): the dual bound checked against exact solvers, closed forms and properties."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ball, conv_as_dense, milp_min_margin, tiny_relu_net
from scipy.optimize import linprog
from torch import nn

from rsbench.defenses.kw import KW, WorstCaseLogits, certified, margin_lower_bounds
from rsbench.errors import RsbenchError
from rsbench.registry import all_specs
from rsbench.specs import DefenseSpec
from rsbench.stats import clopper_pearson

SHARED_DATA = Path(os.environ.get("RSBENCH_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.mark.parametrize("box", [False, True])
def test_kw_never_exceeds_the_exact_milp_minimum(box: bool) -> None:
    net = tiny_relu_net(0)
    generator = torch.Generator().manual_seed(1)
    for seed_input in range(3):
        x = torch.rand(4, generator=generator, dtype=torch.float64)
        label = int(net(x[None]).argmax())
        samples = x + (2 * torch.rand(4000, 4, generator=generator, dtype=torch.float64) - 1)
        for eps in (0.002, 0.05, 0.2, 0.5):
            bounds = margin_lower_bounds(net, x[None], eps, torch.tensor([label]), box=box)[0].detach()
            points = x + eps * (samples - x)
            points = points.clamp(0, 1) if box else points
            outputs = net(points).detach()
            for j in range(3):
                if j == label:
                    continue
                c = np.eye(3)[label] - np.eye(3)[j]
                exact = milp_min_margin(net, x.numpy(), eps, c, box)
                sampled = float((outputs[:, label] - outputs[:, j]).min())
                assert exact <= sampled + 1e-9  # the MILP's minimum is below every sampled margin
                assert bounds[j] <= exact + 1e-9
                if eps == 0.002:  # no ReLU changes state in so small a ball: the relaxation is exact
                    assert bounds[j] == pytest.approx(exact, abs=1e-9)


def test_single_linear_layer_is_exact_without_box() -> None:
    torch.manual_seed(2)
    layer = nn.Linear(6, 4).double()
    x = torch.rand(5, 6, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 3, 1])
    for eps in (0.01, 0.3):
        bounds = margin_lower_bounds(layer, x, eps, labels).detach()
        weight, bias = layer.weight.detach(), layer.bias.detach()
        for b in range(5):
            for j in range(4):
                c = torch.eye(4, dtype=torch.float64)[labels[b]] - torch.eye(4, dtype=torch.float64)[j]
                closed = c @ (weight @ x[b] + bias) - eps * (weight.T @ c).abs().sum()
                assert bounds[b, j] == pytest.approx(float(closed), abs=1e-12)


def test_single_linear_layer_with_box_matches_linprog() -> None:
    torch.manual_seed(3)
    layer = nn.Linear(6, 4).double()
    x = torch.rand(3, 6, dtype=torch.float64)
    labels = torch.tensor([2, 0, 3])
    weight, bias = layer.weight.detach().numpy(), layer.bias.detach().numpy()
    for eps in (0.05, 0.4):
        bounds = margin_lower_bounds(layer, x, eps, labels, box=True).detach()
        for b in range(3):
            low, high = ball(x[b].numpy(), eps, box=True)
            for j in range(4):
                c = np.eye(4)[labels[b]] - np.eye(4)[j]
                result = linprog(weight.T @ c, bounds=list(zip(low, high)))
                assert bounds[b, j] == pytest.approx(result.fun + c @ bias, abs=1e-9)


def test_conv_layers_bound_like_their_dense_matrices() -> None:
    torch.manual_seed(4)
    conv1, conv2 = nn.Conv2d(1, 3, 3, stride=2, padding=1).double(), nn.Conv2d(3, 4, 2, stride=2).double()
    head = nn.Linear(4 * 2 * 2, 5).double()
    convolutional = nn.Sequential(conv1, nn.ReLU(), conv2, nn.ReLU(), nn.Flatten(), head)
    dense1, dense2 = conv_as_dense(conv1, (1, 7, 7)), conv_as_dense(conv2, (3, 4, 4))
    dense = nn.Sequential(nn.Flatten(), dense1, nn.ReLU(), dense2, nn.ReLU(), head)
    x = torch.rand(4, 1, 7, 7, dtype=torch.float64)
    assert torch.allclose(convolutional(x), dense(x))
    labels = convolutional(x).argmax(1)
    for box in (False, True):
        expected = margin_lower_bounds(dense, x, 0.08, labels, box=box)
        assert torch.allclose(margin_lower_bounds(convolutional, x, 0.08, labels, box=box), expected, atol=1e-10)


@pytest.mark.parametrize(
    "model",
    [nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2)), nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2))],
)
def test_unsupported_layers_are_refused(model: nn.Module) -> None:
    with pytest.raises(RsbenchError, match="KW certifies networks of"):
        KW(model, 2, 0.1)


def test_certification_is_monotonic_and_radius_is_bisected() -> None:
    torch.manual_seed(5)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 24), nn.ReLU(), nn.Linear(24, 16), nn.ReLU(), nn.Linear(16, 4))
    defense = KW(net, 4, epsilon=0.05)
    grid = torch.linspace(0, 0.4, 81)
    generator = torch.Generator().manual_seed(6)
    for _ in range(6):
        x = torch.rand(1, 4, 4, generator=generator)
        label = net(x[None]).argmax(1)
        with torch.no_grad():
            flags = certified(net, x[None].expand(len(grid), -1, -1, -1), grid, label.expand(len(grid)))
        assert not (flags[1:] & ~flags[:-1]).any()  # once lost, never regained at a larger eps
        certificate = defense.certify(x)
        radius = certificate.radius
        assert certificate.prediction == int(label)
        assert radius == 0.0 or defense.certified_at(x, radius)
        assert not defense.certified_at(x, radius + defense.tolerance)
        assert (radius >= defense.epsilon) == defense.certified_at(x, defense.epsilon)
        assert defense.predict(x) == (int(label) if defense.certified_at(x, defense.epsilon) else None)


def test_surrogate_is_the_differentiable_worst_case_logits() -> None:
    torch.manual_seed(7)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3))
    defense = KW(net, 3, epsilon=0.02)
    x = torch.rand(5, 1, 4, 4, requires_grad=True)
    logits = defense.surrogate()(x)
    labels = net(x).argmax(1)
    assert torch.all(logits.gather(1, labels[:, None]) == 0)
    wins = logits.masked_fill(nn.functional.one_hot(labels, 3).bool(), -torch.inf).max(1).values < 0
    assert torch.equal(wins, certified(net, x.detach(), 0.02, labels))
    logits.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert isinstance(defense.surrogate(epsilon=0.1), WorstCaseLogits)


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "models" / "kw-mnist-eps0.1.pth").is_file(), reason="shared data absent")
def test_released_mnist_model_matches_the_paper(monkeypatch: pytest.MonkeyPatch) -> None:
    """Wong & Kolter report 1.80% clean and 5.82% certified robust error for this model at eps = 0.1."""
    from rsbench.data import load_dataset
    from rsbench.defenses import load_defense
    from rsbench.registry import get_defense

    monkeypatch.setenv("RSBENCH_DATA", str(SHARED_DATA))
    spec = get_defense("kw-mnist-0.1")
    defense = load_defense(spec)
    x, y = load_dataset("mnist", "test").tensors
    x, y = x[:200], y[:200]
    with torch.no_grad():
        predictions = defense.model(x).argmax(1)
        robust = certified(defense.model, x, spec.epsilon, y)
    clean_errors, robust_errors = int((predictions != y).sum()), int((~robust).sum())
    # the paper's full-test-set figures must lie in the 99% intervals of these 200 images
    low, high = clopper_pearson(clean_errors, 200, 0.01)
    assert low <= 0.0180 <= high
    low, high = clopper_pearson(robust_errors, 200, 0.01)
    assert low <= 0.0582 <= high
    assert robust_errors >= clean_errors


def digits_subset(count: int) -> torch.utils.data.TensorDataset:
    from rsbench.data import load_dataset

    x, y = load_dataset("digits", "train").tensors
    return torch.utils.data.TensorDataset(x[:count], y[:count])


def kw_spec(epsilon: float, **options: float) -> DefenseSpec:
    return DefenseSpec.model_validate(
        {
            "name": "kw-test",
            "kind": "kw",
            "norm": "linf",
            "epsilon": epsilon,
            "dataset": {"name": "digits"},
            "architecture": "digits-kw-cnn",
            "num_classes": 10,
            "weights": {"source": "package", "filename": "none.pt", "sha256": "0" * 64},
            "training": {"recipe": "kw", "epochs": 12, "batch_size": 50, "lr": 0.01, "options": options},
        }
    )


def test_robust_training_is_seeded_and_makes_the_bound_certify() -> None:
    from rsbench.training.kw import fit

    data = digits_subset(200)
    x, y = data.tensors
    spec = kw_spec(0.05, warmup_epochs=4)
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        models.append(nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)))
    with torch.no_grad():
        before = float(certified(models[0], x, 0.05, y).float().mean())
    for model in models:
        fit(model, data, spec, torch.device("cpu"))
    with torch.no_grad():
        after = float(certified(models[0], x, 0.05, y).float().mean())
    assert before < 0.05 and after > 0.6
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        assert torch.equal(a, b)


def test_training_refuses_unknown_options() -> None:
    from rsbench.training.kw import fit

    with pytest.raises(RsbenchError, match="unknown KW option"):
        fit(nn.Linear(64, 10), digits_subset(10), kw_spec(0.05, ramp=3), torch.device("cpu"))


SHIPPED = sorted(n for n, s in all_specs("defenses").items() if s.kind == "kw" and s.weights.source == "package")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_digits_models_certify_monotonically(name: str) -> None:
    from rsbench.data import load_dataset
    from rsbench.defenses import load_defense

    defense = load_defense(name)
    x, y = load_dataset("digits", "test").tensors
    x, y = x[:50], y[:50]
    grid = [defense.epsilon * k / 10 for k in range(31)]
    with torch.no_grad():
        labels = defense.model(x).argmax(1)
        flags = torch.stack([certified(defense.model, x, eps, labels) for eps in grid], 1)
    assert not (flags[:, 1:] & ~flags[:, :-1]).any()
    vra = float((flags[:, 10] & (labels == y)).float().mean())
    assert vra > 0.5  # robust training made most test digits certifiable at the spec's epsilon
    _, radii = defense.certify_batch(x)
    for k in (10, 20):  # radii are anchored at eps and 2 eps: radius >= anchor iff certified there
        assert torch.equal(radii >= grid[k], flags[:, k])
