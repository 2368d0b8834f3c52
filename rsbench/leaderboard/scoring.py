"""Scoring a track's entries from their records: each entry's metrics with seeded bootstrap intervals over the
evaluated samples, and the `comparison` block (`best`, paired comparisons) across entries."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from rsbench.leaderboard.track_files import COMPARATIVE, SCORE, Comparison, Interval, Leaderboard, goal_class
from rsbench.records import SampleRecord
from rsbench.stats import bootstrap


def resampled(clean: Sequence[SampleRecord], records: Sequence[Any], draw: Sequence[int]) -> tuple[list, list]:
    """The clean and attack records of the drawn samples, renumbered so that a sample drawn twice counts twice."""
    by_index: dict[int, list] = {}
    for r in records:
        by_index.setdefault(r.index, []).append(r)
    new_clean, new_records = [], []
    for k, position in enumerate(draw):
        sample = clean[position]
        new_clean.append(sample.model_copy(update={"index": k}))
        new_records += [r.model_copy(update={"index": k}) for r in by_index.get(sample.index, [])]
    return new_clean, new_records


def point_metrics(board: Leaderboard, name: str, clean: list[SampleRecord], records: list) -> dict[str, float | None]:
    """The goal's own metrics of entry `name` (percentages for rates), from the goal's summary."""
    protocol = board.protocol
    config = protocol.run_config([])
    summary = goal_class(protocol.goal).summarize(board.defense, config, clean, records)
    row = summary["attacks"].get(name, {})
    values = {k: (100 * v["value"] if isinstance(v, dict) else v) for k, v in row.items()}
    if "robustness" in summary:
        robust = summary["robustness"]["attacks"].get(name)
        values["robust_accuracy"] = 100 * robust["value"] if robust else None
    return {k: values.get(k) for k in protocol.metrics if k not in COMPARATIVE and
            (k in values or k == "robust_accuracy" and "robustness" in summary)}


def entry_metrics(board: Leaderboard, name: str, clean: list[SampleRecord], records: list) -> dict[str, Interval]:
    """Every metric of one entry with its seeded bootstrap interval over the evaluated samples."""
    intervals = bootstrap(lambda draw: point_metrics(board, name, *resampled(clean, records, draw)), len(clean),
                          seed=board.protocol.bootstrap_seed, resamples=board.protocol.bootstrap_resamples)
    return {k: _interval(*v) for k, v in intervals.items()}


def _interval(value: float | None, low: float, high: float) -> Interval:
    return Interval(value=value, ci_low=None if value is None else low, ci_high=None if value is None else high)


def score(goal: str, record: Any) -> float:
    """A record's `SCORE`, oriented so that smaller is stronger; inf for a failure."""
    value = getattr(record, SCORE[goal])
    if not record.success or value is None:
        return math.inf
    return -value if goal == "spoofing" else value


def comparison(board: Leaderboard, clean: list[SampleRecord], records: dict[str, list]) -> Comparison:
    """`best` of every entry and the paired comparisons of every two, from all entries' records."""
    goal, names = board.protocol.goal, list(records)

    def statistic(draw: Sequence[int]) -> dict[str, float | None]:
        scores: dict[str, dict[int, float]] = {}
        for name in names:
            _, mine = resampled(clean, records[name], draw)
            scores[name] = {r.index: score(goal, r) for r in mine}
        top: dict[int, float] = {}
        for table in scores.values():
            for index, value in table.items():
                top[index] = min(top.get(index, math.inf), value)
        values: dict[str, float | None] = {}
        for a in names:
            mine = scores[a]
            wins = sum(s <= top[i] and s < math.inf for i, s in mine.items())
            values[f"best/{a}"] = 100 * wins / len(mine) if mine else None
            for b in names:
                if a != b:
                    both = mine.keys() & scores[b].keys()
                    wins = sum(mine[i] < scores[b][i] for i in both)
                    values[f"paired/{a}/{b}"] = 100 * wins / len(both) if both else None
        return values

    intervals = bootstrap(statistic, len(clean), seed=board.protocol.bootstrap_seed,
                          resamples=board.protocol.bootstrap_resamples)
    paired: dict[str, dict[str, Interval]] = {}
    for a in names:
        for b in names:
            if a != b:
                paired.setdefault(a, {})[b] = _interval(*intervals[f"paired/{a}/{b}"])
    return Comparison(best={a: _interval(*intervals[f"best/{a}"]) for a in names}, paired=paired)
