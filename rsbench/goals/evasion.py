"""The evasion job: change the label of a correctly classified, certified sample.

Smoothing (minimum-norm, the CAA paper's Table 1). Each attack optimises the smoothed view
its own N, alpha and temperature describe, but every attack of the run is judged alike, with
the run's protocol: a Tracker whose judge counts hard votes of `judge_n` fresh copies at
`judge_alpha` (`success.make_judge`), then a confirmation of the kept candidates on
`confirm_n` copies of another fresh stream (`success.confirm`). Only confirmed examples are
reported: the smallest is `best`, the earliest `first`.

GloRo, KW and CROWN-IBP (epsilon-bounded, as the KW paper reports its "PGD error" beside the certified
error). Attacks get the defense, its norm and the run's epsilon; an example counts when the
underlying network (GloRo's logits without ⊥; the KW or CROWN-IBP network) gives another label at a point
within epsilon of x inside [0, 1], checked exactly by the harness. The table sets the
empirical robust accuracy beside the VRA: the gap is how loose the certificate is; a
certified sample that is broken would be a soundness failure and is counted apart.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from rsbench import metrics, plots, runner
from rsbench.attacks.base import Tracker, view_options
from rsbench.attacks.success import confirm, make_judge
from rsbench.defenses.base import Defense
from rsbench.defenses.smoothed_view import SmoothedView
from rsbench.errors import RsbenchError
from rsbench.goals import Goal, Sample
from rsbench.records import AttackRecord, RunConfig, RunResult, SampleRecord
from rsbench.specs import AttackSpec, DefenseSpec

SMOOTHING_NOTE = (
    "Clean samples are certified as by `rsbench certify` (Clopper-Pearson, n noise samples, alpha). "
    "A candidate is accepted when hard votes of the base classifier on judge_n fresh noise draws give "
    "another class a Goodman lower bound above every other class's upper bound at judge_alpha, the same "
    "for every attack; it is reported only if the same test passes again on the frequencies of confirm_n copies "
    "of an independent stream, with the judge's bounds (those of judge_n copies) where the protocol says so, so "
    "that a point the judge accepted on one lucky draw is not reported (Bonferroni over the candidates tested, so "
    "all confirmations together err with probability at most judge_alpha per attack and sample). cohen_radius is the radius "
    "sigma/2 (PhiInv(lower of top) - PhiInv(upper of runner-up)) from hard votes at the clean sample with "
    "judge_n and judge_alpha. Medians are over each attack's successes (total time: over attacked samples); "
    "percentages are over the attacked samples (correct and certified)."
)
DETERMINISTIC_NOTE = (
    "Certificates and the judge are exact: an example counts when the underlying network's label differs "
    "from the true one within epsilon inside [0, 1]. VRA and robust accuracies are over all evaluated samples, "
    "with two-sided 95% Clopper-Pearson intervals; a robust accuracy is an upper bound on the true one "
    "(attacks may miss examples), the VRA a lower bound."
)
class Evasion(Goal):
    """Evasion of smoothing (minimum-norm, confirmed) and of GloRo, KW and CROWN-IBP (epsilon-bounded, exact)."""

    name = "evasion"
    record_type = AttackRecord
    statistics = SMOOTHING_NOTE

    def __init__(self, defense_spec: DefenseSpec, defense: Defense, attack_specs: Sequence[AttackSpec],
                 config: RunConfig) -> None:
        super().__init__(defense_spec, defense, attack_specs, config)
        self.smoothing = defense_spec.kind == "smoothing"
        if self.smoothing:
            self.views = {name: defense.surrogate(**view_options(attack.params))
                          for name, (_, attack) in self.attacks.items()}
            self.judging = judge_view(defense, config)
        elif config.epsilon is None:
            raise RsbenchError("evasion of a deterministic defense needs a budget: give --epsilon")

    @classmethod
    def qualifies(cls, config: RunConfig, clean: SampleRecord) -> bool:
        return clean.correct

    def attack(self, name: str, x: torch.Tensor, label: int, index: int,
               clean: SampleRecord) -> tuple[AttackRecord, torch.Tensor | None]:
        if self.smoothing:
            return self._smoothed(name, [Sample(x, label, index, clean)])[0]
        return self._bounded(name, x, label, index, clean)

    def attack_many(self, name: str, samples: Sequence[Sample]) -> list[tuple[AttackRecord, torch.Tensor | None]]:
        """Samples attacked together when the attack batches on smoothing; otherwise one at a time."""
        if self.smoothing and self.attacks[name][1].batches and len(samples) > 1:
            return self._smoothed(name, samples)
        return super().attack_many(name, samples)  # type: ignore[return-value]

    def _smoothed(self, name: str, samples: Sequence[Sample]) -> list[tuple[AttackRecord, torch.Tensor | None]]:
        """Attack the samples together (`Attack.run_many`), each with its own cohen, judge, attack and confirm
        streams, so each record is the one the sample gets alone. Times are the run's wall time shared out
        evenly: what one sample cost."""
        config, view = self.config, self.views[name]
        device, seed = view.device, config.seed
        xs = [s.x.to(device) for s in samples]
        bounds = [self.judging.hard_radius(x, runner.stream(seed, s.index, "", "cohen", device))
                  for x, s in zip(xs, samples)]
        trackers = [Tracker(x, make_judge(self.judging, s.label, runner.stream(seed, s.index, name, "judge", device)),
                            norm="l2") for x, s in zip(xs, samples)]
        self.attacks[name][1].run_many(view, xs, [s.label for s in samples], trackers,
                                       [runner.stream(seed, s.index, name, "attack", device) for s in samples])
        finished, share = time.perf_counter(), 1 / len(samples)
        return [self._confirmed(name, s, tracker, bound, (finished - tracker.started) * share, share)
                for s, tracker, bound in zip(samples, trackers, bounds)]

    def _confirmed(self, name: str, sample: Sample, tracker: Tracker, bound: float, total_time_s: float,
                   share: float) -> tuple[AttackRecord, torch.Tensor | None]:
        """The record of one attacked sample once its kept candidates are confirmed on fresh noise."""
        config, device = self.config, self.judging.device
        kept = tracker.candidates()
        confirmed = confirm(self.judging, kept, sample.label, config.confirm_n,
                            runner.stream(config.seed, sample.index, name, "confirm", device), bounds_n(config))
        record = _record(sample.index, sample.label, name, confirmed, total_time_s, bound, tracker, kept, share,
                         judge_n=config.judge_n, judge_alpha=config.judge_alpha, confirm_n=config.confirm_n)
        best = min(confirmed, key=lambda f: f.radius, default=None)
        return record, best.x_adv if best else None

    def _bounded(self, name: str, x: torch.Tensor, label: int, index: int,
                 clean: SampleRecord) -> tuple[AttackRecord, torch.Tensor | None]:
        network = self.defense.model
        x = x.to(self.defense.device)

        def wrong_label(x_adv: torch.Tensor) -> bool:
            with torch.no_grad():
                return int(network(x_adv[None]).argmax(1)) != label

        tracker, total_time_s = self.run_in_ball(name, x, label, index, self.config.epsilon, wrong_label)
        found = tracker.candidates()  # the judge is exact: every accepted candidate is confirmed
        record = _record(index, label, name, found, total_time_s, clean.radius, tracker, found, 1.0)
        best = min(found, key=lambda f: f.radius, default=None)
        return record, best.x_adv if best else None

    @classmethod
    def summarize(cls, spec: DefenseSpec, config: RunConfig, clean: list[SampleRecord],
                  records: list[AttackRecord]) -> dict[str, Any]:
        table = metrics.attack_table(records)
        summary: dict[str, Any] = {
            "attacked_samples": len({r.index for r in records}),
            "attacks": {k: v.model_dump() for k, v in table.items()},
        }
        if spec.kind != "smoothing" and config.epsilon is not None:
            summary["robustness"] = metrics.robust_accuracy(clean, records, config.epsilon)
        else:
            summary["median_certified_radius"] = metrics.median_certified_radius(records)
        if spec.kind == "smoothing":
            summary["attacks_by_rule"] = metrics.rule_table(records)
        return summary

    @classmethod
    def headline(cls, result: RunResult) -> list[str]:
        m = result.metrics
        if "robustness" in m:
            vra = m["robustness"]["vra"]["value"]
            return [f"{name}: robust accuracy {100 * value['value']:.1f}% at epsilon {result.config.epsilon:g}, "
                    f"VRA {100 * vra:.1f}%" for name, value in m["robustness"]["attacks"].items()]
        median = m.get("median_certified_radius")
        return [f"{name}: success {row['success']:.0f}% of {row['attacked']} attacked, r50 {_cell(row['r50'], '.2f')} "
                f"beside the median certified radius {_cell(median, '.2f')} (the smallest examples lie a median "
                f"{_cell(row['pct_cohen'], '.0f', '%')} beyond their certificates)"
                for name, row in m.get("attacks", {}).items()]

    @classmethod
    def note(cls, spec: DefenseSpec) -> str:
        return SMOOTHING_NOTE if spec.kind == "smoothing" else DETERMINISTIC_NOTE

    @classmethod
    def format_table(cls, result: RunResult) -> str:
        if "robustness" in result.metrics:
            return format_robustness(result)
        return format_table_1(result)

    @classmethod
    def plots(cls, spec: DefenseSpec, clean: list[SampleRecord], records: list[AttackRecord],
              folder: Path) -> list[Path]:
        if not records:
            return []
        return [plots.attack_proportion_plot(records, spec.name, folder / "attack_proportion.png")]


def bounds_n(config: RunConfig) -> int | None:
    """The N of confirmation's Goodman bounds: the judge's under a strict protocol, else confirm_n (None)."""
    return config.judge_n if config.confirm_bounds == "judge_n" else None


def judge_view(defense: Defense, config: RunConfig) -> SmoothedView:
    """The view whose hard votes judge every attack of a smoothing run: the protocol's N and alpha."""
    return defense.surrogate(num_noise=config.judge_n, alpha=config.judge_alpha)


