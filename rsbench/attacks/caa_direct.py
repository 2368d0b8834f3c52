"""`caa-direct`: the simpler certification-aware attack the CAA authors released after the paper.

Three phases, chosen afresh at every iterate from the smoothed view:

1. the original class is still on top: a normalized step down the margin
   E0_lower - E1_upper, of length R clipped to [min_step, max_step] (R is the radius
   of Algorithm 2, so the step reaches the edge of the certified region);
2. another class is on top but not separated by delta: a step of 4 * min_step up its margin;
3. another class is on top with margin above delta: the iterate is proposed to the
   tracker, then moved straight back towards the clean image by min(0.95 R, max_step),
   which stays inside the adversarial class's certificate.

It stops early after `patience` steps without a smaller phase-3 distance, or when a
phase-3 radius falls below `min_radius` (steps back would no longer make progress).
"""

from __future__ import annotations

import torch
from pydantic import Field

from rsbench.attacks.base import Attack, Tracker, ViewParams
from rsbench.attacks.caa import SHARP_TEMPERATURE
from rsbench.attacks.steps import l2_normalize
from rsbench.defenses.smoothed_view import SmoothedView, ViewOutput


class CAADirectParams(ViewParams):
    """Settings of the released variant; the defaults are the released ones."""

    temperature: float = Field(SHARP_TEMPERATURE, gt=0)
    """Gumbel-softmax temperature of the view (as CAA's)."""
    iterations: int = Field(100, ge=1)
    """Largest number of iterations."""
    min_step: float = Field(0.01, gt=0)
    """Shortest step while the original class is predicted; phase 2 steps 4 * min_step."""
    max_step: float = Field(0.125, gt=0)
    """Longest step in phases 1 and 3."""
    delta: float = Field(0.025, ge=0)
    """Margin E0_lower - E1_upper above which the adversarial class counts as separated."""
    back_factor: float = Field(0.95, gt=0, le=1)
    """Fraction of the adversarial certified radius moved back towards the clean image."""
    patience: int = Field(10, ge=1)
    """Stop after this many iterations without a smaller phase-3 distance."""
    min_radius: float = Field(0.01, ge=0)
    """Stop when a phase-3 certified radius falls below this."""


class CAADirect(Attack):
    """Certified-radius steps out of the original class, then straight back towards the clean image."""

    Params = CAADirectParams
    kinds = ("smoothing",)
    params: CAADirectParams

    def run(self, view: SmoothedView, x: torch.Tensor, label: int, tracker: Tracker, generator: torch.Generator) -> None:
        p = self.params
        x = x.to(view.device)
        x_adv = x.clone()
        best, stale = float("inf"), 0

        def margin(out: ViewOutput, _: torch.Tensor) -> torch.Tensor:
            return out.e0_lower - out.e1_upper

        for _ in range(p.iterations):
            _, out, grad = view.grad(x_adv, margin, generator)
            tracker.iterations += 1
            radius = float(out.radius)
            improved = False
            if out.top == label:
                x_adv = x_adv - min(max(radius, p.min_step), p.max_step) * l2_normalize(grad)
            elif float(out.e0_lower - out.e1_upper) <= p.delta:
                x_adv = x_adv + 4 * p.min_step * l2_normalize(grad)
            else:
                tracker.offer(x_adv)
                distance = float((x_adv - x).norm(p=2))
                improved, best = distance < best, min(distance, best)
                if radius < p.min_radius:
                    return
                x_adv = x_adv + min(p.back_factor * radius, p.max_step, distance) * l2_normalize(x - x_adv)
            stale = 0 if improved else stale + (best < float("inf"))
            if stale >= p.patience:
                return
            x_adv = x_adv.clamp(0.0, 1.0)
