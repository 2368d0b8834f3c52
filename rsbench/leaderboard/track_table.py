"""A track's entries as a table: which columns, in which order, and what each cell says, ranked as the site ranks
them (`rsbench.leaderboard.ranking`). In Markdown for `rsbench leaderboard show`, leaderboards/README.md and the interval
table `rsbench evaluate` prints, which names a track only when the run followed that track's protocol exactly."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

from rsbench.data import SPLIT_NOTES
from rsbench.errors import RsbenchError
from rsbench.leaderboard.admission import add_run
from rsbench.leaderboard.exact_columns import NOTHING, RECALL, Shown
from rsbench.leaderboard.ranking import LEADER_SHARE, TIME_METRICS, Ranking, rank, relative_time
from rsbench.leaderboard.track_files import (
    Entry,
    Interval,
    Leaderboard,
    Protocol,
    latest,
    load,
    protocol_differences,
    stored_records,
    track_name,
)
from rsbench.specs import SELF_CERTIFIED

LOWER_IS_BETTER = {"r50", "pct_cohen", "time_s", "total_time_s", "first_ratio_r50", "first_ratio_time",
                   "robust_accuracy", "l2_mean", "attack_error"}
"""Metrics where a smaller number means a stronger attack; the others rank larger first."""
NONE = Interval(value=None, ci_low=None, ci_high=None)
"""A number that is undefined (an entry without the metric)."""
RANK_LEGEND = (f"rank: the entry's rank by best and, when it moves, its 95% bootstrap interval (the resamples "
               f"behind every other interval); the leader is the entry first alone in at least "
               f"{100 * LEADER_SHARE:.0f}% of them; otherwise the entries whose interval reaches 1 are tied")
TIME_LEGEND = ("times: multiples of the reference entry's (the track's first), when both ran on the same hardware "
               "and device; n/c where they did not (the seconds are shown, but not comparable)")


def metric_columns(board: Leaderboard) -> list[str]:
    """The track's metrics that some entry has, comparative first."""
    present = {k for e in board.entries for k in e.metrics} | ({"best"} if board.comparison.best else set())
    return [k for k in board.protocol.metrics if k in present]


def value_of(board: Leaderboard, entry: Entry, metric: str) -> Interval:
    if metric == "best":
        return board.comparison.best.get(entry.name, NONE)
    return entry.metrics.get(metric, NONE)


def cell(interval: Interval) -> str:
    if interval.value is None:
        return "–"
    return f"{interval.value:.3g} [{interval.ci_low:.3g}, {interval.ci_high:.3g}]"


def sorted_entries(board: Leaderboard, metric: str | None, ranking: Ranking | None = None) -> list[Entry]:
    """Entries ranked by `metric` (strongest first; undefined last); without one, in the ranking's order (the
    site's), else in order of addition."""
    if metric is None:
        order = {s.name: k for k, s in enumerate(ranking.standings)} if ranking else {}
        return sorted(board.entries, key=lambda e: order.get(e.name, len(order)))
    if metric not in board.protocol.metrics:
        raise RsbenchError(f"{board.track} has no metric {metric!r}; metrics: {', '.join(board.protocol.metrics)}")
    sign = 1 if metric in LOWER_IS_BETTER else -1

    def key(entry: Entry) -> float:
        value = value_of(board, entry, metric).value
        return math.inf if value is None else sign * value

    return sorted(board.entries, key=key)


def source_of(entry: Entry) -> str:
    """Where the entry's attack comes from: the registry, or a submission's commit (or, for code that was not
    committed as it ran, its content hash)."""
    source = entry.source
    if source.kind != "submission":  # a maintainer's run, or the trusted job's on a submitted defense
        return "registry"
    if source.commit:
        return f"submission {source.submission} @ {source.commit[:8]}"
    return f"submission {source.submission}, content {(source.content_sha256 or 'unknown')[:8]}"


SELF_REPORTED_NOTE = ("* self-reported: by the attack (times, iterations, its first example), or measured by the "
                      "machine that ran it, which was not rsbench's CI (times); rsbench did not judge it.")
MEASURED = ("time_s", "total_time_s", "first_ratio_time")
"""Metrics from times the running machine measured, which no re-check can reproduce."""


def self_reported(entry: Entry) -> set[str]:
    """The entry's metrics rsbench did not judge: what its attack reported itself and, unless rsbench's trusted job
    ran it (a submitted defense's suite), its times, which came with the pull request that carried it."""
    return set(entry.self_reported) | (set() if entry.source.kind == "defense-submission" else set(MEASURED))


def marked(entry: Entry, metric: str, text: str) -> str:
    """A cell's text, starred when rsbench did not judge the number (`self_reported`)."""
    return f"{text}*" if metric in self_reported(entry) and text != "–" else text


def superseded(board: Leaderboard, newest: int | None) -> str:
    """A line saying that a newer protocol version of the track exists; empty for the newest."""
    if newest is None or newest <= board.version:
        return ""
    return (f"Superseded by v{newest}, whose protocol differs; kept as measured under its own "
            f"(leaderboards are append-only), and new entries go to v{newest}.")


