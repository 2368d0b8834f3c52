"""Degradation attacks: move a certified input within ε so that the defense's run-time check rejects it.

A defense that answers only where it certifies its label at ε (GloRo's ⊥, KW's or
CROWN-IBP's failed bound, smoothing's abstention or radius below ε) can be made to refuse inputs that are no
adversarial examples at all: a point x' within ε of a point certified at ε keeps its label
(x' is not adversarial), yet the defense may fail to certify it. Every attack here
proposes such points x' (||x' - x|| <= ε, inside [0, 1]) to the tracker, whose judge is
the defense's own check; they differ in what they ascend and in how far they may go.

- `degradation-pgd` (Algorithm 3.1 of "Degradation Attacks on Certifiably Robust Neural
  Networks"): PGD on the classifier's cross-entropy within 2ε, each iterate projected back
  as the paper does (l2: scaled toward x onto the ε-sphere; linf: clipped). On smoothing the
  inner attack is SPGD (Algorithm 3.2), the paper's attack on smoothed models.
- `degradation-eps-pgd` (Appendix B.1): the same ascent within ε, nothing to project. GloRo,
  KW, CROWN-IBP and plugins; its smoothing counterpart is `degradation-spgd`.
- `degradation-spgd` (Algorithm 3.2): smoothing only; steps up the cross-entropy of the base
  logits averaged over n noisy copies at the defense's σ, normalized, inside ε ∩ [0, 1].
- `degradation-adaptive` (rsbench's own): ascends the rejection itself within ε: GloRo's
  certified radius downwards (⊥ wins once it drops below ε), KW's or CROWN-IBP's largest
  worst-case logit of another class, through the bound the defense certifies with (certified
  exactly while all are negative), a plugin's likewise through its `worst_case_margins`, the
  smoothed view's radius downwards.

The paper gives no iteration counts, step sizes or noise samples. rsbench takes Madry et
al.'s PGD (50 steps of 2.5 budget / 50, i.e. length 0.05 budget) from the clean input,
once, as the paper's off-the-shelf PGD; SPGD averages n = 100 noisy copies per step. Every
iterate, not only the last, is proposed, so the harness can stop at the first rejection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field

from rsbench.attacks.base import Attack, Target, Tracker, ViewParams, view_options
from rsbench.attacks.bounded_pgd import DETERMINISTIC_KINDS, BudgetParams, ascend, cross_entropy_gradient
from rsbench.attacks.steps import project_linf_ball_box
from rsbench.defenses.gloro import GloRo
from rsbench.defenses.kw import KW
from rsbench.defenses.smoothing import Smoothing
from rsbench.errors import RsbenchError
from rsbench.specs import Norm

Gradient = Callable[[torch.Tensor], torch.Tensor]


class DegradationParams(BudgetParams):
    """Madry et al.'s PGD steps, one run from the clean input; n noisy copies where smoothing is attacked."""

    restarts: int = Field(1, ge=1)
    """Runs per input (the paper runs its PGD once)."""
    num_noise: int = Field(100, ge=1)
    """Smoothing only: noisy copies whose logits SPGD averages at every step (the paper leaves n open)."""


class AdaptiveParams(DegradationParams, ViewParams):
    """DegradationParams, and on smoothing the view whose certified radius is pushed down (N = 1500, alpha = 0.005)."""


def radial_projection(z: torch.Tensor, x: torch.Tensor, eps: float, norm: Norm) -> torch.Tensor:
    """Algorithm 3.1's Project: l2 scales z - x down to length eps (z stays in [0, 1], as x does); linf clips."""
    if norm == "linf":
        return project_linf_ball_box(z, x, eps)
    length = float((z - x).norm(p=2))
    return z if length <= eps else x + eps / length * (z - x)


def spgd_gradient(defense: Smoothing, label: int, num_noise: int, generator: torch.Generator) -> Gradient:
    """x -> gradient of the cross-entropy of the base logits averaged over `num_noise` fresh N(0, σ²) copies."""
    target = torch.tensor([label])

    def gradient(x: torch.Tensor) -> torch.Tensor:
        noise = torch.randn((num_noise, *x.shape), generator=generator, device=generator.device, dtype=x.dtype)
        leaf = x.detach().requires_grad_(True)
        logits = defense.base_classifier(leaf.unsqueeze(0) + defense.sigma * noise.to(x.device)).mean(dim=0)
        loss = F.cross_entropy(logits.unsqueeze(0), target.to(x.device))
        return torch.autograd.grad(loss, leaf)[0]

    return gradient