def _record(index: int, label: int, name: str, confirmed: list, total_time_s: float, bound: float,
            tracker: Tracker, kept: list, share: float, **judge: Any) -> AttackRecord:
    """An AttackRecord from the confirmed candidates: the earliest is `first`, the smallest `best`. Their times
    are multiplied by `share`, the sample's part of an attack run on several samples at once. The smallest kept
    candidate, confirmed or not, is the best under the paper's rule (the judge's test alone)."""
    first = min(confirmed, key=lambda f: f.time_s, default=None)
    best = min(confirmed, key=lambda f: f.radius, default=None)
    judged = min(kept, key=lambda f: f.radius, default=None)
    return AttackRecord(
        index=index, label=label, attack=name, success=best is not None,
        first_radius=first.radius if first else None, first_time_s=first.time_s * share if first else None,
        best_radius=best.radius if best else None, best_time_s=best.time_s * share if best else None,
        total_time_s=total_time_s, cohen_radius=bound, iterations=tracker.iterations,
        judge_calls=tracker.judge_calls, candidates=len(kept), rejected=len(kept) - len(confirmed),
        judge_n=judge.get("judge_n"), judge_alpha=judge.get("judge_alpha"), confirm_n=judge.get("confirm_n"),
        judged_best_radius=judged.radius if judged else None,
    )