def protocol_line(board: Leaderboard) -> str:
    """The protocol in one line: samples, certification, judge, seed."""
    p = board.protocol
    eps = f", epsilon {p.epsilon:g}" if p.epsilon is not None else ""
    judge = (f"; judge N={p.judge_n}, alpha={p.judge_alpha:g}, confirmation on {p.confirm_n} copies"
             + (" with the judge's bounds" if p.confirm_bounds else "")
             if board.defense.kind == "smoothing" and p.goal != "spoofing" else "")
    certification = f"certification n0={p.n0}, n={p.n}, alpha={p.alpha:g}"
    split = f"{p.split} ({SPLIT_NOTES[p.split]})" if p.split in SPLIT_NOTES else p.split
    label = f"; {SELF_CERTIFIED}" if board.defense.self_certified else ""
    return f"first {p.num_samples} {split} samples{eps}; {certification}{judge}; seed {p.seed}{label}"


def verdict(ranking: Ranking) -> str:
    """The sentence under a track's title: its leader, the tie, or why there is neither."""
    if ranking.leader:
        share = ranking.of(ranking.leader).first
        return f"Leader: {ranking.leader} (first alone in {100 * share:.0f}% of the bootstrap resamples)."
    if len(ranking.contenders) > 1:
        return (f"Tied for first: {', '.join(ranking.contenders)} (their rank intervals all reach 1; none is first "
                f"in {100 * LEADER_SHARE:.0f}% of the bootstrap resamples).")
    return f"No leader: {ranking.reason}."


def time_cell(board: Leaderboard, entry: Entry, metric: str) -> tuple[float | None, str]:
    """A time column's (ratio to the reference, text): "0.78× (24.2 s)", "1× (reference, 31 s)", "n/c (24 s)"."""
    ratio, note = relative_time(board, entry, metric)
    seconds = value_of(board, entry, metric).value
    if seconds is None:
        return None, "–"
    if note == "reference":
        return ratio, f"1× (reference, {seconds:.3g} s)"
    if ratio is None:
        return None, f"n/c ({seconds:.3g} s)"
    return ratio, f"{ratio:.2f}× ({seconds:.3g} s)"


def header(board: Leaderboard, metric: str) -> str:
    return f"{metric} (× {board.entries[0].name})" if metric in TIME_METRICS else metric


def markdown(board: Leaderboard, ranking: Ranking, sort: str | None = None, newest: int | None = None,
             title: str | None = None, exact: Shown = NOTHING) -> str:
    """The track's table in Markdown, ranked as the site ranks it, with the protocol in one line and what the
    columns mean; `title` replaces the heading (a run's table, which is no track); `exact` adds each entry's recall
    and, under the table, what the exact verifier says (`rsbench.leaderboard.exact_columns.shown`)."""
    p, columns, line = board.protocol, metric_columns(board), protocol_line(board)
    note = superseded(board, newest)
    lines = [
        title or f"### {board.track} v{board.version}",
        "",
        *([note, ""] if note else []),
        *([verdict(ranking), ""] if title is None else []),
        f"{line[:1].upper()}{line[1:]}; protocol `{board.protocol_hash[:12]}`. "
        f"95% bootstrap intervals over samples ({p.bootstrap_resamples} resamples, seed {p.bootstrap_seed}).",
        "",
        "| entry | rank | source | attacked | " + " | ".join(header(board, k) for k in columns)
        + (f" | {RECALL}" if exact.recall else "") + " |",
        "|---|---|---|---|" + "---|" * (len(columns) + bool(exact.recall)),
    ]
    for entry in sorted_entries(board, sort, ranking):
        standing = ranking.of(entry.name)
        values = " | ".join(marked(entry, k, time_cell(board, entry, k)[1] if k in TIME_METRICS
                                   else cell(value_of(board, entry, k))) for k in columns)
        recall = f" | {exact.recall[entry.name].text()}" if exact.recall else ""
        lines.append(f"| {entry.name} | {standing.interval if standing else '–'} | {source_of(entry)} | "
                     f"{entry.attacked} | {values}{recall} |")
    legend = [RANK_LEGEND, *(f"`{k}`: {p.metrics[k]}" for k in columns)]
    legend += [TIME_LEGEND] if any(k in TIME_METRICS for k in columns) else []
    legend += [SELF_REPORTED_NOTE] if any(self_reported(e) & set(columns) for e in board.entries) else []
    return "\n".join([*lines, "", *(f"{note}\n" for note in exact.notes), *(f"- {line}" for line in legend)])


def run_table(run_dir: Path, root: Path) -> str:
    """A finished run's attacks as a leaderboard table, with the leaderboard's bootstrap intervals (for `evaluate`),
    headed by the track under `root` only when the run followed that track's protocol exactly."""
    with tempfile.TemporaryDirectory() as scratch:
        path, _ = add_run(Path(scratch), run_dir, preview=True)
        board = load(path)
        ranking = rank(board, *stored_records(path.parent, board))
    return markdown(board, ranking, title=run_heading(board.protocol, root))


def run_heading(protocol: Protocol, root: Path) -> str:
    """A run's heading: the track it can join, or why it can join none (which protocol fields differ)."""
    track, hash_ = track_name(protocol), protocol.spec_hash()
    path = latest(root, track)
    if path is None:
        return f"### This run (protocol `{hash_[:12]}`; no {track} track under {root})"
    board = load(path)
    if board.protocol_hash == hash_:
        return f"### {track} v{board.version}: this run follows its protocol (`{hash_[:12]}`)"
    differences = ", ".join(protocol_differences(protocol, board.protocol))
    return f"### This run (protocol `{hash_[:12]}`), not {track} v{board.version}'s: {differences}"
