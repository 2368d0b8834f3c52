"""Pure functions from per-sample records to the numbers rsbench reports."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from rsbench.records import AttackRecord, AttackSummary, CertifiedPoint, SampleRecord
from rsbench.stats import Estimate, bootstrap, clopper_pearson

INTERVAL_ALPHA = 0.05
"""Accuracies carry two-sided 95% Clopper-Pearson intervals over the evaluated test samples."""


def radius_grid(records: Sequence[SampleRecord], step: float) -> list[float]:
    """Radii 0, step, 2*step, … up to the largest radius certified on a correct sample."""
    largest = max((r.radius for r in records if r.correct), default=0.0)
    return [round(i * step, 10) for i in range(int(math.floor(largest / step + 1e-9)) + 1)]


def certified_accuracy(records: Sequence[SampleRecord], radius: float) -> CertifiedPoint:
    """Fraction of samples predicted correctly and certified with radius >= r, with its interval."""
    hits = sum(1 for r in records if r.correct and r.radius >= radius)
    low, high = clopper_pearson(hits, len(records), INTERVAL_ALPHA) if records else (0.0, 1.0)
    return CertifiedPoint(radius=radius, accuracy=hits / max(len(records), 1), ci_low=low, ci_high=high)


def certified_accuracy_curve(records: Sequence[SampleRecord], step: float) -> list[CertifiedPoint]:
    """Certified accuracy at every radius of `radius_grid`."""
    return [certified_accuracy(records, r) for r in radius_grid(records, step)]


def abstain_rate(records: Sequence[SampleRecord]) -> float:
    """Fraction of samples on which the defense abstained."""
    return sum(r.prediction is None for r in records) / max(len(records), 1)


def average_certified_radius(records: Sequence[SampleRecord]) -> float:
    """Mean of the certified radius over samples, counting wrong or abstained samples as 0."""
    return sum(r.radius for r in records if r.correct) / max(len(records), 1)


def attack_names(records: Sequence[AttackRecord]) -> list[str]:
    """The attacks present in the records, in order of first appearance."""
    return list(dict.fromkeys(r.attack for r in records))


def _median(values: Sequence[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator is not None and denominator else None


def best_radius_by_sample(records: Sequence[AttackRecord]) -> dict[int, float]:
    """Per attacked sample, the smallest radius any attack reached (inf when all failed)."""
    best: dict[int, float] = {}
    for r in records:
        radius = r.best_radius if r.success and r.best_radius is not None else math.inf
        best[r.index] = min(best.get(r.index, math.inf), radius)
    return best


def median_certified_radius(records: Sequence[AttackRecord]) -> float | None:
    """Median clean certified radius of the attacked samples (each sample once), under the run's judge settings."""
    bound = {r.index: r.cohen_radius for r in records}
    return _median(list(bound.values()))


def attack_summary(records: Sequence[AttackRecord], attack: str) -> AttackSummary:
    """Table 1's metrics of one attack, comparing it with every other attack in `records`."""
    mine = [r for r in records if r.attack == attack]
    wins = best_radius_by_sample(records)
    hits = [r for r in mine if r.success and r.best_radius is not None]
    best = [r.best_radius for r in hits]
    r50, time_s = _median(best), _median([r.best_time_s for r in hits])
    total_time_s = _median([r.total_time_s for r in mine]) or 0.0
    kept = sum(r.candidates for r in mine)
    return AttackSummary(
        attacked=len(mine),
        success=100 * len(hits) / max(len(mine), 1),
        best=100 * sum(1 for r in hits if r.best_radius <= wins[r.index]) / max(len(mine), 1),
        r50=r50,
        pct_cohen=_median([100 * (r.best_radius - r.cohen_radius) / r.cohen_radius for r in hits if r.cohen_radius > 0]),
        time_s=time_s,
        total_time_s=total_time_s,
        first_ratio_r50=_ratio(_median([r.first_radius for r in hits]), r50),
        first_ratio_time=_ratio(_median([r.first_time_s for r in hits]), total_time_s),
        confirmed=100 * (kept - sum(r.rejected for r in mine)) / kept if kept else None,
    )


def attack_table(records: Sequence[AttackRecord]) -> dict[str, AttackSummary]:
    """Table 1: every attack's summary, in the order the attacks were run."""
    return {name: attack_summary(records, name) for name in attack_names(records)}


def paper_view(records: Sequence[AttackRecord]) -> list[AttackRecord]:
    """The records as the certification-aware-attack paper's rule reads them: a success wherever the in-loop judge
    accepted a candidate, confirmed or not, at the smallest accepted radius (`judged_best_radius`)."""
    return [r.model_copy(update={"success": r.candidates > 0, "best_radius": r.judged_best_radius}) for r in records]


