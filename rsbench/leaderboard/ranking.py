"""Rankings with their uncertainty, computed from a track's stored records when its pages are drawn.

A track ranks its entries by `best` (the share of samples on which an entry's example is the
track's strongest). With 20 samples that share moves a lot from sample to sample, so a rank alone
overstates: each entry gets a 95% bootstrap interval of its rank, from the very resamples behind the
intervals of its metrics (`stats.resample_draws` with the protocol's seed and count), and a track
names a leader only when one entry is first, alone, in at least 95% of them. Otherwise the entries
that may be first are named as tied. The paired comparisons get a two-sided sign test per pair, and
times are shown relative to a reference entry run on the same hardware. Nothing here is stored: the
leaderboard files keep their schema, and everything is recomputed from their records.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rsbench.leaderboard.scoring import score
from rsbench.leaderboard.track_files import Entry, Leaderboard
from rsbench.records import SampleRecord
from rsbench.stats import binomial_p_value, resample_draws

LEADER_SHARE = 0.95
"""Share of resamples in which an entry must be first, alone, to be named the track's leader."""
LEVEL = 0.95
"""Coverage of the rank intervals (that of every interval on the leaderboards)."""
TIME_METRICS = ("time_s", "total_time_s")
"""Metrics in seconds: shown relative to the track's reference entry, when it ran on the same hardware."""


@dataclass(frozen=True)
class Standing:
    """One entry's place: its rank on the full sample, the 95% bootstrap interval of that rank, and the
    share of resamples in which it is first alone."""

    name: str
    rank: int
    low: int
    high: int
    first: float

    @property
    def interval(self) -> str:
        """The rank interval as people write it: "2" or "1–3"."""
        return f"{self.low}" if self.low == self.high else f"{self.low}–{self.high}"


@dataclass(frozen=True)
class Ranking:
    """A track's entries by rank (ties in order of addition), its leader if one is clear, else who may be first."""

    standings: list[Standing]
    leader: str | None
    contenders: list[str]
    """Entries whose rank interval reaches 1: the leader alone when there is one, none on a single-entry track or
    where no entry is best on any sample."""
    reason: str
    """Why there is no leader ("" when there is one)."""

    @property
    def headline(self) -> str:
        """What the index says about the top: the leader, the tie, or why there is neither."""
        if self.leader:
            return self.leader
        if len(self.contenders) > 1:
            return "tied: " + ", ".join(self.contenders)
        return f"– ({self.reason})" if self.reason else "–"

    def of(self, name: str) -> Standing | None:
        return next((s for s in self.standings if s.name == name), None)


def score_matrix(board: Leaderboard, clean: Sequence[SampleRecord], records: dict[str, list]) -> np.ndarray:
    """Scores (`scoring.score`: smaller is stronger, inf a failure) of each entry (rows, in `records`'
    order) on each evaluated sample (columns, in `clean`'s order); nan where the entry did not attack it."""
    column = {sample.index: k for k, sample in enumerate(clean)}
    scores = np.full((len(records), len(clean)), np.nan)
    for row, rows in enumerate(records.values()):
        for record in rows:
            if record.index in column:
                scores[row, column[record.index]] = score(board.protocol.goal, record)
    return scores


