"""What every attack shares: a Params model, a `run` method, and success judged by the harness.

An attack never decides on its own whether it succeeded. It proposes candidates to a
`Tracker`, which asks the harness's success function (for smoothing, hard votes on a
fresh, independent noise draw, with the run's N and alpha) and keeps the first and the
smallest accepted candidates with their times; the harness then confirms those on noise
no one has seen before reporting any of them. This keeps every attack honest in the
same way, whatever its inner loss and whatever settings its own params choose.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
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
    """An example the harness's in-loop judge accepted: a candidate until confirmation."""

    radius: float
    """Distance to the clean input in the attack's norm."""
    time_s: float
    """Seconds from the start of the attack until it was accepted."""
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
    """The defense under attack (Smoothing, GloRo, KW, CROWN-IBP or a plugin)."""
    epsilon: float | None
    """Radius of the threat model; None for unbounded attacks (spoofing)."""
    norm: str
    """Norm of the budget and of every distance: `l2` or `linf`."""


@dataclass
class Tracker:
    """Judges candidates with the harness's success function and keeps the few the result may rest on.

    `judge(x_adv) -> bool` is supplied by the runner; `norm` measures distances. The tracker
    keeps the first accepted candidate and the `keep` smallest distinct ones, so its memory
    is bounded however often an attack proposes; the harness confirms them after the attack
    (`rsbench.attacks.success.confirm`) and reports only confirmed ones. A candidate is only
    judged when it could join the kept ones, so proposing every iterate costs nothing once
    smaller examples are known, and proposing one point again and again is judged once.
    """

    x: torch.Tensor
    judge: Callable[[torch.Tensor], bool]
    norm: str = "l2"
    keep: int = 3
    started: float = field(default_factory=time.perf_counter)
    first: Found | None = None
    smallest: list[Found] = field(default_factory=list)
    """The `keep` smallest accepted candidates of distinct distances, smallest first."""
    iterations: int = 0
    judge_calls: int = 0
    """Candidates the judge was asked about."""
    notes: dict[str, int | float | str] = field(default_factory=dict)
    """What the attack reports about its own choices (e.g. the target class of a spoofing attack);
    recorded, never used to judge success."""

    @property
    def best(self) -> Found | None:
        """The smallest accepted candidate so far (not yet confirmed)."""
        return self.smallest[0] if self.smallest else None

    def candidates(self) -> list[Found]:
        """What confirmation tests: the kept smallest candidates and the first one, each once."""
        extra = [self.first] if self.first is not None and all(f is not self.first for f in self.smallest) else []
        return [*self.smallest, *extra]

    def distance(self, x_adv: torch.Tensor) -> float:
        """||x_adv - x|| in the tracker's norm."""
        delta = (x_adv.detach() - self.x.to(x_adv.device)).flatten()
        return float(delta.norm(p=2) if self.norm == "l2" else delta.abs().max())

    def offer(self, x_adv: torch.Tensor) -> bool:
        """Judge a candidate; keep it if accepted and among the smallest. True when the judge accepted it."""
        radius = self.distance(x_adv)
        full = len(self.smallest) >= self.keep
        if (full and radius >= self.smallest[-1].radius) or any(f.radius == radius for f in self.smallest):
            return False
        self.judge_calls += 1
        if not self.judge(x_adv.detach()):
            return False
        found = Found(radius, time.perf_counter() - self.started, x_adv.detach().cpu().clone())
        self.first = self.first or found
        self.smallest = sorted([*self.smallest, found], key=lambda f: f.radius)[: self.keep]
        return True


class Attack(ABC):
    """One attack: parameters in, adversarial candidates proposed to a Tracker.

    Subclasses define `Params` (an AttackParams model whose defaults are the paper's)
    and `run`. The model is never stored in the attack; it is passed to `run`. An attack
    that can advance several samples in lockstep, sharing the view's forward and backward
    passes, overrides `run_many` and sets `batches`.
    """

    Params: ClassVar[type[AttackParams]] = AttackParams
    kinds: ClassVar[tuple[str, ...]] = ("smoothing", "gloro", "kw", "crownibp", "lipschitz", "plugin")
    """Defense kinds the attack knows how to attack; the harness refuses the others with one line."""
    plugin_needs: ClassVar[tuple[str, ...]] = ()
    """Optional `Defense` methods a plugin must provide for this attack (e.g. `worst_case_margins`); a plugin
    without them is refused with one line."""
    batches: ClassVar[bool] = False
    """Whether `run_many` runs its samples together (so the harness prefers it to `run` one at a time)."""

    def __init__(self, params: AttackParams | None = None, **overrides: object) -> None:
        base = params.model_dump() if params is not None else {}
        self.params = self.Params.model_validate({**base, **overrides})

    @abstractmethod
    def run(self, view: object, x: torch.Tensor, label: int, tracker: Tracker, generator: torch.Generator) -> None:
        """Attack input x (true label `label`), proposing candidates to `tracker`.

        `view` is the defense's differentiable surrogate (for smoothing, the Gumbel-softmax
        view with Goodman bounds of Algorithm 2). Count iterations in `tracker.iterations`.
        """

    def run_many(self, view: object, xs: Sequence[torch.Tensor], labels: Sequence[int], trackers: Sequence[Tracker],
                 generators: Sequence[torch.Generator]) -> None:
        """`run` on each sample i with its own label, tracker and generator; every tracker must end as `run`
        leaves it (times aside). This default runs the samples one after another."""
        for x, label, tracker, generator in zip(xs, labels, trackers, generators, strict=True):
            self.run(view, x, label, tracker, generator)
