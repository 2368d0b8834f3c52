"""The degradation goal: how often can an ε-adversary make a certified defense reject a correctly certified input?

For a defense and a radius ε, test_R holds the test points classified correctly and
certified at ε (their share is the verified robust accuracy, VRA). A point of test_R is
degraded when some x' with ||x' - x|| <= ε inside [0, 1] makes the defense's run-time check
fail (`rejects`). The false positive rate |degraded| / |test_R| is bounded:

- below by what attacks find (`fpr_lower`);
- above by the share of test_R not certified at 2ε (`fpr_upper`). Every certifier here is
  monotonic (a certificate at 2ε around x implies one at ε around every x' within ε of x:
  exactly for GloRo's Lipschitz bound, KW's nested balls and CROWN-IBP's interval arithmetic
  (inclusion-monotone), in the large-sample limit for smoothing), so only those points can be degraded.

Utility reduction = VRA × fpr_lower: the share of all test points an attack turns from
certified answers into rejections. One certification pass per point answers every ε (its
radius), so VRA and fpr_upper against ε (the paper's Figures 2 and 3) cost nothing more.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

import matplotlib
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first

from rsbench import plots, runner  # noqa: E402
from rsbench.defenses.base import Defense  # noqa: E402
from rsbench.defenses.smoothed_view import goodman_bounds  # noqa: E402
from rsbench.defenses.smoothing import Smoothing  # noqa: E402
from rsbench.errors import RsbenchError  # noqa: E402
from rsbench.goals import Goal  # noqa: E402
from rsbench.metrics import proportion  # noqa: E402
from rsbench.records import RunConfig, RunResult, SampleRecord
from rsbench.specs import AttackSpec, DefenseSpec, Spec  # noqa: E402


def rejects(defense: Defense, x_adv: torch.Tensor, eps: float, generator: torch.Generator | None = None) -> bool:
    """Whether the defense's run-time check fails at x_adv: GloRo's ⊥, KW's bound not certifying at eps,
    smoothing's CERTIFY abstaining or certifying a radius below eps (on `generator`'s fresh noise)."""
    return not defense.certified_at(x_adv, eps, generator=generator)


def judged_rejection(defense: Defense, x_adv: torch.Tensor, eps: float, generator: torch.Generator,
                     num: int, alpha: float, bounds_n: int | None = None) -> bool:
    """The harness's verdict that the defense rejects x_adv at eps.

    GloRo, KW and CROWN-IBP: their deterministic check (`rejects`). Smoothing: a rejection that holds with
    confidence 1 - alpha. One CERTIFY that rejects proves little, since CERTIFY errs toward rejecting
    and a point near the threshold is rejected on some streams only. So on `num` copies of
    `generator`'s noise, the Goodman simultaneous upper bound of every class must stay below
    Φ(eps / σ), the smallest probability whose radius reaches eps: then, with probability 1 - alpha,
    no class can be certified at eps, and any later CERTIFY at eps (failure probability alpha')
    rejects x_adv with probability at least 1 - alpha'. With `bounds_n` (the judge's N, when a strict
    protocol confirms on more copies) the bounds are those of bounds_n copies at the frequencies measured
    on num: the confirmation then rejects only what the judge rejects at the point's expected votes.
    """
    if not isinstance(defense, Smoothing):
        return rejects(defense, x_adv, eps, generator)
    counts = defense.sample_counts(x_adv, num, generator)
    _, upper = goodman_bounds(counts.double() / num, bounds_n or num, alpha)
    return bool(upper.max() < NormalDist().cdf(eps / defense.sigma))


def certified(records: Sequence[SampleRecord], eps: float) -> list[SampleRecord]:
    """test_R: the records classified correctly and certified at radius eps."""
    return [r for r in records if r.correct and r.radius >= eps]


def vra(records: Sequence[SampleRecord], eps: float) -> float:
    """Verified robust accuracy at eps: |test_R| over all records."""
    return len(certified(records, eps)) / max(len(records), 1)


def fpr_upper(records: Sequence[SampleRecord], eps: float) -> float:
    """Share of test_R not certified at 2 eps: no attack can degrade more (0 when test_R is empty)."""
    robust = certified(records, eps)
    return sum(r.radius < 2 * eps for r in robust) / max(len(robust), 1)


def fpr_lower(records: Sequence[SampleRecord], eps: float, degraded: Collection[int]) -> float:
    """Share of test_R whose index is in `degraded` (the points where an attack made the defense reject)."""
    robust = certified(records, eps)
    return sum(r.index in degraded for r in robust) / max(len(robust), 1)


def utility_reduction(records: Sequence[SampleRecord], eps: float, degraded: Collection[int]) -> float:
    """VRA × fpr_lower: the share of all test points the attack turns from certified answers into rejections."""
    return vra(records, eps) * fpr_lower(records, eps, degraded)


@dataclass(frozen=True)
class CurvePoint:
    """VRA and the false positive rate's upper bound at one radius."""

    epsilon: float
    vra: float
    """Share of records correct and certified at epsilon."""
    vra_double: float
    """Share of records correct and certified at 2 epsilon: what an epsilon-adversary cannot degrade."""
    fpr_upper: float
    """1 - vra_double / vra (0 when vra is 0)."""


