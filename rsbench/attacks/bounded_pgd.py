"""Budgeted PGD (Madry et al., 2018) in l2 and linf, against the network under a deterministic defense.

GloRo, KW, CROWN-IBP and plugin certifiers certify a plain network (`Defense.model`): GloRo's logits
without ⊥, KW's and CROWN-IBP's ReLU networks, a plugin's own. An
evasion attack on such a defense succeeds when that network's label changes within the
budget, which the certificate rules out for every point certified at the budget. The
attack ascends the untargeted cross-entropy from the clean input and from random points
of the ball, projecting every step back onto the ball ∩ [0, 1], and proposes every
iterate to the tracker.

`ascend` is the loop itself, shared with the degradation attacks, which differ only in
the loss, the budget and what they do with each iterate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from rsbench.attacks.base import Attack, AttackParams, Target, Tracker
from rsbench.attacks.steps import ascent_direction, project, random_start
from rsbench.defenses.base import Defense
from rsbench.defenses.smoothing import Smoothing
from rsbench.errors import RsbenchError
from rsbench.specs import Norm


class BudgetParams(AttackParams):
    """Steps of a budgeted ascent. Madry et al. take steps of 2.5 budget / iterations, so that
    a run can cross the ball and come back; 50 of them converge on these networks."""

    iterations: int = Field(50, ge=1)
    """Gradient steps per restart."""
    step_factor: float = Field(2.5, gt=0)
    """Step length, in units of budget / iterations (l2 length, or the linf size of the sign step)."""
    restarts: int = Field(5, ge=1)
    """Runs per input: the first from the clean input, the others from random points of the ball."""


def ascend(
    x: torch.Tensor,
    gradient: Callable[[torch.Tensor], torch.Tensor],
    budget: float,
    norm: Norm,
    params: BudgetParams,
    generator: torch.Generator,
) -> Iterator[torch.Tensor]:
    """Every iterate of projected gradient ascent of the loss whose `gradient` is given, within `budget` of x."""
    step = params.step_factor * budget / params.iterations
    for restart in range(params.restarts):
        x_adv = x.clone() if restart == 0 else random_start(x, budget, norm, generator)
        for _ in range(params.iterations):
            x_adv = project(x_adv + step * ascent_direction(gradient(x_adv), norm), x, budget, norm)
            yield x_adv


def network(defense: Defense, attack: str) -> nn.Module:
    """The logits a deterministic defense certifies (GloRo's without ⊥, KW's or CROWN-IBP's network, a plugin's
    model), or a refusal."""
    model = getattr(defense, "model", None)
    if isinstance(defense, Smoothing) or not isinstance(model, nn.Module):
        raise RsbenchError(f"{attack} attacks the network of a deterministic defense, got {type(defense).__name__}")
    return model


DETERMINISTIC_KINDS = ("gloro", "kw", "crownibp", "lipschitz", "plugin")
"""The kinds whose certificate protects a plain network (`network`), which bounded attacks attack."""


def budgeted(target: Target, attack: str) -> tuple[float, nn.Module]:
    """The budget and the network a bounded attack on a deterministic defense works with, or a refusal naming it."""
    if target.epsilon is None:
        raise RsbenchError(f"{attack} needs a budget epsilon")
    return target.epsilon, network(target.defense, attack)


def cross_entropy_gradient(model: nn.Module, label: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """x -> gradient of the model's cross-entropy at x for `label` (x unbatched)."""
    target = torch.tensor([label])

    def gradient(x: torch.Tensor) -> torch.Tensor:
        leaf = x.detach().requires_grad_(True)
        loss = F.cross_entropy(model(leaf.unsqueeze(0)), target.to(x.device))
        return torch.autograd.grad(loss, leaf)[0]

    return gradient


class BoundedPGD(Attack):
    """Untargeted PGD with restarts inside the target's ball, on the defense's underlying network."""

    Params = BudgetParams
    params: BudgetParams
    kinds = DETERMINISTIC_KINDS

    def run(self, target: Target, x: torch.Tensor, label: int, tracker: Tracker, generator: torch.Generator) -> None:
        eps, model = budgeted(target, "bounded PGD")
        x = x.to(target.defense.device)
        gradient = cross_entropy_gradient(model, label)
        for x_adv in ascend(x, gradient, eps, target.norm, self.params, generator):
            tracker.iterations += 1
            if tracker.offer(x_adv):
                return
