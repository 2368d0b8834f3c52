"""The Shadow Attack: penalties by hand, gradients through the noise average, spoofing on tiny models."""

from __future__ import annotations

import math
import types

import pytest
import torch
from conftest import BinaryLinear
from torch import nn

from rsbench import registry
from rsbench.attacks import shadow
from rsbench.attacks.base import Target, Tracker
from rsbench.attacks.shadow import (
    Shadow,
    ShadowParams,
    colour_shift,
    dissimilarity,
    objective_grad,
    penalty_c,
    step_size,
    target_loss,
    total_variation,
)
from rsbench.defenses.gloro import GloRo
from rsbench.defenses.kw import KW
from rsbench.defenses.smoothing import Smoothing

SQUARE = torch.tensor([[0.0, 1.0], [2.0, 3.0]])


def test_penalties_on_a_2x2_example() -> None:
    one = SQUARE[None]
    assert float(total_variation(one)) == 10.0  # rows (1, 1), columns (2, 2): 1 + 1 + 4 + 4
    assert float(colour_shift(one)) == 1.5  # mean |δ| of the one channel
    assert float(dissimilarity(one)) == 0.0
    three = torch.stack([torch.full((2, 2), 1.0), torch.full((2, 2), -2.0), torch.full((2, 2), 2.0)])
    assert float(colour_shift(three)) == 3.0  # ||(1, 2, 2)||
    # squared differences 9, 1, 16 at each of 4 pixels
    assert float(dissimilarity(three)) == pytest.approx(math.sqrt(4 * (81 + 1 + 256)))


def test_section_5_penalty_is_the_l2_norm_of_the_perturbation() -> None:
    constant = torch.full((1, 2, 2), -0.5)  # channel mean of |δ| 0.5; l2 norm sqrt(4 * 0.25) = 1
    assert float(penalty_c(constant, "channel-means")) == 0.5
    assert float(penalty_c(constant, "l2")) == 1.0
    assert float(penalty_c(SQUARE[None], "l2")) == pytest.approx(math.sqrt(14))  # 0 + 1 + 4 + 9


@pytest.mark.parametrize("name", ["shadow-crownibp", "shadow-crownibp-pixel", "shadow-crownibp-pixel-cuts"])
def test_registry_crownibp_settings_select_the_l2_penalty(name: str) -> None:
    params = ShadowParams(**registry.get_attack(name).params)
    assert params.c_form == "l2" and params.one_channel


def test_constant_and_grey_perturbations_cost_nothing_in_tv_and_dissim() -> None:
    assert float(total_variation(torch.full((3, 5, 5), 0.7))) == 0.0
    assert float(dissimilarity(SQUARE[None].expand(3, 2, 2))) == 0.0


def linear_smoothing(chunk: int = 400) -> Smoothing:
    return Smoothing(BinaryLinear(torch.tensor([1.0, -2.0, 0.5, 1.5]), -0.2), 2, 0.25, n=2000, batch_size=chunk)


def test_gradient_flows_through_the_chunked_noise_average() -> None:
    x = torch.tensor([0.0, 1.0, 0.0, 0.0]).view(1, 2, 2)
    delta = torch.full((1, 2, 2), 0.1)
    grads = []
    for chunk in (16, 64):
        params = ShadowParams(num_noise=64, chunk_size=chunk)
        defense = linear_smoothing(chunk)
        loss = target_loss(defense, 1, params, torch.Generator().manual_seed(0))
        value, grad = objective_grad(delta, x, loss, params)
        assert math.isfinite(value) and torch.isfinite(grad).all() and float(grad.abs().max()) > 0
        grads.append((value, grad))
    # the same noise in chunks of 16 or all at once: the same loss and gradient, at a fraction of the memory
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-5)
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-6)
    # raising class 1's score lowers its cross-entropy: the gradient points against w
    assert float((grads[0][1].flatten() * torch.tensor([1.0, -2.0, 0.5, 1.5])).sum()) < 0


