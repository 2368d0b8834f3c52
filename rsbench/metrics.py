"""Pure functions from per-sample records to the numbers rsbench reports."""

from __future__ import annotations

import math
from collections.abc import Sequence

from rsbench.specs import CertifiedPoint, SampleRecord
from rsbench.stats import clopper_pearson

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
