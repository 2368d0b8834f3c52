"""Summaries across tracks: one Markdown table per goal over the newest version of several tracks, for the
documentation's result pages (docs/generated.py), so that no number on them is typed.

A track's own table (`track_table.markdown`) shows one track in full; a summary sets several side by side, one row
per entry, with the cells the track tables write (`track_table.cell`, starred where rsbench did not judge the
number) and what a track's clean certificates say (clean accuracy, VRA, the FPR upper bound, with the Clopper-Pearson
intervals the defense profiles give them). Rows follow each track's ranking, and each track's verdict follows the
table, so a reader does not take a tie for a lead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rsbench import metrics
from rsbench.leaderboard.profiles import percent
from rsbench.leaderboard.ranking import Ranking, rank
from rsbench.leaderboard.track_files import (
    Entry,
    Leaderboard,
    files,
    goal_class,
    load,
    stored_records,
)
from rsbench.leaderboard.track_table import (
    RANK_LEGEND,
    SELF_REPORTED_NOTE,
    cell,
    marked,
    self_reported,
    sorted_entries,
    value_of,
    verdict,
)
from rsbench.records import SampleRecord


@dataclass(frozen=True)
class Track:
    """The newest version of a track, with its stored records (checked against their sha256) and its ranking."""

    board: Leaderboard
    clean: list[SampleRecord]
    records: dict[str, list]
    ranking: Ranking

    @property
    def name(self) -> str:
        return f"{self.board.track} v{self.board.version}"


TrackColumn = tuple[str, Callable[[Track], str]]
"""A column whose cell is the track's (repeated on each of its entries' rows): header, cell."""
EntryColumn = tuple[str, Callable[[Track, Entry], str]]
"""A column whose cell is the entry's: header, cell."""


def newest(root: Path, goal: str, keep: Callable[[Leaderboard], bool]) -> list[Track]:
    """The newest version of every `goal` track under root that `keep` accepts, by track name."""
    latest = {path.parent.name: path for path in files(root)}  # files() sorts each track's versions last
    found = []
    for name, path in sorted(latest.items()):
        if not name.startswith(f"{goal}-"):
            continue
        board = load(path)
        if keep(board):
            clean, records = stored_records(path.parent, board)
            found.append(Track(board, clean, records, rank(board, clean, records)))
    return found


def metric(name: str) -> EntryColumn:
    """An entry's stored metric with its 95% bootstrap interval, as the track's own table shows it."""
    return name, lambda track, entry: marked(entry, name, cell(value_of(track.board, entry, name)))


def epsilon(track: Track) -> str:
    return f"{track.board.defense.norm} {track.board.protocol.epsilon:g}"


def clean_accuracy(track: Track) -> str:
    return cell(percent(metrics.certified_accuracy(track.clean, 0.0)))


def vra(track: Track) -> str:
    return cell(percent(metrics.robust_accuracy(track.clean, [], track.board.protocol.epsilon)["vra"]))


def certified_broken(track: Track, entry: Entry) -> str:
    """Samples certified at epsilon that the entry broke: a sound certifier has none."""
    return str(metrics.robust_accuracy(track.clean, track.records[entry.name], track.board.protocol.epsilon)
               ["certified_broken"])


def clean_summary(track: Track) -> dict[str, Any]:
    """The goal's summary of the clean certificates alone (degradation: test_R, VRA, the FPR upper bound)."""
    board = track.board
    return goal_class(board.protocol.goal).summarize(board.defense, board.protocol.run_config([]), track.clean, [])


def hardware(_: Track, entry: Entry) -> str:
    """Where the entry ran, as it recorded it."""
    return f"{entry.environment.hardware} ({entry.environment.device})"


