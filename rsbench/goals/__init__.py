"""Goals: what one attack on one sample is run and judged for, per goal (evasion, degradation, spoofing)."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import BaseModel

from rsbench import registry, runner
from rsbench.attacks.base import Attack, Target, Tracker
from rsbench.defenses import plugin_class
from rsbench.defenses.base import Defense, provides
from rsbench.errors import RsbenchError
from rsbench.records import RunConfig, RunResult, SampleRecord
from rsbench.specs import AttackSpec, DefenseSpec

GOALS = {
    "evasion": "rsbench.goals.evasion:Evasion",
    "degradation": "rsbench.goals.degradation:Degradation",
    "spoofing": "rsbench.goals.spoofing:Spoofing",
}
"""Goal name -> `module:class` of its job, imported on use."""


@dataclass(frozen=True)
class Sample:
    """One test sample handed to a goal: the input, its label, its index and its clean certificate."""

    x: torch.Tensor
    label: int
    index: int
    clean: SampleRecord


class Goal(ABC):
    """One goal's job on one defense, built once per worker process by the engine.

    A goal says which certified samples qualify for attack (`qualifies`), how one attack runs on
    one sample and is judged (`attack`), and, from the records alone, the goal's metrics, table
    and plots. The engine (`rsbench.engine`) does the rest: tasks, workers, resume, run directory.
    """

    name: ClassVar[str]
    record_type: ClassVar[type[BaseModel]]
    """The record appended to `samples.jsonl` for each (sample, attack)."""
    statistics: ClassVar[str]
    """How to read the goal's numbers: what is random and at which confidence."""
    keeps_examples: ClassVar[bool] = False
    """Whether the run saves every example even without --save-examples (its pictures need them)."""

    def __init__(self, defense_spec: DefenseSpec, defense: Defense, attack_specs: Sequence[AttackSpec],
                 config: RunConfig) -> None:
        self.spec, self.defense, self.config = defense_spec, defense, config
        self.attacks = {spec.name: (spec, instantiate(spec, defense_spec)) for spec in attack_specs}

    @classmethod
    @abstractmethod
    def qualifies(cls, config: RunConfig, clean: SampleRecord) -> bool:
        """Whether the sample with this clean certificate is attacked in a run with this config."""

    @abstractmethod
    def attack(self, name: str, x: torch.Tensor, label: int, index: int,
               clean: SampleRecord) -> tuple[BaseModel, torch.Tensor | None]:
        """Run attack `name` on sample `index` (clean certificate `clean`), judge it; its record and the
        example to save (or None)."""

    def attack_many(self, name: str, samples: Sequence[Sample]) -> list[tuple[BaseModel, torch.Tensor | None]]:
        """`attack` on each of several samples, in order. A goal whose attacks can run several samples in
        one batch overrides this; its records must equal the one-at-a-time ones (times aside)."""
        return [self.attack(name, s.x, s.label, s.index, s.clean) for s in samples]

    def run_in_ball(self, name: str, x: torch.Tensor, label: int, index: int, epsilon: float,
                    accepts: Callable[[torch.Tensor], bool]) -> tuple[Tracker, float]:
        """Run attack `name` against the defense within `epsilon` of x, in the defense's norm.

        The harness accepts a proposed point only inside [0, 1] and the ball, and then only if
        `accepts` (the goal's judge) does; returns the tracker and the attack's running time.
        """
        tracker = Tracker(x, lambda _: False, norm=self.spec.norm)

        def judge(x_adv: torch.Tensor) -> bool:
            inside = 0.0 <= float(x_adv.min()) and float(x_adv.max()) <= 1.0
            return inside and within(tracker.distance(x_adv), epsilon) and accepts(x_adv)

        tracker.judge = judge
        generator = runner.stream(self.config.seed, index, name, "attack", self.defense.device)
        self.attacks[name][1].run(Target(self.defense, epsilon, self.spec.norm), x, label, tracker, generator)
        return tracker, time.perf_counter() - tracker.started

    @classmethod
    @abstractmethod
    def summarize(cls, spec: DefenseSpec, config: RunConfig, clean: list[SampleRecord],
                  records: list[Any]) -> dict[str, Any]:
        """The goal's metrics from the clean certificates and the attack records."""

    @classmethod
    @abstractmethod
    def format_table(cls, result: RunResult) -> str:
        """The goal's table, as the terminal prints it."""

    @classmethod
    @abstractmethod
    def headline(cls, result: RunResult) -> list[str]:
        """One line per attack with the numbers a reader looks for first, printed before the table."""

    @classmethod
    def note(cls, spec: DefenseSpec) -> str:
        """The statistics note of a result on this defense."""
        return cls.statistics

    @classmethod
    def plots(cls, spec: DefenseSpec, clean: list[SampleRecord], records: list[Any], folder: Path) -> list[Path]:
        """Figures written next to the records; none by default."""
        return []


def within(distance: float, epsilon: float) -> bool:
    """Whether a distance is inside the budget, up to float32 rounding of a point projected onto its sphere."""
    return distance <= epsilon * (1 + 1e-6) + 1e-6


def instantiate(spec: AttackSpec, defense_spec: DefenseSpec) -> Attack:
    """The attack a spec describes, after `check_attack`."""
    check_attack(spec, defense_spec)
    return registry.resolve(spec.implementation)(registry.attack_params(spec))


def check_attack(spec: AttackSpec, defense_spec: DefenseSpec) -> None:
    """Refuse, with one line, an attack of a defense kind it does not attack, in a norm the defense does not
    certify, or of a plugin whose class lacks what the attack needs; cheap (no model is built), so a run checks
    its attacks before it writes anything."""
    attack = registry.resolve(spec.implementation)
    kinds = attack.kinds
    if defense_spec.kind not in kinds:
        raise RsbenchError(f"attack {spec.name!r} attacks {', '.join(kinds)} defenses; {defense_spec.name!r} is "
                           f"{defense_spec.kind}")
    if defense_spec.kind == "plugin" and attack.plugin_needs:
        cls = plugin_class(defense_spec)
        missing = [method for method in attack.plugin_needs if not provides(cls, method)]
        if missing:
            raise RsbenchError(f"attack {spec.name!r} needs the defense's {', '.join(missing)}, which "
                               f"{defense_spec.name}'s class {cls.__name__} does not provide")
    if spec.norm not in (None, defense_spec.norm):
        raise RsbenchError(f"attack {spec.name!r} measures {spec.norm}; {defense_spec.name!r} certifies "
                           f"{defense_spec.norm}")


def goal_of(attack_specs: Sequence[AttackSpec]) -> type[Goal]:
    """The job of a run's attacks, which must all share one goal."""
    goals = sorted({spec.goal for spec in attack_specs})
    if len(goals) != 1:
        named = ", ".join(f"{spec.name} ({spec.goal})" for spec in attack_specs)
        raise RsbenchError(f"one run evaluates attacks of one goal; got {named}")
    return registry.resolve(GOALS[goals[0]])
