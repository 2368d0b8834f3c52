"""What an exact verifier says of a track: each entry's recall and the certificate's tightness (l_inf), or the room
left between certificate and attack (l2).

Attacks are ranked against each other; only an exact verdict says how far the best one is from the truth. A
track's folder may hold `exact/`, the run directory `rsbench exact` wrote for the track's defense, epsilon, split and
samples (maintainers run it; a pull request may not change it, and `rsbench leaderboard check` re-checks its
examples: `rsbench.gate.exact_runs`). Over the track's attacked samples:

- an example exists where the MILP found one, or where an entry's stored success shows one on a sample the MILP
  left undecided; none exists where the MILP proved robustness; the rest stay unknown (never counted robust);
- an entry's recall is its successes over the samples where an example exists;
- the certificate's tightness is the samples it certifies at epsilon over those exactly robust (at most 1).

Both carry 95% Clopper-Pearson intervals. A certified sample not proved robust, or a success on a sample proved
robust, contradicts the verifier or the certifier: the derivation stops, naming the samples.

No exact verifier decides the l2 tracks here: the MILP encodes an l_inf box around a deterministic ReLU network,
and an l2 ball is no box (its program would be quadratic), a smoothed classifier no deterministic network. Those
tracks show instead, per sample with both a certificate and a confirmed example, the gap between the best entry's
distance and the certified radius: the most any stronger attack or tighter certificate could still move.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from rsbench.errors import RsbenchError
from rsbench.exact.run import ExactRecord
from rsbench.leaderboard import paper_rule
from rsbench.leaderboard.rederive import attacked as attacked_samples
from rsbench.leaderboard.track_files import Interval, Leaderboard
from rsbench.records import RunConfig, SampleRecord
from rsbench.stats import clopper_pearson

EXACT = "exact"
"""A track folder's exact run: `config.json`, `samples.jsonl` and `examples/` as `rsbench exact --out` writes them."""
RECALL = "recall (exact)"
"""The tables' column of each entry's recall."""


@dataclass(frozen=True)
class Share:
    """`count` of `total` samples, with its 95% Clopper-Pearson interval."""

    count: int
    total: int

    def interval(self) -> Interval:
        """In percent; null where there are no samples."""
        if not self.total:
            return Interval(value=None, ci_low=None, ci_high=None)
        low, high = clopper_pearson(self.count, self.total, 0.05)
        return Interval(value=100 * self.count / self.total, ci_low=100 * low, ci_high=100 * high)

    def text(self) -> str:
        """"3/3 = 100% [29, 100]"; "n/a" without samples."""
        shown = self.interval()
        if shown.value is None:
            return "n/a"
        return f"{self.count}/{self.total} = {_pct(shown.value)}% [{_pct(shown.ci_low)}, {_pct(shown.ci_high)}]"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}" if value >= 10 or value == 0 else f"{value:.2g}"


@dataclass(frozen=True)
class ExactColumns:
    """A track's exact verdicts over its attacked samples, and what they make of its entries and certificate."""

    attacked: int
    exists: int
    robust: int
    unknown: int
    recall: dict[str, Share]
    tightness: Share


def derive(where: str, attacked: Sequence[int], certified: set[int], verdicts: dict[int, str],
           successes: dict[str, set[int]]) -> ExactColumns:
    """The columns from the attacked samples' indices, those certified at epsilon, the MILP's verdict of each
    (robust, adversarial, unknown) and each entry's successes; refused, in one line naming the samples, where they
    contradict one another."""
    missing = sorted(set(attacked) - verdicts.keys())
    if missing:
        raise RsbenchError(f"{where}: the exact run has no verdict on attacked samples {missing}")
    robust = {i for i in attacked if verdicts[i] == "robust"}
    found = set().union(*successes.values()) if successes else set()
    exists = {i for i in attacked if verdicts[i] == "adversarial"} | (found & set(attacked))
    if certified - robust:
        raise RsbenchError(f"{where}: samples {sorted(certified - robust)} are certified but not exactly robust")
    for name, indices in successes.items():
        if indices & robust:
            raise RsbenchError(f"{where}: {name} succeeded on samples {sorted(indices & robust)}, which the MILP "
                               "proved robust")
    return ExactColumns(attacked=len(attacked), exists=len(exists), robust=len(robust),
                        unknown=len(attacked) - len(exists) - len(robust),
                        recall={name: Share(len(indices), len(exists)) for name, indices in successes.items()},
                        tightness=Share(len(certified), len(robust)))


def read_run(folder: Path) -> tuple[RunConfig, list[ExactRecord]]:
    """An exact run's config and records, read only (a torn or invalid line is refused, not cut off, and so is a
    second record of a sample, which would override the first)."""
    try:
        config = RunConfig.model_validate_json((folder / "config.json").read_text())
        lines = (folder / "samples.jsonl").read_text().splitlines()
        records = [ExactRecord.model_validate_json(line) for line in lines if line.strip()]
    except (OSError, ValidationError) as error:
        raise RsbenchError(f"{folder}: not an exact run ({error})") from None
    indices = [r.index for r in records]
    if len(set(indices)) != len(indices):
        raise RsbenchError(f"{folder}: samples {sorted({i for i in indices if indices.count(i) > 1})} are recorded "
                           "twice")
    return config, records