def table(tracks: Sequence[Track], per_track: Sequence[TrackColumn], per_entry: Sequence[EntryColumn],
          notes: Sequence[str] = ()) -> str:
    """The summary: a row per entry of each track, in the track's ranking, then the legend (each metric's
    definitions as the tracks give them, `notes`, the star's meaning) and every track's verdict."""
    headers = ["track", *(h for h, _ in per_track), "entry", "rank", "attacked", *(h for h, _ in per_entry)]
    rows = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    starred = False
    for track in tracks:
        shared = [show(track) for _, show in per_track]
        for entry in sorted_entries(track.board, None, track.ranking):
            standing = track.ranking.of(entry.name)
            cells = [show(track, entry) for _, show in per_entry]
            rows.append("| " + " | ".join([track.name, *shared, entry.name, standing.interval if standing else "–",
                                           str(entry.attacked), *cells]) + " |")
            starred |= bool(self_reported(entry) & {h for h, _ in per_entry})
    definitions: dict[str, list[str]] = {}
    for track in tracks:
        for name, _ in per_entry:
            text = track.board.protocol.metrics.get(name)
            if text and text not in definitions.setdefault(name, []):
                definitions[name].append(text)
    legend = [RANK_LEGEND, *(f"`{name}`: {' | '.join(texts)}" for name, texts in definitions.items()), *notes]
    legend += [SELF_REPORTED_NOTE] if starred else []
    verdicts = [f"- {track.name}: {verdict(track.ranking)}" for track in tracks]
    return "\n".join([*rows, "", *(f"- {line}" for line in legend), "", "Each track's verdict:", "", *verdicts])


INTERVALS = "intervals: 95% bootstrap over samples for the entries' metrics, as on the tracks"
CERTIFICATES = ("clean, VRA and the FPR upper bound: from the track's stored clean certificates, % of the samples "
                "(the FPR upper bound: of test_R, those not certified at 2 epsilon) with a 95% Clopper-Pearson "
                "interval")


def smoothing_evasion(tracks: Sequence[Track]) -> str:
    """Evasion of randomized smoothing: how often, how close and how fast each attack finds a confirmed example."""
    return table(tracks, [], [metric(name) for name in ("success", "best", "r50", "pct_cohen", "time_s",
                                                          "total_time_s", "confirmed")], [INTERVALS])


def certified_evasion(tracks: Sequence[Track]) -> str:
    """Evasion of a deterministic certifier: its clean accuracy and VRA beside the robust accuracy each attack
    leaves, and how many certified samples each broke."""
    return table(tracks, [("epsilon", epsilon), ("clean", clean_accuracy), ("VRA", vra)],
                 [metric("robust_accuracy"), metric("success"), ("certified and broken", certified_broken)],
                 [INTERVALS, CERTIFICATES, ("certified and broken: samples certified at epsilon that the entry "
                                            "broke (a sound certifier has none)")])


def degradation(tracks: Sequence[Track]) -> str:
    """Degradation: the FPR's upper bound from the certificates beside each attack's lower bound."""
    def summary(key: str) -> Callable[[Track], str]:
        return lambda track: cell(percent(clean_summary(track)[key]))

    return table(tracks, [("epsilon", epsilon), ("test_R", lambda track: str(clean_summary(track)["test_R"])),
                          ("VRA", summary("vra")), ("FPR upper bound", summary("fpr_upper"))],
                 [metric("fpr_lower"), metric("best"), metric("utility_reduction")],
                 [INTERVALS, CERTIFICATES, "test_R: samples correct and certified at epsilon"])


def spoofing(tracks: Sequence[Track]) -> str:
    """Certificate spoofing: how often a wrong label is certified, how large and how similar the spoofed image."""
    return table(tracks, [], [metric(name) for name in ("success", "best", "spoof_rate", "spoofed_mean", "ssim_mean",
                                                          "l2_mean", "robust_error", "attack_error")],
                 [INTERVALS, ("–: undefined (robust_error and attack_error on smoothing, which has no epsilon; "
                              "spoofed_mean without a success)")])


def costs(tracks: Sequence[Track]) -> str:
    """Each attack's median seconds per attacked sample, with the hardware its entry recorded."""
    return table(tracks, [], [metric("total_time_s"), ("hardware", hardware)], [INTERVALS])