def curve(records: Sequence[SampleRecord], epsilons: Sequence[float]) -> list[CurvePoint]:
    """VRA, 2ε-VRA and fpr_upper at every radius of `epsilons`, from the records' certified radii."""
    return [CurvePoint(eps, vra(records, eps), vra(records, 2 * eps), fpr_upper(records, eps)) for eps in epsilons]


def write_curve(points: Sequence[CurvePoint], path: Path) -> Path:
    """The curve's numbers as a JSON list of {epsilon, vra, vra_double, fpr_upper}."""
    path.write_text(json.dumps([asdict(p) for p in points], indent=1) + "\n")
    return path


def curve_plot(points: Sequence[CurvePoint], title: str, path: Path, *, norm: str = "l2") -> Path:
    """The paper's Figures 2-3 side by side: fpr_upper against ε, and VRA at ε and at 2ε."""
    eps = [p.epsilon for p in points]
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    left.plot(eps, [p.fpr_upper for p in points], color="C3")
    left.set(xlabel=f"{norm} radius ε", ylabel="false positive rate (upper bound)", ylim=(0, 1.02))
    right.plot(eps, [p.vra for p in points], color="C0", label="VRA at ε")
    right.plot(eps, [p.vra_double for p in points], "--", color="C0", label="VRA at 2ε")
    right.set(xlabel=f"{norm} radius ε", ylabel="verified robust accuracy", ylim=(0, 1.02))
    right.legend(loc="upper right", fontsize="small")
    for axes in (left, right):
        axes.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    return plots.save(figure, path)


DEGRADATION_NOTE = (
    "test_R: samples classified correctly and certified at epsilon (its share is the VRA). A sample of test_R "
    "is degraded when an attack's point within epsilon inside [0, 1] makes the defense's run-time check fail; "
    "on smoothing a rejection must hold with confidence: on judge_n copies of the judge's stream, and again on the "
    "frequencies of confirm_n fresh copies (with the judge's bounds, those of judge_n copies, where the protocol "
    "says so), every class's Goodman upper bound (at judge_alpha) stays below Phi(epsilon/sigma), so "
    "any CERTIFY at epsilon rejects the point with high probability. fpr_lower = degraded share of "
    "test_R, fpr_upper = share of test_R not certified at 2 epsilon (these certifiers are monotonic), "
    "utility_reduction = VRA x fpr_lower. Rates carry two-sided 95% Clopper-Pearson intervals over samples; "
    "smoothing certificates hold with probability 1 - alpha each."
)


class DegradationRecord(Spec):
    """One degradation attack on one sample of test_R, as written to `samples.jsonl`."""

    index: int
    """Position of the sample in the dataset split."""
    label: int
    """True class, which the defense certifies at epsilon at the clean sample."""
    attack: str
    """Registry name of the attack."""
    epsilon: float
    """The run's radius."""
    in_test_R: bool
    """Classified correctly and certified at epsilon at the clean sample (always true: only these are attacked)."""
    certified_2eps: bool
    """Certified at 2 epsilon at the clean sample: no point within epsilon can then be rejected (monotonicity)."""
    judged: bool
    """The in-loop check (the defense's own, on the judge's stream) rejected some proposed point."""
    success: bool
    """Degraded: a proposed point within epsilon inside [0, 1] was rejected (on smoothing with confidence, and
    confirmed on fresh noise)."""
    distance: float | None
    """Distance to x of the earliest confirmed rejected point; null on failure."""
    first_time_s: float | None
    """Seconds from the start of the attack until it proposed that point; null on failure."""
    total_time_s: float
    """Seconds the attack ran (confirmation excluded)."""
    iterations: int
    """Iterations the attack ran."""
    judge_calls: int
    """Points the in-loop check was asked about."""