def follows(config: RunConfig, board: Leaderboard) -> bool:
    """Whether an exact run decided the track version's samples: its defense, split and epsilon, every sample."""
    p = board.protocol
    return (config.command == "exact" and config.defense_hash == p.defense_hash and config.split == p.split
            and config.epsilon == p.epsilon and config.num_samples >= p.num_samples)


def columns(path: Path, board: Leaderboard, stored: tuple[list[SampleRecord], dict[str, list]]) -> ExactColumns | None:
    """The exact columns of the track version at `path`, from the track folder's exact run and its stored records;
    None without a run that follows the version's protocol."""
    folder = path.parent / EXACT
    if not folder.is_dir():
        return None
    config, records = read_run(folder)
    if not follows(config, board):
        return None
    clean, entries = stored
    verdicts = {r.index: r for r in records}
    where = f"{board.track} v{board.version}"
    differ = [c.index for c in clean if c.index in verdicts and
              (verdicts[c.index].label, verdicts[c.index].prediction) != (c.label, c.prediction)]
    if differ:
        raise RsbenchError(f"{where}: the exact run's labels or predictions of samples {differ} are not the track's")
    attacked = [c.index for c in attacked_samples(board, clean)]
    eps = board.protocol.epsilon or 0.0
    certified = {c.index for c in clean if c.index in attacked and c.correct and c.radius >= eps}
    return derive(where, attacked, certified, {i: r.exact for i, r in verdicts.items()},
                  {name: {r.index for r in rows if r.success} for name, rows in entries.items()})


@dataclass(frozen=True)
class Gap:
    """Per sample with a certificate and a confirmed example: the best entry's distance minus the certified radius."""

    gaps: list[float]

    def text(self) -> str:
        if not self.gaps:
            return "no sample has both a certificate and a confirmed example"
        q1, median, q3 = np.percentile(self.gaps, [25, 50, 75])
        plural = "s" if len(self.gaps) != 1 else ""
        return (f"on the {len(self.gaps)} sample{plural} with both, median {median:.3g} (quartiles {q1:.3g}, {q3:.3g}; "
                f"{min(self.gaps):.3g} to {max(self.gaps):.3g})")


def gap(entries: dict[str, list]) -> Gap:
    """The gap over the track's samples, from its entries' evasion records (best_radius, cohen_radius)."""
    best: dict[int, float] = {}
    certificate: dict[int, float] = {}
    for rows in entries.values():
        for r in rows:
            certificate[r.index] = r.cohen_radius
            if r.success and r.best_radius is not None:
                best[r.index] = min(best.get(r.index, r.best_radius), r.best_radius)
    return Gap([best[i] - certificate[i] for i in sorted(best) if certificate[i] > 0])


@dataclass(frozen=True)
class Shown:
    """What the tables, the site and the profiles show of a track: each entry's recall, the tightness, and notes."""

    recall: dict[str, Share] = field(default_factory=dict)
    tightness: Share | None = None
    notes: list[str] = field(default_factory=list)


NOTHING = Shown()
NO_MILP = {"smoothing": "the smoothed classifier is randomized (a probability over Gaussian noise), which no MILP "
                        "decides",
           "l2": "an l2 ball is no box, so its MILP would be quadratic, which rsbench exact does not solve"}
"""Why no exact verifier decides an l2 track: by the defense's kind, else by its norm."""


def shown(path: Path, board: Leaderboard, stored: tuple[list[SampleRecord], dict[str, list]]) -> Shown:
    """The exact columns of an l_inf track version with an exact run, the gap of an l2 evasion track (and, on a
    smoothing track, its entries under the paper's success rule: `rsbench.leaderboard.paper_rule`), else nothing."""
    if board.protocol.goal != "evasion":
        return NOTHING
    found = columns(path, board, stored)
    if found is not None:
        note = (f"Exact (rsbench exact, a MILP, in {EXACT}/): of {found.attacked} attacked samples, an adversarial "
                f"example exists on {found.exists}, none on {found.robust}, {found.unknown} unknown (undecided within "
                f"the time limit); certificate tightness (certified / exactly robust) {found.tightness.text()}. "
                f"{RECALL}: an entry's successes / the samples where an example exists. 95% Clopper-Pearson intervals.")
        return Shown(found.recall, found.tightness, [note])
    if board.defense.norm != "l2" or not board.entries:
        return NOTHING
    why = NO_MILP["smoothing" if board.defense.kind == "smoothing" else "l2"]
    note = (f"No exact verdicts: {why}. Instead, the gap between the best entry's distance and the certified radius "
            f"per sample, {gap(stored[1]).text()}.")
    paper = paper_rule.note(board, stored)
    return Shown(notes=[note, *([paper] if paper else [])])
