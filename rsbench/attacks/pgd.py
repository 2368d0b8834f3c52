"""Projected gradient ascent with l2-normalized steps (equation 1 of the certification-aware attack paper).

The baseline of the paper's Table 1: from the clean input, repeatedly step a fixed l2
length up the cross-entropy of the smoothed frequencies, clipping to [0, 1] and never
projecting onto a norm ball, so the perturbation may grow until the prediction flips.
Every iterate is proposed to the tracker, which keeps the first and the smallest
example the harness confirms.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import Field

from rsbench.attacks.base import Attack, Tracker, ViewParams
from rsbench.attacks.losses import cross_entropy, scores
from rsbench.attacks.steps import l2_normalize
from rsbench.defenses.smoothed_view import LossFn, SmoothedView


class PGDParams(ViewParams):
    """Appendix C's settings."""

    iterations: int = Field(100, ge=1)
    """Gradient steps (the paper's 100)."""
    step: float = Field(20 / 255, gt=0)
    """l2 length of every step, the paper's epsilon = 20/255 (Appendix E.4)."""


def _smoothed_cross_entropy(label: int) -> LossFn:
    """The view's loss for a sample of this label: cross-entropy of its smoothed frequencies."""
    return lambda out, _: cross_entropy(scores(out), label)


class PGD(Attack):
    """l2-normalized gradient ascent on the smoothed cross-entropy, clipped to [0, 1]."""

    Params = PGDParams
    kinds = ("smoothing",)
    batches = True
    params: PGDParams

    def run(self, view: SmoothedView, x: torch.Tensor, label: int, tracker: Tracker, generator: torch.Generator) -> None:
        self.run_many(view, [x], [label], [tracker], [generator])

    def run_many(self, view: SmoothedView, xs: Sequence[torch.Tensor], labels: Sequence[int],
                 trackers: Sequence[Tracker], generators: Sequence[torch.Generator]) -> None:
        p = self.params
        x_advs = [x.to(view.device).clone() for x in xs]
        losses = [_smoothed_cross_entropy(label) for label in labels]
        for _ in range(p.iterations):
            results = view.grad_many(x_advs, losses, generators)
            for i, ((_, _, grad), tracker) in enumerate(zip(results, trackers, strict=True)):
                x_advs[i] = (x_advs[i] + p.step * l2_normalize(grad)).clamp(0.0, 1.0)
                tracker.iterations += 1
                tracker.offer(x_advs[i])
