"""Exact columns: recall and tightness counted from verdicts, the contradictions they refuse, and the l2 gap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from rsbench.cli import cli
from rsbench.errors import RsbenchError
from rsbench.leaderboard import profiles, site, track_files, track_table
from rsbench.leaderboard.exact_columns import NOTHING, Share, derive, gap, shown
from rsbench.leaderboard.ranking import rank
from rsbench.records import AttackRecord

VERDICTS = {0: "adversarial", 1: "robust", 2: "adversarial", 3: "unknown", 4: "robust", 5: "unknown", 6: "robust",
            7: "adversarial"}
"""Eight samples; 7 is not attacked (misclassified), so it counts nowhere."""


def test_recall_and_tightness_are_the_hand_counts() -> None:
    columns = derive("t", [0, 1, 2, 3, 4, 5, 6], {1, 4}, VERDICTS, {"a": {0, 2}, "b": {0, 3}, "c": set()})
    # exists: 0 and 2 (the MILP), 3 (b's success on an undecided sample); robust: 1, 4, 6; unknown: 5
    assert (columns.attacked, columns.exists, columns.robust, columns.unknown) == (7, 3, 3, 1)
    assert columns.recall == {"a": Share(2, 3), "b": Share(2, 3), "c": Share(0, 3)}
    assert columns.tightness == Share(2, 3)
    assert columns.recall["a"].text() == "2/3 = 67% [9.4, 99]"
    assert Share(0, 0).text() == "n/a" and Share(3, 3).text() == "3/3 = 100% [29, 100]"


@pytest.mark.parametrize(("certified", "successes", "message"), [
    ({1, 2}, {}, r"t: samples \[2\] are certified but not exactly robust"),
    ({1, 5}, {}, r"t: samples \[5\] are certified but not exactly robust"),
    (set(), {"a": {0, 4, 6}}, r"t: a succeeded on samples \[4, 6\], which the MILP proved robust"),
])
def test_contradictions_stop_in_one_line_naming_the_samples(certified: set[int], successes: dict[str, set[int]],
                                                            message: str) -> None:
    with pytest.raises(RsbenchError, match=message):
        derive("t", [0, 1, 2, 3, 4, 5, 6], certified, VERDICTS, successes)


def test_an_attacked_sample_without_a_verdict_is_refused() -> None:
    with pytest.raises(RsbenchError, match=r"no verdict on attacked samples \[8\]"):
        derive("t", [0, 8], set(), VERDICTS, {})


def record(index: int, best: float | None, certificate: float) -> AttackRecord:
    return AttackRecord(index=index, label=0, attack="a", success=best is not None, first_radius=best,
                        first_time_s=None, best_radius=best, best_time_s=None, total_time_s=1.0,
                        cohen_radius=certificate, iterations=1, judge_calls=1, candidates=1, rejected=0, judge_n=None,
                        judge_alpha=None, confirm_n=None)


def test_the_l2_gap_takes_the_best_entry_per_sample_where_a_certificate_and_an_example_exist() -> None:
    entries = {"a": [record(0, 1.0, 0.5), record(1, None, 0.5), record(2, 0.9, 0.0), record(3, 2.0, 1.0)],
               "b": [record(0, 0.7, 0.5), record(1, None, 0.5), record(2, 0.8, 0.0), record(3, None, 1.0)]}
    found = gap(entries)
    assert found.gaps == pytest.approx([0.2, 1.0])  # sample 1: no example; sample 2: no certificate
    assert found.text() == "on the 2 samples with both, median 0.6 (quartiles 0.4, 0.8; 0.2 to 1)"


REPO = Path(__file__).resolve().parents[1]


def committed(track: str) -> tuple[Path, track_files.Leaderboard, tuple[list, dict[str, list]]]:
    path = track_files.find(REPO / "leaderboards", track)
    board = track_files.load(path)
    return path, board, track_files.stored_records(path.parent, board)


def test_the_committed_kw_digits_track_shows_its_recall_tightness_and_unknowns_on_table_page_and_profile() -> None:
    path, board, records = committed("evasion-kw-digits-0.05")
    exact = shown(path, board, records)
    assert exact.recall == {"pgd-linf": Share(3, 3), "square-linf": Share(3, 3)} and exact.tightness == Share(15, 16)
    ranking = rank(board, *records)
    table = track_table.markdown(board, ranking, exact=exact)
    assert table.splitlines()[6].endswith("| recall (exact) |")
    assert table.splitlines()[8].endswith("| 3/3 = 100% [29, 100] |")
    assert ("an adversarial example exists on 3, none on 16, 0 unknown (undecided within the time limit); certificate "
            "tightness (certified / exactly robust) 15/16 = 94% [70, 100]") in table
    page = site.page(board, ranking, {}, [], exact=exact)
    assert "<th>recall (exact)</th>" in page and "3/3 <small>100% [29, 100]</small>" in page
    track = profiles.Track(path, board, "evasion-kw-digits-0.05-v1")
    item = profiles.profile("kw-digits-0.05", [track])
    assert item.numbers["tightness"][0].value == pytest.approx(93.75)
    assert item.numbers["recall"][0].value == 100 and item.numbers["recall"][2] == "pgd-linf"
    assert "15/16 = 94% [70, 100]" in profiles.page(item, track_table.cell, "", "")


def test_an_l2_track_shows_the_gap_and_why_no_exact_verdict() -> None:
    path, board, records = committed("evasion-gloro-digits-0.50")
    exact = shown(path, board, records)
    assert not exact.recall and exact.tightness is None
    smallest = {}  # each sample's smallest confirmed example over the entries, counted here by hand
    for rows in records[1].values():
        for r in rows:
            if r.success:
                smallest[r.index] = min(smallest.get(r.index, r.best_radius), r.best_radius)
    certificate = {r.index: r.cohen_radius for rows in records[1].values() for r in rows}
    gaps = sorted(smallest[i] - certificate[i] for i in smallest if certificate[i] > 0)
    assert len(exact.notes) == 1 and exact.notes[0].startswith(
        "No exact verdicts: an l2 ball is no box, so its MILP would be quadratic, which rsbench exact does not solve. "
        "Instead, the gap between the best entry's distance and the certified radius per sample, on the "
        f"{len(gaps)} samples with both, median {float(np.median(gaps)):.3g} (quartiles ")
    assert exact.notes[0].endswith(f"; {gaps[0]:.3g} to {gaps[-1]:.3g}).")
    assert "randomized" in shown(*committed("evasion-smoothing-digits-0.50")).notes[0]
    assert shown(*committed("degradation-kw-digits-0.05")) == NOTHING


def test_leaderboard_show_prints_the_recall_column_and_the_exact_line() -> None:
    result = CliRunner().invoke(cli, ["leaderboard", "show", "evasion-kw-mnist-0.1", "--root", str(REPO / "leaderboards")])
    assert result.exit_code == 0, result.output
    assert "| recall (exact) |" in result.output and "| 1/1 = 100% [2.5, 100] |" in result.output
    assert "none on 18, 0 unknown" in result.output and "18/18 = 100% [81, 100]" in result.output