TABLE_LEGEND = (
    "Success: % of attacked samples with a confirmed example (rsbench's strict rule, which ranks). Best: % where\n"
    "this attack's smallest example is the smallest of the run. r50: median smallest l2 radius. %-Cohen: median excess of that radius over the clean\n"
    "certificate (equation 3). Time: median seconds to the smallest example; Total: median seconds the attack ran.\n"
    "Ratio(r50), Ratio(Time): first confirmed example's median radius over r50, and its median time over Total\n"
    "(the paper's ratios). Confirmed: % of kept candidates that passed confirmation on fresh noise."
)


def _cell(value: float | None, fmt: str, suffix: str = "") -> str:
    return "-" if value is None else format(value, fmt) + suffix


def format_table_1(result: RunResult) -> str:
    """The per-attack metrics laid out like the paper's Table 1, with the judge settings and a legend."""
    config = result.config
    lines = [
        f"{result.defense.name}: {result.num_samples} samples, clean accuracy {result.clean_accuracy:.3f}, "
        f"{result.metrics.get('attacked_samples', 0)} attacked (correct and certified); judge N={config.judge_n}, "
        f"alpha={config.judge_alpha:g}, confirmation on {config.confirm_n} fresh copies"
        + (" with the judge's bounds" if config.confirm_bounds else ""),
        f"{'':<12}{'Smallest attack':^59}{'First attack':^24}",
        f"{'Attack':<12}{'Success':>9}{'Best':>8}{'r50':>8}{'%-Cohen':>10}{'Time (s)':>10}{'Total (s)':>10}"
        f"{'Ratio(r50)':>12}{'Ratio(Time)':>12}{'Confirmed':>11}",
    ]
    for name, row in result.metrics.get("attacks", {}).items():
        lines.append(
            f"{name:<12}{_cell(row['success'], '.0f', '%'):>9}{_cell(row['best'], '.0f', '%'):>8}"
            f"{_cell(row['r50'], '.2f'):>8}{_cell(row['pct_cohen'], '.0f', '%'):>10}{_cell(row['time_s'], '.2f'):>10}"
            f"{_cell(row['total_time_s'], '.2f'):>10}{_cell(row['first_ratio_r50'], '.2f'):>12}"
            f"{_cell(row['first_ratio_time'], '.2f'):>12}{_cell(row['confirmed'], '.0f', '%'):>11}"
        )
    rules = result.metrics.get("attacks_by_rule")
    if rules:
        lines.append("Both rules, 95% bootstrap intervals over the attacked samples (strict: judged and confirmed, "
                     "ranks; paper: the certification-aware-attack paper's, the judge's test alone):")
        width = max(12, *(len(name) + 2 for name in rules["strict"]))
        lines.append(f"{'Attack':<{width}}{'Rule':<8}{'Success':>18}{'Best':>18}{'r50':>22}")
        lines += [f"{name:<{width}}{rule:<8}{_estimate(row['success'], '.0f'):>18}{_estimate(row['best'], '.0f'):>18}"
                  f"{_estimate(row['r50'], '.2f'):>22}"
                  for name in rules["strict"] for rule, row in ((r, rules[r][name]) for r in ("strict", "paper"))]
    return "\n".join([*lines, TABLE_LEGEND])


