"""The degradation goal: how often can an ε-adversary make a certified defense reject a correctly certified input?

For a defense and a radius ε, test_R holds the test points classified correctly and
certified at ε (their share is the verified robust accuracy, VRA). A point of test_R is
degraded when some x' with ||x' - x|| <= ε inside [0, 1] makes the defense's run-time check
fail (`rejects`). The false positive rate |degraded| / |test_R| is bounded:

- below by what attacks find (`fpr_lower`);
- above by the share of test_R not certified at 2ε (`fpr_upper`). Every certifier here is
  monotonic (a certificate at 2ε around x implies one at ε around every x' within ε of x:
  exactly for GloRo's Lipschitz bound and KW's nested balls, in the large-sample limit for
  smoothing), so only those points can be degraded.

Utility reduction = VRA × fpr_lower: the share of all test points an attack turns from
certified answers into rejections. One certification pass per point answers every ε (its
radius), so VRA and fpr_upper against ε (the paper's Figures 2 and 3) cost nothing more.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import matplotlib
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first

from rsbench.defenses.base import Defense  # noqa: E402
from rsbench.specs import SampleRecord  # noqa: E402


def rejects(defense: Defense, x_adv: torch.Tensor, eps: float, generator: torch.Generator | None = None) -> bool:
    """Whether the defense's run-time check fails at x_adv: GloRo's ⊥, KW's bound not certifying at eps,
    smoothing's CERTIFY abstaining or certifying a radius below eps (on `generator`'s fresh noise)."""
    return not defense.certified_at(x_adv, eps, generator=generator)


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
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
