"""What every attack shares: a Params model, a `run` method, and success judged by the harness.

An attack never decides on its own whether it succeeded. It proposes candidates to a
`Tracker`, which asks the harness's success function (a fresh, independent noise draw
for smoothing) and keeps the first and the smallest adversarial example with their
times. This keeps every attack honest in the same way, whatever its inner loss.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field

from rsbench.defenses.base import Defense
from rsbench.defenses.smoothed_view import GUMBEL_TEMPERATURE


class AttackParams(BaseModel):
    """Base of every attack's parameters: frozen, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class ViewParams(AttackParams):
    """Settings of the smoothed view an attack optimises: what it differentiates, never how it is judged.

    Attacks on smoothed classifiers derive their `Params` from this model; the harness
    builds each attack's view from these fields (`view_options`) and judges every attack
    of a run with the run's own protocol (`RunConfig.judge_n`, `judge_alpha`, `confirm_n`).
    """

    num_noise: int = Field(1500, ge=1)
    """N: noisy copies per evaluation of the view (the paper's 1500)."""
    alpha: float = Field(0.005, gt=0, lt=1)
    """Significance level of the view's Goodman intervals (the paper's 0.005)."""
    temperature: float = Field(GUMBEL_TEMPERATURE, gt=0)
    """Gumbel-softmax temperature of the soft votes."""


def view_options(params: AttackParams) -> dict[str, float | int]:
    """The SmoothedView keywords an attack's params set (all of ViewParams' fields it has)."""
    return {name: getattr(params, name) for name in ViewParams.model_fields if hasattr(params, name)}


@dataclass
class Found:
    """An adversarial example confirmed by the harness."""

    radius: float
    """Distance to the clean input in the attack's norm."""
    time_s: float
    """Seconds from the start of the attack until it was confirmed."""
    x_adv: torch.Tensor
    """The example itself (C, H, W), on the CPU."""


@dataclass(frozen=True)
class Target:
    """What a budgeted attack (degradation, spoofing, evasion of a deterministic defense) works against.

    Evasion attacks on smoothing receive the defense's `SmoothedView` instead; attacks of the
    other goals receive the defense itself, its norm and the budget, and read what they need
    (`defense.surrogate(...)`, the base network) from it. The harness, not the attack, judges
    whatever the attack proposes to its Tracker.
    """

    defense: Defense
    """The defense under attack (Smoothing, GloRo or KW)."""
    epsilon: float | None
    """Radius of the threat model; None for unbounded attacks (spoofing)."""
    norm: str
    """Norm of the budget and of every distance: `l2` or `linf`."""


@dataclass
class Tracker:
    """Judges candidates with the harness's success function and keeps the first and best.

    `judge(x_adv) -> bool` is supplied by the runner; `norm` measures distances.
    Candidates are only judged when they could improve on the best one, so proposing
    every iterate costs nothing once a smaller example is known.
    """

    x: torch.Tensor
    judge: Callable[[torch.Tensor], bool]
    norm: str = "l2"
    started: float = field(default_factory=time.perf_counter)
    first: Found | None = None
    best: Found | None = None
    iterations: int = 0
    notes: dict[str, int | float | str] = field(default_factory=dict)
    """What the attack reports about its own choices (e.g. the target class of a spoofing attack);
    recorded, never used to judge success."""

    def distance(self, x_adv: torch.Tensor) -> float:
        """||x_adv - x|| in the tracker's norm."""
        delta = (x_adv.detach() - self.x.to(x_adv.device)).flatten()
        return float(delta.norm(p=2) if self.norm == "l2" else delta.abs().max())

    def offer(self, x_adv: torch.Tensor) -> bool:
        """Judge a candidate; record it if adversarial and smaller than the best so far."""
        radius = self.distance(x_adv)
        if self.best is not None and radius >= self.best.radius:
            return False
        if not self.judge(x_adv.detach()):
            return False
        found = Found(radius, time.perf_counter() - self.started, x_adv.detach().cpu().clone())
        self.first = self.first or found
        self.best = found
        return True


class Attack(ABC):
    """One attack: parameters in, adversarial candidates proposed to a Tracker.

    Subclasses define `Params` (an AttackParams model whose defaults are the paper's)
    and `run`. The model is never stored in the attack; it is passed to `run`.
    """

    Params: ClassVar[type[AttackParams]] = AttackParams

    def __init__(self, params: AttackParams | None = None, **overrides: object) -> None:
        base = params.model_dump() if params is not None else {}
        self.params = self.Params.model_validate({**base, **overrides})

    @abstractmethod
    def run(self, view: object, x: torch.Tensor, label: int, tracker: Tracker, generator: torch.Generator) -> None:
        """Attack input x (true label `label`), proposing candidates to `tracker`.

        `view` is the defense's differentiable surrogate (for smoothing, the Gumbel-softmax
        view with Goodman bounds of Algorithm 2). Count iterations in `tracker.iterations`.
        """
