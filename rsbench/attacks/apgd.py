"""AutoAttack for randomized models: APGD-CE then APGD-DLR with EOT (Croce & Hein, ICML 2020), l2.

APGD maximises a loss inside the budget {||x' - x||_2 <= eps} ∩ [0, 1]^d with
l2-normalized steps, momentum 0.75 and a step size that starts at 2 eps and is halved
at checkpoints w_j = ceil(p_j N) (p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06))
whenever fewer than rho = 75% of the steps since the last checkpoint increased the loss,
or the step size was not halved at the last checkpoint and the best loss has not
improved since; each halving restarts from the best point. Every gradient is averaged
over `eot` draws of the view's noise (Expectation over Transformation), as AutoAttack's
version for randomized defenses does; so is the loss that drives the step-size rule. The
draws are taken in one pass of the view (`SmoothedView.grad(..., draws=eot)`).

The budget follows the certification-aware attack paper: eps = max(2 R, 0.1), with R the
radius of its equation 3 at the clean input, from hard votes of N copies (the radius the
soft votes give is smaller, and the budget with it). As in AutoAttack, APGD-DLR only runs
when APGD-CE found nothing; DLR needs three classes, so binary problems get APGD-CE only.
Every iterate is proposed to the tracker.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from pydantic import Field

from rsbench.attacks.base import Attack, Tracker, ViewParams
from rsbench.attacks.losses import cross_entropy, dlr, scores
from rsbench.attacks.steps import l2_normalize, project_l2_ball_box
from rsbench.defenses.smoothed_view import SmoothedView

LOSSES: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {"ce": cross_entropy, "dlr": dlr}


def checkpoints(iterations: int) -> list[int]:
    """APGD's checkpoints w_j = ceil(p_j * iterations) up to `iterations`, starting with w_0 = 0."""
    marks, before, p = [0], 0.0, 0.22
    while p <= 1.0:
        mark = math.ceil(p * iterations - 1e-9)  # p_j is a sum of decimals; forgive its rounding error
        if mark > marks[-1]:
            marks.append(mark)
        before, p = p, p + max(p - before - 0.03, 0.06)
    return marks


class AutoAttackParams(ViewParams):
    """AutoAttack's 'rand' settings and the paper's budget (Appendix C)."""

    iterations: int = Field(100, ge=1)
    """APGD iterations per loss (AutoAttack's 100)."""
    eot: int = Field(20, ge=1)
    """Noise draws each loss and gradient is averaged over (AutoAttack's 20 for randomized defenses)."""
    radius_factor: float = Field(2.0, gt=0)
    """eps = max(radius_factor * R, min_epsilon), R equation 3's radius at the clean input (the paper's 2)."""
    min_epsilon: float = Field(0.1, gt=0)
    """Smallest budget, used when the clean radius is small or negative (the paper's 0.1)."""
    momentum: float = Field(0.75, gt=0, le=1)
    """alpha: weight of the new step against the previous move (APGD's 0.75)."""
    rho: float = Field(0.75, gt=0, le=1)
    """Fraction of loss-increasing steps between checkpoints below which the step is halved (APGD's 0.75)."""
    losses: tuple[Literal["ce", "dlr"], ...] = ("ce", "dlr")
    """APGD runs in order, each only while nothing was found (AutoAttack's APGD-CE, APGD-DLR)."""


class AutoAttack(Attack):
    """APGD-CE and APGD-DLR with EOT inside an l2 ball of twice the clean certified radius."""

    Params = AutoAttackParams
    kinds = ("smoothing",)
    params: AutoAttackParams

    def run(self, view: SmoothedView, x: torch.Tensor, label: int, tracker: Tracker, generator: torch.Generator) -> None:
        p = self.params
        x = x.to(view.device)
        eps = max(p.radius_factor * view.hard_radius(x, generator), p.min_epsilon)
        for name in p.losses:
            if tracker.best is not None or (name == "dlr" and view.num_classes < 3):
                continue
            self.apgd(view, x, label, LOSSES[name], eps, tracker, generator)

    def apgd(
        self,
        view: SmoothedView,
        x: torch.Tensor,
        label: int,
        loss: Callable[[torch.Tensor, int], torch.Tensor],
        eps: float,
        tracker: Tracker,
        generator: torch.Generator,
    ) -> None:
        """One APGD run maximising `loss` of the smoothed scores within eps of x."""
        p = self.params

        def evaluate(point: torch.Tensor) -> tuple[float, torch.Tensor]:
            value, _, grad = view.grad(point, lambda out, _: loss(scores(out), label), generator, draws=p.eot)
            return value, grad

        def project(z: torch.Tensor) -> torch.Tensor:
            return project_l2_ball_box(z, x, eps)

        start = torch.randn(x.shape, generator=generator, device=generator.device).to(x)
        current = project(x + eps * l2_normalize(start))
        value, grad = evaluate(current)
        tracker.offer(current)
        previous = current
        best, best_value, best_grad = current, value, grad
        values = [value]
        marks = checkpoints(p.iterations)
        step = 2 * eps
        last_mark, halved_last, best_at_last = 0, False, best_value
        for k in range(p.iterations):
            pull = 1.0 if k == 0 else p.momentum
            z = project(current + step * l2_normalize(grad))
            previous, current = current, project(current + pull * (z - current) + (1 - pull) * (current - previous))
            value, grad = evaluate(current)
            tracker.iterations += 1
            tracker.offer(current)
            if value > best_value:
                best, best_value, best_grad = current, value, grad
            values.append(value)
            if k in marks[1:]:
                increases = sum(values[i + 1] > values[i] for i in range(last_mark, k))
                oscillating = increases < p.rho * (k - last_mark)
                stalled = not halved_last and best_value <= best_at_last
                halved_last = oscillating or stalled
                if halved_last:
                    step /= 2
                    current, grad = best, best_grad
                    values[-1] = best_value
                last_mark, best_at_last = k, best_value