def recorded(records: Sequence[AttackRecord]) -> bool:
    """Whether the records carry the smallest accepted radius wherever the judge accepted one (records made
    before `judged_best_radius` existed do not)."""
    return all(r.judged_best_radius is not None for r in records if r.candidates)


def rule_table(records: Sequence[AttackRecord], seed: int = 0) -> dict[str, dict[str, dict[str, Estimate]]]:
    """Success %, best % and r50 of every attack under rsbench's strict rule (confirmed examples) and the
    certification-aware-attack paper's (`paper_view`), by rule and attack, each with its 95% bootstrap interval over
    the attacked samples (resampled together across attacks, so `best` stays paired). Records without
    `judged_best_radius` (older runs, submitted attacks) give the paper rule's success but no best or r50 (None),
    never the strict rule's. Two records of one attack on one sample are refused (ValueError): Table 1 would count
    both and the bootstrap, which draws samples, one."""
    seen: set[tuple[str, int]] = set()
    for r in records:
        if (r.attack, r.index) in seen:
            raise ValueError(f"{r.attack} has 2 records of sample {r.index}: one record per attacked sample")
        seen.add((r.attack, r.index))
    return {"strict": _rule_estimates(list(records), True, seed),
            "paper": _rule_estimates(paper_view(records), recorded(records), seed)}


def _rule_estimates(view: list[AttackRecord], radii: bool, seed: int) -> dict[str, dict[str, Estimate]]:
    """`rule_table`'s numbers for records read by one rule; without `radii`, success alone."""
    names, indices = attack_names(view), sorted({r.index for r in view})
    wins = best_radius_by_sample(view)
    found = {(r.index, r.attack): (r.success and (r.best_radius is not None or not radii), r.best_radius)
             for r in view}

    def statistic(draw: Sequence[int]) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for name in names:
            mine = [(i, *found[i, name]) for i in (indices[d] for d in draw) if (i, name) in found]
            hits = [(i, d) for i, hit, d in mine if hit]
            out[f"{name} success"] = 100 * len(hits) / len(mine) if mine else None
            out[f"{name} best"] = 100 * sum(d <= wins[i] for i, d in hits) / len(mine) if mine and radii else None
            out[f"{name} r50"] = _median([d for _, d in hits]) if radii else None
        return out

    estimates = bootstrap(statistic, len(indices), seed=seed)
    return {name: {k: estimates[f"{name} {k}"] for k in ("success", "best", "r50")} for name in names}


def attack_proportion(records: Sequence[AttackRecord], attack: str, radius: float, *, first: bool = False) -> float:
    """Fraction of the attack's samples with an adversarial example within `radius` (its best, or its first)."""
    mine = [r for r in records if r.attack == attack]
    found = [r.first_radius if first else r.best_radius for r in mine if r.success]
    return sum(1 for d in found if d is not None and d <= radius) / max(len(mine), 1)


def cohen_proportion(records: Sequence[AttackRecord], radius: float) -> float:
    """Fraction of attacked samples whose certified radius is at most `radius`: no attack can do better.

    Every record of a sample carries the same cohen_radius (from the run's judge settings);
    the smallest is taken so that records of runs with other settings still give a bound.
    """
    bound: dict[int, float] = {}
    for r in records:
        bound[r.index] = min(bound.get(r.index, math.inf), r.cohen_radius)
    return sum(1 for b in bound.values() if b <= radius) / max(len(bound), 1)


def robust_accuracy(clean: Sequence[SampleRecord], records: Sequence[AttackRecord], epsilon: float) -> dict:
    """VRA at epsilon and the empirical robust accuracy each attack (and all together) leaves, over all samples.

    A sample is robust under an attack when it is classified correctly and the attack found no example;
    `certified_broken` counts samples certified at epsilon that some attack broke (a sound certifier has none).
    """
    broken: dict[str, set[int]] = {}
    for r in records:
        broken.setdefault(r.attack, set())
        if r.success:
            broken[r.attack].add(r.index)
    everything = set().union(*broken.values()) if broken else set()
    correct = {c.index for c in clean if c.correct}

    certified = {c.index for c in clean if c.correct and c.radius >= epsilon}
    total = len(clean)
    return {
        "vra": proportion(len(certified), total),
        "attacks": {name: proportion(len(correct - hit), total) for name, hit in broken.items()},
        "all": proportion(len(correct - everything), total),
        "certified_broken": len(certified & everything),
    }


def proportion(hits: int, total: int) -> dict[str, float]:
    """hits / total with its two-sided 95% Clopper-Pearson interval (0 and [0, 1] when total is 0)."""
    low, high = clopper_pearson(hits, total, INTERVAL_ALPHA) if total else (0.0, 1.0)
    return {"value": hits / max(total, 1), "ci_low": low, "ci_high": high}
