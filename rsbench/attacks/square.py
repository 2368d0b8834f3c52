"""Square attack (Andriushchenko et al., ECCV 2020): a random search that only calls the network's forward pass.

Why a gradient-free attack: every other bounded attack follows gradients, and a network whose gradients say nothing
useful (saturated units, a flat loss around the data, a graph built to mislead first-order methods) defeats them while
points that change its label lie well inside the certified radius. Square proposes perturbations shaped as random
square windows and keeps a proposal only when it lowers the margin f_y - max_{k != y} f_k; it never differentiates.

linf, as in the paper: the search starts from vertical stripes of +-eps (one random sign per column and channel);
each step sets one s x s window, in every channel, to +-eps (a random sign per channel) and clips to the ball and
[0, 1]. The window's side follows the share p of the image it covers, sqrt(p * h * w), with p halved on the
paper's schedule (its marks for 10,000 queries, scaled to `queries`). l2: the same windows, of height
`l2_step` * eps / s per pixel with a random sign per channel, are added to the current perturbation and the sum is
projected onto the ball and [0, 1] (the exact projection of `rsbench.attacks.steps`) -- a simpler update than the
paper's l2 one, which moves mass between two windows to stay on the sphere. Every accepted point with a negative
margin is proposed to the tracker.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field

from rsbench.attacks.base import Attack, AttackParams, Target, Tracker
from rsbench.attacks.bounded_pgd import DETERMINISTIC_KINDS, budgeted
from rsbench.attacks.losses import margin
from rsbench.attacks.steps import project

SCHEDULE = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
"""Queries (of 10,000) after which the paper halves the window's share p."""


class SquareParams(AttackParams):
    """The random search's budget. The paper's runs use 10,000 queries; the networks rsbench audits are small, and a
    sample's search stops at its first label change."""

    queries: int = Field(1000, ge=1)
    """Forward passes per restart after the initial one."""
    p_init: float = Field(0.3, gt=0, le=1)
    """Initial share of the image a window covers (the paper's MNIST setting)."""
    restarts: int = Field(1, ge=1)
    """Independent searches per input, each from its own random stripes."""
    l2_step: float = Field(0.25, gt=0)
    """l2: a window's height per pixel, in units of eps / s (a whole eps moves the point too far per step to settle:
    on a linear classifier, 1 misses the boundary at 1.3 times its distance where 0.25 finds it)."""


def window_share(p_init: float, query: int, queries: int) -> float:
    """p after `query` of `queries` queries: p_init halved at each of the paper's marks passed (scaled to `queries`)."""
    passed = sum(query > mark * queries / 10_000 for mark in SCHEDULE)
    return p_init / 2**passed


class Square(Attack):
    """Untargeted Square attack inside the target's ball, on a deterministic defense's network, forward passes only."""

    Params = SquareParams
    params: SquareParams
    kinds = DETERMINISTIC_KINDS

    def run(self, target: Target, x: torch.Tensor, label: int, tracker: Tracker, generator: torch.Generator) -> None:
        eps, model = budgeted(target, "the Square attack")
        x, norm = x.to(target.defense.device), target.norm

        def loss(candidate: torch.Tensor) -> float:
            with torch.no_grad():
                return float(margin(model(candidate.unsqueeze(0))[0], label))

        for _ in range(self.params.restarts):
            best = project(x + eps * self._stripes(x, generator, norm), x, eps, norm)
            best_loss = loss(best)
            tracker.iterations += 1
            if best_loss < 0 and tracker.offer(best):
                return
            for query in range(self.params.queries):
                share = window_share(self.params.p_init, query, self.params.queries)
                proposal = self._propose(best, x, eps, norm, share, self.params.l2_step, generator)
                proposal_loss = loss(proposal)
                tracker.iterations += 1
                if proposal_loss < best_loss:
                    best, best_loss = proposal, proposal_loss
                    if best_loss < 0 and tracker.offer(best):
                        return

    @staticmethod
    def _stripes(x: torch.Tensor, generator: torch.Generator, norm: str) -> torch.Tensor:
        """Vertical stripes of +-1 (one sign per column and channel); unit l2 norm in l2."""
        channels, height, width = x.shape
        signs = _signs((channels, 1, width), generator).to(x).expand(channels, height, width)
        return signs if norm == "linf" else signs / math.sqrt(signs.numel())

    @staticmethod
    def _propose(best: torch.Tensor, x: torch.Tensor, eps: float, norm: str, share: float, l2_step: float,
                 generator: torch.Generator) -> torch.Tensor:
        """`best` with one random s x s window changed: set to +-eps around x (linf) or shifted by +-l2_step eps / s
        (l2)."""
        channels, height, width = x.shape
        side = min(max(round(math.sqrt(share * height * width)), 1), height, width)
        top = int(torch.randint(height - side + 1, (), generator=generator))
        left = int(torch.randint(width - side + 1, (), generator=generator))
        signs = _signs((channels, 1, 1), generator).to(x)
        proposal = best.clone()
        window = (slice(None), slice(top, top + side), slice(left, left + side))
        if norm == "linf":
            proposal[window] = x[window] + eps * signs
        else:
            proposal[window] = proposal[window] + l2_step * eps / side * signs
        return project(proposal, x, eps, norm)


def _signs(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Uniform random +-1 of `shape`, drawn from `generator` on the CPU."""
    return torch.randint(2, shape, generator=generator).float() * 2 - 1
