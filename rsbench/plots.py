"""Figures saved next to a run's records (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first

from rsbench import metrics  # noqa: E402
from rsbench.records import (
    AttackRecord,
    CertifiedPoint,
    SampleRecord,  # noqa: E402
)


def save(figure: plt.Figure, path: Path) -> Path:
    """Write the figure as a PNG and close it; without the matplotlib version among its metadata, so that rendering
    the same records gives the same bytes on every machine with the same fonts (`leaderboard check` compares)."""
    figure.savefig(path, dpi=120, metadata={"Software": None})
    plt.close(figure)
    return path


def certified_accuracy_plot(records: Sequence[SampleRecord], points: Sequence[CertifiedPoint], title: str, path: Path) -> Path:
    """Certified accuracy as a step function of the radius, with 95% intervals at the grid radii."""
    radii = sorted({0.0, *(r.radius for r in records if r.correct)})
    accuracy = [sum(1 for r in records if r.correct and r.radius >= t) / len(records) for t in radii]
    figure, axes = plt.subplots(figsize=(5.5, 3.8))
    axes.step(radii + [radii[-1] * 1.05 + 1e-3], accuracy + [0.0], where="pre", label="certified accuracy")
    axes.errorbar(
        [p.radius for p in points],
        [p.accuracy for p in points],
        yerr=[[p.accuracy - p.ci_low for p in points], [p.ci_high - p.accuracy for p in points]],
        fmt="o", markersize=3, capsize=2, label="95% interval (test samples)",
    )
    axes.set(xlabel="radius", ylabel="certified accuracy", ylim=(0, 1.02), title=title)
    axes.grid(alpha=0.3)
    axes.legend(loc="upper right")
    figure.tight_layout()
    return save(figure, path)


def attack_proportion_plot(records: Sequence[AttackRecord], title: str, path: Path) -> Path:
    """The paper's Figure 2: fraction of attacked samples broken within radius r, per attack, against the Cohen bound.

    Solid lines are each attack's smallest examples, dashed lines its first ones; the
    dotted black line (samples whose certified radius is at most r) bounds them all.
    """
    radii = sorted({0.0, *(r.cohen_radius for r in records), *(d for r in records for d in (r.first_radius, r.best_radius) if d)})
    grid = [radii[-1] * i / 400 for i in range(401)] if radii[-1] > 0 else [0.0]
    figure, axes = plt.subplots(figsize=(5.5, 3.8))
    for colour, name in enumerate(metrics.attack_names(records)):
        line = axes.plot(grid, [metrics.attack_proportion(records, name, t) for t in grid], color=f"C{colour}", label=name)
        axes.plot(grid, [metrics.attack_proportion(records, name, t, first=True) for t in grid], "--", color=line[0].get_color(), linewidth=0.8)
    axes.plot(grid, [metrics.cohen_proportion(records, t) for t in grid], ":", color="black", label="Cohen bound")
    axes.set(xlabel="l2 radius", ylabel="attack proportion", ylim=(0, 1.02), title=title)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    return save(figure, path)
