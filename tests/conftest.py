"""Shared fixtures: tiny models with known answers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rsbench.defenses.base import Defense
from rsbench.goals.evasion import Evasion
from rsbench.specs import AttackSpec, DefenseSpec, RunConfig


class BinaryLinear(nn.Module):
    """f(x) = class 1 iff w.x + b > 0, as logits (0, w.x + b): its exact l2 distance to the boundary is known."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w = nn.Parameter(w.flatten().clone(), requires_grad=False)
        self.b = b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = x.flatten(1) @ self.w + self.b
        return torch.stack([torch.zeros_like(score), score], dim=1)

    def distance(self, x: torch.Tensor) -> float:
        """Exact l2 distance from x to the decision boundary."""
        return float((x.flatten() @ self.w + self.b).abs() / self.w.norm())


class Constant(nn.Module):
    """Always predicts the same class, whatever the input."""

    def __init__(self, label: int, num_classes: int) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1), requires_grad=False)
        self.label, self.num_classes = label, num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(x.shape[0], self.num_classes)
        logits[:, self.label] = 1.0
        return logits


@pytest.fixture
def linear_model() -> BinaryLinear:
    return BinaryLinear(torch.tensor([1.0, -2.0, 0.5, 1.5]), -0.2)


def harness(defense: Defense, attacks: list[AttackSpec], *, sigma: float = 0.25, seed: int = 0,
            **judge: float) -> Evasion:
    """The evasion job of the engine around a hand-built smoothing defense, as one worker would hold it.

    `judge` overrides the run's judge settings (judge_n, judge_alpha, confirm_n); defaults are the protocol's.
    """
    spec = DefenseSpec(
        name="hand-built", kind="smoothing", dataset={"name": "digits"}, architecture="hand-built",
        num_classes=defense.num_classes, sigma=sigma,
        weights={"source": "file", "filename": "none", "sha256": "0" * 64},
    )
    config = RunConfig(command="evaluate", defense=spec.name, defense_hash="", num_samples=1, n0=1, n=1,
                       alpha=0.01, batch_size=defense.batch_size, seed=seed, **judge)
    return Evasion(spec, defense, attacks, config)
