"""What benchmarks/paper_tables.py and paper_sweeps.py share: reading a track's or a run folder's stored records,
and the cells every comparison prints (shares with Clopper-Pearson intervals, stored metrics with their bootstrap
intervals, the settings of both sides with a difference column)."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from pathlib import Path

from rsbench.leaderboard import track_files
from rsbench.records import AttackRecord, SampleRecord
from rsbench.stats import Estimate, bootstrap, clopper_pearson

SEED = "benchmarks/seed_leaderboards.sh"


def track(root: Path, name: str) -> tuple[track_files.Leaderboard, list[SampleRecord], dict[str, list]] | None:
    """A track's newest version and its stored records, or None when it has not been seeded."""
    path = track_files.latest(root, name)
    if path is None:
        return None
    board = track_files.load(path)
    clean, records = track_files.stored_records(path.parent, board)
    return board, clean, records


def share(hits: int, total: int) -> str:
    """hits / total in % with its 95% Clopper-Pearson interval and the count."""
    if not total:
        return "-"
    low, high = clopper_pearson(hits, total, 0.05)
    return f"{100 * hits / total:.1f} [{100 * low:.1f}, {100 * high:.1f}] (n={total})"


def interval(value: dict[str, float | None] | None, fmt: str = ".2f") -> str:
    """A stored metric with its bootstrap interval."""
    if not value or value.get("value") is None:
        return "-"
    return f"{value['value']:{fmt}} [{value['ci_low']:{fmt}}, {value['ci_high']:{fmt}}]"


def missing(name: str) -> str:
    return f"  {name}: not yet seeded (see {SEED})"


def settings_rows(source: str, settings: list[tuple[str, str, str]]) -> list[str]:
    """Where the paper's numbers come from, and each setting on both sides with a difference column."""
    lines = [f"  source: {source}", f"  {'setting':<17}{'':<9}{'paper':<52}rsbench"]
    lines += [f"  {aspect:<17}{'same' if paper == ours else 'differs':<9}{paper:<52}{ours}"
              for aspect, paper, ours in settings]
    return lines


def run_configs(runs: Path, defense: str, goal: str) -> list[tuple[dict, Path]]:
    """The config and samples.jsonl of every run directory under `runs` (as `rsbench evaluate --out` and
    `rsbench sweep --root` write them) of `defense` and `goal`."""
    found = []
    for config_path in sorted(runs.rglob("config.json")):
        config = json.loads(config_path.read_text())
        samples = config_path.parent / "samples.jsonl"
        if config["defense"] == defense and config["goal"] == goal and samples.exists():
            found.append((config, samples))
    return found


def run_records(runs: Path, defense: str, goal: str = "spoofing") -> tuple[float | None, dict[str, list]] | None:
    """The epsilon and records by attack of those run directories, or None when there are none."""
    runs_found = run_configs(runs, defense, goal)
    records: dict[str, list] = {}
    for _, samples in runs_found:
        for record in track_files.parse_jsonl(samples.read_bytes(), track_files.record_type(goal)):
            records.setdefault(record.attack, []).append(record)
    return (runs_found[-1][0]["epsilon"], records) if runs_found else None


def strict_radius(record: AttackRecord) -> float | None:
    """A record's smallest example by rsbench's rule (confirmed on fresh noise), or None."""
    return record.best_radius if record.success else None


def judged_radius(record: AttackRecord) -> float | None:
    """A record's smallest example by the paper's rule (the judge's test alone), or None."""
    return record.judged_best_radius if record.candidates else None


def best_wins(records: dict[str, list], names: list[str], radius: Callable[[AttackRecord], float | None]
              ) -> dict[int, dict[str, bool]]:
    """For each sample all of `names` attacked, whether each one's smallest example (by `radius`) is the smallest
    (ties credit each; none when all fail)."""
    by_sample: dict[int, dict[str, float]] = {}
    for name in names:
        for r in records.get(name, []):
            found = radius(r)
            by_sample.setdefault(r.index, {})[name] = float("inf") if found is None else found
    return {index: {a: radii[a] == min(radii.values()) < float("inf") for a in names}
            for index, radii in by_sample.items() if len(radii) == len(names)}


def best_shares(records: dict[str, list], names: list[str], radius: Callable[[AttackRecord], float | None]
                ) -> dict[str, Estimate]:
    """`best` among `names`: % of the samples they all attacked on which an attack's smallest example (by
    `radius`) is the smallest, with a bootstrap interval over those samples."""
    wins = list(best_wins(records, names, radius).values())

    def statistic(draw: list[int]) -> dict[str, float | None]:
        return {a: 100 * sum(wins[i][a] for i in draw) / len(draw) for a in names} if draw else {}

    return bootstrap(statistic, len(wins)) if wins else {}


def best_gap(records: dict[str, list], names: list[str], attack: str,
             rules: tuple[Callable[[AttackRecord], float | None], Callable[[AttackRecord], float | None]]) -> Estimate:
    """By how many points `attack`'s `best` under the first rule exceeds its `best` under the second, on the same
    samples, with a paired bootstrap interval (both shares drawn from one resample)."""
    first, second = (best_wins(records, names, radius) for radius in rules)
    pairs = [(first[i][attack], second[i][attack]) for i in first if i in second]

    def statistic(draw: list[int]) -> dict[str, float | None]:
        return {"gap": 100 * sum(pairs[i][0] - pairs[i][1] for i in draw) / len(draw)} if draw else {}

    return bootstrap(statistic, len(pairs))["gap"] if pairs else (None, float("nan"), float("nan"))


def text(estimate: Estimate) -> str:
    value, low, high = estimate
    return "-" if value is None else f"{value:.3g} [{low:.3g}, {high:.3g}]"


def median_estimates(rows: list[AttackRecord], fields: dict[str, Callable[[AttackRecord], float | None]]
                     ) -> dict[str, Estimate]:
    """Each field's median over the records where it is defined, with a bootstrap interval over the samples."""
    def statistic(draw: list[int]) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for key, read in fields.items():
            values = [v for v in (read(rows[i]) for i in draw) if v is not None]
            out[key] = statistics.median(values) if values else None
        return out

    return bootstrap(statistic, len(rows))


def percent(value: tuple[float | None, float, float] | None) -> str:
    """A bootstrap share as value [low, high], or - when there is none."""
    return "-" if value is None or value[0] is None else f"{value[0]:.0f} [{value[1]:.0f}, {value[2]:.0f}]"