class Degradation(Goal):
    """Degradation of smoothing, GloRo, KW and CROWN-IBP at the run's epsilon."""

    name = "degradation"
    record_type = DegradationRecord
    statistics = DEGRADATION_NOTE

    def __init__(self, defense_spec: DefenseSpec, defense: Defense, attack_specs: Sequence[AttackSpec],
                 config: RunConfig) -> None:
        super().__init__(defense_spec, defense, attack_specs, config)
        if config.epsilon is None:
            raise RsbenchError("degradation needs a radius: give --epsilon")

    @classmethod
    def qualifies(cls, config: RunConfig, clean: SampleRecord) -> bool:
        return clean.correct and clean.radius >= config.epsilon

    def attack(self, name: str, x: torch.Tensor, label: int, index: int,
               clean: SampleRecord) -> tuple[DegradationRecord, torch.Tensor | None]:
        eps, seed, device = self.config.epsilon, self.config.seed, self.defense.device
        x = x.to(device)
        judge_stream = runner.stream(seed, index, name, "judge", device)
        judge_n, alpha = self.config.judge_n, self.config.judge_alpha
        tracker, total_time_s = self.run_in_ball(
            name, x, label, index, eps, lambda x_adv: judged_rejection(self.defense, x_adv, eps, judge_stream, judge_n, alpha))
        found = sorted(tracker.candidates(), key=lambda f: f.time_s)
        if self.spec.kind == "smoothing":  # the loop asked many times; repeat the verdict on noise it never saw
            confirm_stream = runner.stream(seed, index, name, "confirm", device)
            strict = judge_n if self.config.confirm_bounds == "judge_n" else None
            found = [f for f in found
                     if judged_rejection(self.defense, f.x_adv, eps, confirm_stream, self.config.confirm_n, alpha, strict)]
        first = found[0] if found else None
        record = DegradationRecord(
            index=index, label=label, attack=name, epsilon=eps, in_test_R=True,
            certified_2eps=clean.radius >= 2 * eps, judged=tracker.first is not None, success=first is not None,
            distance=first.radius if first else None, first_time_s=first.time_s if first else None,
            total_time_s=total_time_s, iterations=tracker.iterations, judge_calls=tracker.judge_calls,
        )
        return record, first.x_adv if first else None

    @classmethod
    def summarize(cls, spec: DefenseSpec, config: RunConfig, clean: list[SampleRecord],
                  records: list[DegradationRecord]) -> dict[str, Any]:
        eps = config.epsilon
        robust = certified(clean, eps)
        by_attack: dict[str, set[int]] = {}
        for r in records:
            by_attack.setdefault(r.attack, set())
            if r.success:
                by_attack[r.attack].add(r.index)
        every = set().union(*by_attack.values()) if by_attack else set()

        def row(degraded: set[int]) -> dict[str, Any]:
            hits = sum(r.index in degraded for r in robust)
            return {"fpr_lower": proportion(hits, len(robust)),
                    "utility_reduction": proportion(hits, len(clean))}  # vra x fpr_lower = degraded share of all

        return {
            "epsilon": eps,
            "test_R": len(robust),
            "vra": proportion(len(robust), len(clean)),
            "fpr_upper": proportion(sum(r.radius < 2 * eps for r in robust), len(robust)),
            "attacks": {name: row(hit) for name, hit in by_attack.items()},
            "all": row(every),
            "unconfirmed": {name: sum(r.judged and not r.success for r in records if r.attack == name)
                            for name in by_attack},
        }

    @classmethod
    def headline(cls, result: RunResult) -> list[str]:
        m = result.metrics
        return [f"{name}: degraded {100 * row['fpr_lower']['value']:.1f}% of the {m['test_R']} inputs certified at "
                f"epsilon {m['epsilon']:g} (FPR lower bound; upper bound {100 * m['fpr_upper']['value']:.1f}%)"
                for name, row in m["attacks"].items()]

    @classmethod
    def format_table(cls, result: RunResult) -> str:
        m = result.metrics

        def pct(value: dict[str, float]) -> str:
            return f"{100 * value['value']:5.1f}% [{100 * value['ci_low']:.1f}, {100 * value['ci_high']:.1f}]"

        lines = [
            f"{result.defense.name} at epsilon {m['epsilon']:g} ({result.defense.norm}): {result.num_samples} samples, "
            f"{m['test_R']} certified at epsilon (test_R)",
            f"  {'VRA':<42}{pct(m['vra'])}",
            f"  {'FPR upper bound (not certified at 2eps)':<42}{pct(m['fpr_upper'])}",
        ]
        for name, row in [*m["attacks"].items(), ("all attacks", m["all"])]:
            lines.append(f"  {'FPR lower bound, ' + name:<42}{pct(row['fpr_lower'])}   utility reduction "
                         f"{pct(row['utility_reduction'])}")
        if any(m["unconfirmed"].values()):
            lines.append(f"  rejections not confirmed on fresh noise: {m['unconfirmed']}")
        lines.append("FPR lower bound: share of test_R an attack degraded; upper bound: share not certified at "
                     "2 epsilon; utility reduction = VRA x FPR lower (95% intervals over samples).")
        return "\n".join(lines)

    @classmethod
    def plots(cls, spec: DefenseSpec, clean: list[SampleRecord], records: list[DegradationRecord],
              folder: Path) -> list[Path]:
        return curve_files(spec, clean, folder)


def curve_files(spec: DefenseSpec, clean: Sequence[SampleRecord], folder: Path, points: int = 100) -> list[Path]:
    """`degradation_curve.json` and `.png` over `points` radii up to the largest certified one; none without any."""
    largest = max((r.radius for r in clean if r.correct), default=0.0)
    if largest <= 0:
        return []
    values = curve(clean, [largest * i / points for i in range(1, points + 1)])
    return [write_curve(values, folder / "degradation_curve.json"),
            curve_plot(values, spec.name, folder / "degradation_curve.png", norm=spec.norm)]