def test_attack_moves_the_smoothed_prediction_to_the_target() -> None:
    # class 1 iff the mean pixel exceeds 0.5: reachable by a smooth, grey perturbation
    defense = Smoothing(BinaryLinear(torch.full((4,), 2.0), -4.0), 2, 0.25, n=2000)
    x = torch.full((1, 2, 2), 0.1)
    assert defense.certify(x, generator=torch.Generator().manual_seed(1)).prediction == 0
    judge_generator = torch.Generator().manual_seed(2)
    tracker = Tracker(x, lambda x_adv: defense.certify(x_adv, generator=judge_generator).prediction == 1)
    Shadow(num_noise=100, steps=100, select_n=1000).run(
        Target(defense, None, "l2"), x, 0, tracker, torch.Generator().manual_seed(0)
    )
    assert tracker.notes["target"] == 1 and tracker.notes["attack_prediction"] == 1
    assert tracker.best is not None and 0.0 <= float(tracker.best.x_adv.min()) <= float(tracker.best.x_adv.max()) <= 1.0
    assert tracker.iterations == 100


class ThreeClass(nn.Module):
    """Logits (2, 4 (x0 + x1 - x2 - x3), 4 (x2 + x3 - x0 - x1)): class 0 on flat images, 1 and 2 on contrasts."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)
        with torch.no_grad():
            self.linear.weight.copy_(torch.tensor([[0.0] * 4, [4.0, 4.0, -4.0, -4.0], [-4.0, -4.0, 4.0, 4.0]]))
            self.linear.bias.copy_(torch.tensor([2.0, 0.0, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


def test_selection_uses_the_defense_certificate_on_the_attack_generator(monkeypatch: pytest.MonkeyPatch) -> None:
    defense = Smoothing(ThreeClass(), 3, 0.25, n=1000)
    x = torch.full((1, 2, 2), 0.5)
    calls: list[tuple[torch.Generator | None, int | None, float]] = []
    certify = defense.certify

    def spy(x_adv: torch.Tensor, **kwargs: object):  # type: ignore[no-untyped-def]
        certificate = certify(x_adv, **kwargs)  # type: ignore[arg-type]
        calls.append((kwargs.get("generator"), certificate.prediction, certificate.radius))  # type: ignore[arg-type]
        return certificate

    monkeypatch.setattr(defense, "certify", spy)
    results = []
    for global_seed in (0, 1):
        torch.manual_seed(global_seed)  # the global stream must not matter
        generator = torch.Generator().manual_seed(5)
        tracker = Tracker(x, lambda x_adv: True)
        Shadow(num_noise=50, steps=40).run(Target(defense, None, "l2"), x, 0, tracker, generator)
        assert all(call[0] is generator for call in calls[-2:])  # one certificate per wrong class, on this generator
        spoofed = [(radius, prediction) for _, prediction, radius in calls[-2:] if prediction not in (None, 0)]
        assert tracker.notes["attack_radius"] == max(spoofed)[0]
        results.append((tracker.notes, tracker.best.x_adv))  # type: ignore[union-attr]
    assert results[0][0] == results[1][0] and torch.equal(results[0][1], results[1][1])


def test_one_channel_form_is_grey_and_equals_the_full_form_on_one_channel_images() -> None:
    defense = Smoothing(nn.Sequential(nn.Flatten(), nn.Linear(12, 2)), 2, 0.25)
    x = torch.full((3, 2, 2), 0.5)
    x_adv, _ = Shadow(num_noise=20, steps=10, one_channel=True).descend(defense, x, 1, torch.Generator().manual_seed(0))
    delta = x_adv - x
    assert float(dissimilarity(delta)) == 0.0 and float(delta.abs().max()) > 0
    single = linear_smoothing()
    x1 = torch.tensor([0.0, 1.0, 0.0, 0.0]).view(1, 2, 2)
    grey, _ = Shadow(num_noise=20, steps=10, one_channel=True).descend(single, x1, 1, torch.Generator().manual_seed(0))
    full, _ = Shadow(num_noise=20, steps=10).descend(single, x1, 1, torch.Generator().manual_seed(0))
    assert torch.equal(grey, full)


def brightness_net() -> nn.Sequential:
    """ReLU net on 1x4x4 images: class 0 for dark ones (mean < 0.5), class 1 for bright ones, class 2 never wins."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 2), nn.ReLU(), nn.Linear(2, 3))
    with torch.no_grad():
        net[1].weight.copy_(torch.stack([torch.full((16,), 0.5), torch.full((16,), -0.5)]))
        net[1].bias.copy_(torch.tensor([-4.0, 4.0]))
        net[3].weight.copy_(torch.tensor([[0.0, 2.0], [2.0, 0.0], [0.0, 0.0]]))
        net[3].bias.zero_()
    return net


