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
on `confirm_n` copies of noise that neither the attack nor the in-loop judge has seen. With
`bounds_n` = N (the protocol's `confirm_bounds`), confirmation puts the judge's own Goodman
bounds, those of N copies, around the frequencies it measures on confirm_n: it accepts what the
judge accepts at the point's expected votes, so it is never weaker than the judge it confirms.
Bounds at confirm_n would need a margin three times smaller (0.028 against 0.089 at 15,000 and
1,500 copies), and any point accepted on one lucky judge draw would pass them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from rsbench.attacks.base import Found
from rsbench.defenses.smoothed_view import SmoothedView, goodman_bounds


def confident_class(counts: torch.Tensor, alpha: float, bounds_n: int | None = None) -> int | None:
    """The class whose Goodman lower bound exceeds every other class's upper bound, if any; the bounds are those
    of `bounds_n` draws (default: as many as were counted) at the counted frequencies."""
    total = int(counts.sum())
    if total == 0:
        return None
    lower, upper = goodman_bounds(counts.double() / total, bounds_n or total, alpha)
    top = int(counts.argmax())  # the bounds grow with the count, so only the top class can qualify
    others = torch.ones_like(upper, dtype=torch.bool)
    others[top] = False
    return top if bool(lower[top] > upper[others].max()) else None


def is_adversarial(counts: torch.Tensor, original: int, alpha: float, bounds_n: int | None = None) -> bool:
    """Equations 5-6: some class other than `original` is confidently predicted from these counts (with the
    bounds of `bounds_n` draws, by default those of the counted ones)."""
    winner = confident_class(counts, alpha, bounds_n)
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
    view: SmoothedView, candidates: list[Found], original: int, num: int, generator: torch.Generator,
    bounds_n: int | None = None,
) -> list[Found]:
    """The candidates that pass the success test again on `num` fresh copies each, with the bounds of
    `bounds_n` copies (the judge's N under a strict protocol; default `num`).

    Each candidate is tested at alpha / len(candidates) (Bonferroni), so the chance that any
    point which is not adversarial is confirmed stays below the view's alpha, however many
    candidates an attack leaves; `generator` must be used for nothing else.
    """
    alpha = view.alpha / max(len(candidates), 1)
    return [
        found for found in candidates
        if is_adversarial(view.hard_counts(found.x_adv, generator, num), original, alpha, bounds_n)
    ]