def best_shares(scores: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """`best` of each entry on each resample, shape (resamples, entries); nan where an entry attacked none of
    the drawn samples. The definition of `scoring.comparison`: the share of an entry's attacked samples
    (a sample drawn twice counts twice) where its score is the smallest of the track and not a failure."""
    drawn = scores[:, draws]  # (entries, resamples, units)
    attacked = ~np.isnan(drawn)
    top = np.min(np.where(attacked, drawn, np.inf), axis=0)  # (resamples, units)
    wins = attacked & (drawn <= top) & np.isfinite(drawn)
    counts = attacked.sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = np.where(counts > 0, 100 * wins.sum(axis=2) / counts, np.nan)
    return shares.T


def ranks(values: np.ndarray) -> np.ndarray:
    """Competition ranks of the last axis, larger first, nan last: 1 + the number of entries strictly ahead."""
    filled = np.where(np.isnan(values), -np.inf, values)
    return 1 + (filled[..., None, :] > filled[..., :, None]).sum(axis=-1)


def rank(board: Leaderboard, clean: Sequence[SampleRecord], records: dict[str, list]) -> Ranking:
    """Rank the entries by `best` with bootstrap rank intervals and the leader, as the site shows them."""
    names = list(records)
    scores = score_matrix(board, clean, records)
    point = best_shares(scores, np.arange(len(clean))[None, :])[0]
    draws = resample_draws(len(clean), board.protocol.bootstrap_seed, board.protocol.bootstrap_resamples)
    resampled = best_shares(scores, draws) if len(draws) else np.zeros((0, len(names)))
    point_ranks, resampled_ranks = ranks(point), ranks(resampled)
    filled = np.where(np.isnan(resampled), -np.inf, resampled)
    alone = (filled[:, :, None] > filled[:, None, :]).sum(axis=2) == len(names) - 1  # ahead of every other
    tail = 100 * (1 - LEVEL) / 2
    standings = []
    for k, name in enumerate(names):
        mine = resampled_ranks[:, k]
        low = math.floor(np.percentile(mine, tail)) if len(mine) else int(point_ranks[k])
        high = math.ceil(np.percentile(mine, 100 - tail)) if len(mine) else int(point_ranks[k])
        first = float(alone[:, k].mean()) if len(mine) else 0.0
        standings.append(Standing(name, int(point_ranks[k]), min(low, int(point_ranks[k])),
                                  max(high, int(point_ranks[k])), first))
    standings.sort(key=lambda s: s.rank)  # stable: ties stay in order of addition
    return _verdict(standings, point)


def _verdict(standings: list[Standing], point: np.ndarray) -> Ranking:
    """The leader (first alone in LEADER_SHARE of the resamples), else the entries that may be first."""
    if not standings:
        return Ranking([], None, [], "no entries")
    top = float(np.nanmax(point)) if not np.all(np.isnan(point)) else 0.0
    contenders = [s.name for s in standings if s.low == 1]
    if len(standings) == 1:
        return Ranking(standings, None, [], "a single entry")
    if top <= 0:
        return Ranking(standings, None, [], "no entry is best on any sample")
    first = standings[0]  # ranked first on the full sample
    if first.first >= LEADER_SHARE:
        return Ranking(standings, first.name, [first.name], "")
    if len(contenders) > 1:
        return Ranking(standings, None, contenders, "")
    return Ranking(standings, None, contenders,
                   f"{first.name} first in {100 * first.first:.0f}% of resamples, short of {100 * LEADER_SHARE:.0f}%")


def sign_tests(board: Leaderboard, clean: Sequence[SampleRecord],
               records: dict[str, list]) -> dict[str, dict[str, float | None]]:
    """p[a][b]: two-sided sign test of "a's example beats b's as often as the reverse" over the samples both
    attacked, ties (both failed, or equal) left out; None where no sample separates them."""
    scores = score_matrix(board, clean, records)
    names = list(records)
    tests: dict[str, dict[str, float | None]] = {}
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if i == j:
                continue
            both = ~np.isnan(scores[i]) & ~np.isnan(scores[j])
            wins = int((scores[i][both] < scores[j][both]).sum())
            losses = int((scores[j][both] < scores[i][both]).sum())
            tests.setdefault(a, {})[b] = binomial_p_value(wins, wins + losses) if wins + losses else None
    return tests


def comparable(entry: Entry, reference: Entry) -> bool:
    """Whether two entries' times can be compared: measured on the same hardware and device."""
    mine, theirs = entry.environment, reference.environment
    return (mine.hardware, mine.device) == (theirs.hardware, theirs.device)


def relative_time(board: Leaderboard, entry: Entry, metric: str) -> tuple[float | None, str]:
    """An entry's time as a multiple of the track's reference entry's (its first, on the same hardware), and a
    note: "reference", "" or why the times are not comparable. (None, note) when there is no ratio."""
    reference = board.entries[0]
    mine, theirs = entry.metrics.get(metric), reference.metrics.get(metric)
    if entry.name == reference.name:
        return (1.0 if mine and mine.value else None), "reference"
    if not comparable(entry, reference):
        return None, f"not comparable: {entry.environment.hardware} ({entry.environment.device}), reference on " \
                     f"{reference.environment.hardware} ({reference.environment.device})"
    if mine is None or theirs is None or mine.value is None or not theirs.value:
        return None, ""
    return mine.value / theirs.value, ""