@pytest.mark.parametrize("kind", ["gloro", "kw"])
def test_loss_toward_the_target_falls_for_deterministic_certifiers(kind: str) -> None:
    net = brightness_net()
    defense = GloRo(net, 3, 0.1) if kind == "gloro" else KW(net, 3, 0.05)
    x, label = torch.full((1, 4, 4), 0.2), 0
    assert defense.certify(x).prediction == label
    x_adv, history = Shadow(steps=60).descend(defense, x, 1, torch.Generator().manual_seed(0))
    assert history[-1] < 0.5 * history[0]
    assert 0.0 <= float(x_adv.min()) and float(x_adv.max()) <= 1.0
    assert defense.certify(x_adv).prediction == 1 and defense.certify(x_adv).radius >= defense.epsilon
    tracker = Tracker(x, lambda x_adv: True, norm=defense.norm)
    Shadow(steps=60).run(Target(defense, defense.epsilon, defense.norm), x, label, tracker, torch.Generator().manual_seed(0))
    assert tracker.notes["target"] == 1 and tracker.notes["attack_radius"] >= defense.epsilon
    assert tracker.iterations == 120


def test_large_label_sets_use_a_fixed_subset_without_the_label() -> None:
    defense = Smoothing(nn.Sequential(nn.Flatten(), nn.Linear(4, 50)), 50, 0.25)
    attack = Shadow(max_targets=10, target_seed=3)
    first, second = attack.targets(defense, 0), attack.targets(defense, 49)
    assert len(first) == len(second) == 10 and 0 not in first and 49 not in second
    assert len(set(first) & set(second)) >= 9  # one fixed order: only the label itself can change the subset
    assert attack.targets(defense, 0) == first and Shadow(max_targets=49).targets(defense, 7) == [c for c in range(50) if c != 7]


def test_lr_cuts_follow_the_authors_schedule() -> None:
    """Of 300 steps, 150 take the full rate, 100 a third of it and 50 a ninth; without cuts every step is full."""
    cut = [step_size(ShadowParams(steps=300, lr=9.0, lr_cuts=True), i) for i in range(300)]
    assert cut == [9.0] * 150 + [3.0] * 100 + [1.0] * 50
    assert {step_size(ShadowParams(steps=300, lr=9.0), i) for i in range(300)} == {9.0}


@pytest.mark.parametrize(("lr_cuts", "moved"), [(False, 0.27), (True, 0.17)])
def test_descent_takes_the_scheduled_steps(monkeypatch: pytest.MonkeyPatch, lr_cuts: bool, moved: float) -> None:
    """Under a constant gradient of -1e-4, δ moves by 1e-4 times the sum of the 300 step sizes (2,700 or 1,700)."""
    monkeypatch.setattr(shadow, "target_loss", lambda *args: None)
    monkeypatch.setattr(shadow, "objective_grad", lambda delta, *args: (0.0, torch.full_like(delta, -1e-4)))
    defense = types.SimpleNamespace(device=torch.device("cpu"))
    attack = Shadow(steps=300, lr=9.0, lr_cuts=lr_cuts, init_range=0.0, one_channel=True)
    x_adv, _ = attack.descend(defense, torch.full((1, 3, 3), 0.5), 1, torch.Generator().manual_seed(0))
    assert torch.allclose(x_adv, torch.full((1, 3, 3), 0.5 + moved))