def _estimate(estimate: Sequence[float | None] | None, fmt: str) -> str:
    """A value with its interval, or - where it is undefined."""
    if not estimate or estimate[0] is None:
        return "-"
    value, low, high = estimate
    return f"{value:{fmt}} [{low:{fmt}}, {high:{fmt}}]"


def format_robustness(result: RunResult) -> str:
    """VRA against the empirical robust accuracy each attack leaves, with 95% intervals."""
    robustness = result.metrics["robustness"]

    def point(p: dict[str, float]) -> str:
        return f"{100 * p['value']:5.1f}% [{100 * p['ci_low']:.1f}, {100 * p['ci_high']:.1f}]"

    lines = [
        f"{result.defense.name} at epsilon {result.config.epsilon:g} ({result.defense.norm}): {result.num_samples} "
        f"samples, clean accuracy {result.clean_accuracy:.3f}",
        f"  {'VRA (certified at epsilon)':<34}{point(robustness['vra'])}",
    ]
    for name, value in robustness["attacks"].items():
        lines.append(f"  {'robust accuracy under ' + name:<34}{point(value)}")
    lines.append(f"  {'robust accuracy under all':<34}{point(robustness['all'])}")
    lines.append(f"  certified samples broken: {robustness['certified_broken']} (must be 0: the certificate is sound)")
    lines.append("VRA is a lower bound on the robust accuracy, each attack's an upper bound: the gap is how loose the "
                 "certificate is, or how weak the attacks.")
    return "\n".join(lines)
