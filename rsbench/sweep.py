"""A sweep: every registry defense matching a pattern, evaluated by every matching attack that fits it.

The attacks of one run share a goal, so a sweep makes one evaluate run per defense and goal,
naming the matching attacks that attack the defense's kind in its norm (`goals.check_attack`).
Each run goes to its default run directory (`rundir.default_path`), so a sweep resumes, and
shares its records with `rsbench evaluate` runs of the same settings.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import torch

from rsbench import engine, registry, requirements, rundir
from rsbench.errors import RsbenchError
from rsbench.goals import check_attack
from rsbench.progress import bar
from rsbench.records import RunResult
from rsbench.registry import Kind
from rsbench.specs import AttackSpec, DefenseSpec


@dataclass(frozen=True)
class Planned:
    """One evaluate run of a sweep: a defense and the matching attacks of one goal that fit it."""

    defense: DefenseSpec
    attacks: tuple[AttackSpec, ...]

    @property
    def goal(self) -> str:
        return self.attacks[0].goal


@dataclass(frozen=True)
class Finished:
    """A run of a sweep, done: where its records are and its summary."""

    planned: Planned
    out: Path
    result: RunResult


def matching(kind: Kind, pattern: str) -> list[Any]:
    """The valid specs of a kind whose names match a glob pattern, by name; none is an error."""
    specs = [spec for name, spec in sorted(registry.all_specs(kind).items()) if fnmatchcase(name, pattern)]
    if not specs:
        raise RsbenchError(f"no {kind[:-1]} matches {pattern!r} (see `rsbench registry list --kind {kind}`)")
    return specs


def fits(attack: AttackSpec, defense: DefenseSpec) -> bool:
    """Whether the attack attacks the defense's kind, in its norm."""
    try:
        check_attack(attack, defense)
    except RsbenchError:
        return False
    return True


def plan(defense_pattern: str, attack_pattern: str) -> list[Planned]:
    """The sweep's runs, defense by defense (by name), one per goal of the attacks that fit the defense."""
    attacks = matching("attacks", attack_pattern)
    runs = []
    for defense in matching("defenses", defense_pattern):
        fitting = [attack for attack in attacks if fits(attack, defense)]
        for goal in dict.fromkeys(attack.goal for attack in fitting):
            runs.append(Planned(defense, tuple(attack for attack in fitting if attack.goal == goal)))
    if not runs:
        raise RsbenchError(f"no attack matching {attack_pattern!r} fits a defense matching {defense_pattern!r}")
    return runs


def require_all(runs: list[Planned]) -> None:
    """Refuse, before the first run, a sweep with a defense whose data or weights this machine lacks."""
    defenses = {run.defense.name: run.defense for run in runs}.values()
    lacking = [f"{defense.name} ({'; '.join(missing)})" for defense in defenses
               if (missing := requirements.missing_requirements(defense))]
    if lacking:
        raise RsbenchError(f"the sweep needs files this machine lacks: {' | '.join(lacking)}; "
                           "narrow --defense or fetch them")


def run(runs: list[Planned], device: torch.device, *, root: Path = Path("runs"), backend: engine.Backend = "local",
        address: str | None = None, save_examples: bool = False, images_per_batch: int | None = None,
        progress: bool = True, epsilon: float | None = None, **settings: object) -> Iterator[Finished]:
    """Evaluate each run in its default directory under `root`; `settings` are `engine.evaluate_config`'s."""
    require_all(runs)
    with bar(len(runs), "sweep", "run", enabled=progress) as runs_done:
        for planned in runs:
            runs_done.set_postfix_str(f"{planned.defense.name}, {planned.goal}")
            config = engine.evaluate_config(planned.defense, planned.attacks, epsilon=epsilon, **settings)
            out = rundir.default_path(config, root)
            result = engine.evaluate(planned.defense, list(planned.attacks), config, out, device,
                                     save_examples=save_examples, progress=progress,
                                     images_per_batch=images_per_batch, backend=backend, address=address)
            runs_done.update(1)
            yield Finished(planned, out, result)


def summary_line(finished: Finished) -> str:
    """One line per run: what ran, on how many samples, and where its records are."""
    planned, result = finished.planned, finished.result
    attacks = ", ".join(attack.name for attack in planned.attacks)
    return (f"{planned.defense.name:<24} {planned.goal:<11} {attacks}: {result.num_samples} samples, "
            f"clean accuracy {result.clean_accuracy:.3f}; {finished.out}")
