"""When an attack on a smoothed classifier succeeds: the threat model of the certification-aware attack.

A smoothed prediction is only trusted when its class's Goodman lower bound exceeds the
upper bound of every other class (equation 5). An input x' is adversarial when such a
confident prediction exists and names a class other than the original one (equation 6);
merely making the two top intervals overlap is not enough. Success is always judged
from hard argmax counts of the base classifier on fresh noise, never from the
differentiable view an attack optimised, so every attack is held to the same standard.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from rsbench.defenses.smoothed_view import SmoothedView, goodman_bounds


def confident_class(counts: torch.Tensor, alpha: float) -> int | None:
    """The class whose Goodman lower bound exceeds every other class's upper bound, if any."""
    total = int(counts.sum())
    if total == 0:
        return None
    lower, upper = goodman_bounds(counts.double() / total, total, alpha)
    top = int(counts.argmax())  # the bounds grow with the count, so only the top class can qualify
    others = torch.ones_like(upper, dtype=torch.bool)
    others[top] = False
    return top if bool(lower[top] > upper[others].max()) else None


def is_adversarial(counts: torch.Tensor, original: int, alpha: float) -> bool:
    """Equations 5-6: some class other than `original` is confidently predicted from these counts."""
    winner = confident_class(counts, alpha)
    return winner is not None and winner != original


def make_judge(view: SmoothedView, original: int, generator: torch.Generator) -> Callable[[torch.Tensor], bool]:
    """The success function of a run: hard counts on a fresh draw of the view's N, judged at its alpha.

    `generator` should be reserved for judging, so the noise that decides success is
    independent of the noise the attack optimised against.
    """

    def judge(x_adv: torch.Tensor) -> bool:
        return is_adversarial(view.hard_counts(x_adv, generator), original, view.alpha)

    return judge