class _Degradation(Attack):
    """The shared loop: ascend `gradient` within budget_factor * ε, propose each iterate projected onto the ε-ball."""

    Params = DegradationParams
    params: DegradationParams
    name: ClassVar[str]
    budget_factor: ClassVar[float]

    def gradient(self, target: Target, label: int, generator: torch.Generator) -> Gradient:
        """The classifier's cross-entropy: the network under GloRo or KW, SPGD's average under smoothing."""
        defense = target.defense
        if isinstance(defense, Smoothing):
            return spgd_gradient(defense, label, self.params.num_noise, generator)
        return cross_entropy_gradient(defense.model, label)

    def run(self, target: Target, x: torch.Tensor, label: int, tracker: Tracker, generator: torch.Generator) -> None:
        defense, eps = target.defense, target.epsilon
        if eps is None or target.norm != defense.norm:
            raise RsbenchError(f"{self.name} needs a budget in the defense's norm {defense.norm}, got {eps} in {target.norm}")
        x = x.to(defense.device)
        gradient = self.gradient(target, label, generator)
        for x_adv in ascend(x, gradient, self.budget_factor * eps, target.norm, self.params, generator):
            tracker.iterations += 1
            if tracker.offer(radial_projection(x_adv, x, eps, target.norm)):
                return


class DegradationPGD(_Degradation):
    """Algorithm 3.1: PGD within 2ε (SPGD on smoothing), projected onto the ε-ball."""

    name = "degradation-pgd"
    budget_factor = 2.0


class DegradationEpsPGD(_Degradation):
    """Appendix B.1: PGD within ε on the network under GloRo, KW, CROWN-IBP or a plugin."""

    name = "degradation-eps-pgd"
    budget_factor = 1.0
    kinds = DETERMINISTIC_KINDS


class DegradationSPGD(_Degradation):
    """Algorithm 3.2: SPGD within ε on a smoothed classifier."""

    name = "degradation-spgd"
    budget_factor = 1.0
    kinds = ("smoothing",)


class DegradationAdaptive(_Degradation):
    """Ascends the defense's rejection within ε instead of the classifier's loss."""

    Params = AdaptiveParams
    params: AdaptiveParams
    name = "degradation-adaptive"
    budget_factor = 1.0
    plugin_needs = ("worst_case_margins",)

    def gradient(self, target: Target, label: int, generator: torch.Generator) -> Gradient:
        """GloRo: minus the certified radius, max_i (y_i - y_label) / K_label,i, which ⊥ beats the label's logit
        exactly when it exceeds -ε (⊥ - y_label itself weighs each class by K, and its ascent can stall on a far
        class with a large K); KW and CROWN-IBP: the largest worst-case logit of another class by the defense's own
        bound; plugins: likewise by their `worst_case_margins`; smoothing: minus the view's radius."""
        defense, eps = target.defense, float(target.epsilon or 0.0)
        if isinstance(defense, Smoothing):
            view = defense.surrogate(**view_options(self.params))
            return lambda x: view.grad(x, lambda out, _: -out.radius, generator)[2]
        others = torch.arange(defense.num_classes) != label
        if isinstance(defense, GloRo):
            k = defense.k[label].clamp(min=torch.finfo(torch.float32).tiny)

            def rejection(leaf: torch.Tensor) -> torch.Tensor:
                logits = defense.model(leaf.unsqueeze(0))[0]
                return ((logits - logits[label]) / k.to(logits))[others.to(leaf.device)].max()
        elif isinstance(defense, KW):
            bound = defense.surrogate(epsilon=eps)
            labels = torch.tensor([label], device=defense.device)

            def rejection(leaf: torch.Tensor) -> torch.Tensor:
                return bound(leaf.unsqueeze(0), labels)[0][others.to(leaf.device)].max()
        else:
            labels = torch.tensor([label], device=defense.device)

            def rejection(leaf: torch.Tensor) -> torch.Tensor:
                return defense.worst_case_margins(leaf.unsqueeze(0), labels, eps)[0][others.to(leaf.device)].max()

        def gradient(x: torch.Tensor) -> torch.Tensor:
            leaf = x.detach().requires_grad_(True)
            return torch.autograd.grad(rejection(leaf), leaf)[0]

        return gradient
