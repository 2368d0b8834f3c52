"""A smoothing track's entries under the certification-aware-attack paper's rule, from the same stored records."""

from __future__ import annotations

import re
import statistics
from pathlib import Path

from rsbench.leaderboard import paper_rule, track_files
from rsbench.leaderboard.exact_columns import shown

ROOT = Path(__file__).resolve().parents[1] / "leaderboards"


def test_every_entry_counts_what_the_judge_accepted_confirmed_or_not() -> None:
    path = track_files.latest(ROOT, "evasion-smoothing-digits-0.50")
    board = track_files.load(path)
    clean, entries = track_files.stored_records(path.parent, board)
    name = next(iter(entries))
    rows = entries[name]
    # every sample: a candidate the judge accepted, none confirmed, its smallest accepted radius recorded
    entries = {**entries, name: [r.model_copy(update={"candidates": 1, "rejected": 1, "success": False,
                                                       "best_radius": None, "judged_best_radius": 0.25 + r.index})
                                 for r in rows]}
    line = paper_rule.note(board, (clean, entries))
    r50 = statistics.median(0.25 + r.index for r in rows)
    assert re.search(rf"{name} 100% \[\d+, 100\], r50 {r50:.3g}[;.]", line)
    # nothing accepted: 0% under the paper's rule, whatever the strict one says
    entries[name] = [r.model_copy(update={"candidates": 0, "judged_best_radius": None}) for r in rows]
    assert f"{name} 0% [0, " in paper_rule.note(board, (clean, entries))


def test_the_shipped_smoothing_tables_carry_the_rule_and_no_other_track_does() -> None:
    for path in track_files.files(ROOT):
        board = track_files.load(path)
        records = track_files.stored_records(path.parent, board)
        notes = " ".join(shown(path, board, records).notes) if board.defense.dataset.name == "digits" else ""
        smoothing = board.protocol.goal == "evasion" and board.defense.kind == "smoothing" and board.entries
        if board.defense.dataset.name == "digits":
            assert ("paper's rule" in notes) == bool(smoothing), board.track
        if smoothing:
            line = paper_rule.note(board, records)
            for name, rows in records[1].items():
                accepted = round(100 * sum(r.candidates > 0 for r in rows) / len(rows))
                assert f"{name} {accepted}% [" in line
