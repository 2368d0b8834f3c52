"""Table 1's metrics and the attack-proportion curve on hand-made records with answers worked out by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from rsbench import metrics, plots
from rsbench.records import AttackRecord


def record(index: int, attack: str, best: float | None, first: float | None = None, best_time: float = 1.0,
           first_time: float = 1.0, cohen: float = 0.5, total_time: float = 4.0, candidates: int = 2,
           rejected: int = 0) -> AttackRecord:
    hit = best is not None
    return AttackRecord(
        index=index, label=0, attack=attack, success=hit,
        first_radius=(first if first is not None else best) if hit else None, first_time_s=first_time if hit else None,
        best_radius=best, best_time_s=best_time if hit else None, total_time_s=total_time, cohen_radius=cohen,
        iterations=10, judge_calls=20, candidates=candidates, rejected=rejected, judge_n=1500, judge_alpha=0.005,
        confirm_n=15000,
    )


RECORDS = [
    record(0, "a", 1.0, first=1.2, best_time=2.0, cohen=0.5),
    record(0, "b", 1.5, cohen=0.5),
    record(1, "a", None, cohen=1.0, total_time=6.0, candidates=1, rejected=1),
    record(1, "b", 2.0, first=3.0, best_time=4.0, first_time=2.0, cohen=1.0),
    record(2, "a", 0.8, cohen=0.4),
    record(2, "b", 0.8, first=1.0, best_time=3.0, cohen=0.4),  # a tie with "a"
    record(3, "a", None, cohen=0.3, total_time=8.0, candidates=0),  # every attack failed: nobody is best
    record(3, "b", None, cohen=0.3),
]


def test_table_1_rows() -> None:
    table = metrics.attack_table(RECORDS)
    assert list(table) == ["a", "b"]
    a, b = table["a"], table["b"]
    assert (a.attacked, a.success, a.best) == (4, 50.0, 50.0)
    assert (b.attacked, b.success, b.best) == (4, 75.0, 50.0)
    assert a.r50 == pytest.approx(0.9) and b.r50 == pytest.approx(1.5)
    assert a.pct_cohen == pytest.approx(100.0) and b.pct_cohen == pytest.approx(100.0)
    assert a.time_s == pytest.approx(1.5) and b.time_s == pytest.approx(3.0)
    assert a.first_ratio_r50 == pytest.approx(1.0 / 0.9) and b.first_ratio_r50 == pytest.approx(1.0)
    # the paper's ratio: the first example's time over the whole attack's (totals 4, 6, 4, 8: median 5)
    assert a.total_time_s == pytest.approx(5.0) and b.total_time_s == pytest.approx(4.0)
    assert a.first_ratio_time == pytest.approx(1.0 / 5.0) and b.first_ratio_time == pytest.approx(1.0 / 4.0)
    # kept candidates 2 + 1 + 2 + 0, one rejected; b kept 8 and lost none
    assert a.confirmed == pytest.approx(100 * 4 / 5) and b.confirmed == pytest.approx(100.0)


def test_an_attack_without_successes_has_no_medians() -> None:
    row = metrics.attack_summary([record(0, "a", None), record(0, "b", 0.7)], "a")
    assert (row.success, row.best, row.r50, row.pct_cohen, row.time_s, row.first_ratio_r50) == (0, 0, None, None, None, None)
    assert metrics.attack_summary([record(0, "a", None, candidates=0)], "a").confirmed is None


def test_pct_cohen_skips_samples_without_a_positive_certificate() -> None:
    row = metrics.attack_summary([record(0, "a", 1.0, cohen=-0.1), record(1, "a", 0.9, cohen=0.6)], "a")
    assert row.pct_cohen == pytest.approx(50.0)


def test_attack_proportion_and_cohen_bound() -> None:
    assert metrics.attack_proportion(RECORDS, "a", 1.0) == pytest.approx(0.5)
    assert metrics.attack_proportion(RECORDS, "a", 1.0, first=True) == pytest.approx(0.25)
    assert metrics.attack_proportion(RECORDS, "b", 10.0) == pytest.approx(0.75)
    assert metrics.cohen_proportion(RECORDS, 0.45) == pytest.approx(0.5)
    assert metrics.cohen_proportion(RECORDS, 0.29) == 0.0
    mixed = [record(0, "a", 1.0, cohen=0.7), record(0, "b", 1.0, cohen=0.4)]  # attacks with different N
    assert metrics.cohen_proportion(mixed, 0.5) == 1.0  # the smaller certificate bounds both


def test_attack_proportion_plot(tmp_path: Path) -> None:
    path = plots.attack_proportion_plot(RECORDS, "hand-made", tmp_path / "attack_proportion.png")
    assert path.stat().st_size > 1000
