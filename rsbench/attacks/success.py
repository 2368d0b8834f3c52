"""When an attack on a smoothed classifier succeeds: the threat model of the certification-aware attack.

A smoothed prediction is only trusted when its class's Goodman lower bound exceeds the
upper bound of every other class (equation 5). An input x' is adversarial when such a
confident prediction exists and names a class other than the original one (equation 6);
merely making the two top intervals overlap is not enough. Success is always judged
from hard argmax counts of the base classifier on fresh noise, never from the
differentiable view an attack optimised, so every attack is held to the same standard:
the run's protocol (`RunConfig.judge_n`, `judge_alpha`) sets N and alpha, never the attack.

One test on N copies accepts a borderline point now and then, and an attack asks about a
hundred times, so an accepted candidate is only reported after `confirm` repeats the test
on `confirm_n` copies of noise that neither the attack nor the in-loop judge has seen.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from rsbench.attacks.base import Found
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
    """The in-loop success function: hard counts on a fresh draw of the view's N, judged at its alpha.

    The harness passes a view built with the run's judge settings, and a `generator`
    reserved for judging, so the noise that decides success is independent of the noise
    the attack optimised against.
    """

    def judge(x_adv: torch.Tensor) -> bool:
        return is_adversarial(view.hard_counts(x_adv, generator), original, view.alpha)

    return judge


def confirm(
    view: SmoothedView, candidates: list[Found], original: int, num: int, generator: torch.Generator
) -> list[Found]:
    """The candidates that pass the success test again on `num` fresh copies each.

    Each candidate is tested at alpha / len(candidates) (Bonferroni), so the chance that any
    point which is not adversarial is confirmed stays below the view's alpha, however many
    candidates an attack leaves; `generator` must be used for nothing else.
    """
    alpha = view.alpha / max(len(candidates), 1)
    return [
        found for found in candidates
        if is_adversarial(view.hard_counts(found.x_adv, generator, num), original, alpha)
    ]
