"""Rankings with their uncertainty: rank intervals from the metric intervals' own resamples, a leader only when
one entry is first alone in 95% of them, sign tests for the paired table, times compared on one machine only."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scipy.stats import binomtest

from rsbench.cli import cli
from rsbench.leaderboard import admission, ranking, track_files, track_table
from rsbench.stats import resample_draws


def track(root: Path, defense: str) -> tuple[track_files.Leaderboard, list, dict[str, list]]:
    path = track_files.latest(root, f"evasion-{defense}")
    board = track_files.load(path)
    return board, *track_files.stored_records(path.parent, board)


def test_two_entries_best_on_half_the_samples_each_are_tied(ranked_tracks: Path) -> None:
    board, clean, records = track(ranked_tracks, "smoothing-digits-1.00")
    ranks = ranking.rank(board, clean, records)
    intervals = {s.name: (s.rank, s.interval) for s in ranks.standings}
    assert intervals == {"caa": (1, "1–2"), "deepfool": (1, "1–2"), "pgd": (3, "3")}
    assert ranks.leader is None and ranks.contenders == ["caa", "deepfool"]
    assert ranks.headline == "tied: caa, deepfool"
    assert 0.2 < ranks.of("caa").first < 0.8 and ranks.of("pgd").first == 0


def test_an_entry_best_on_18_of_20_samples_leads(ranked_tracks: Path) -> None:
    board, clean, records = track(ranked_tracks, "smoothing-digits-0.25")
    ranks = ranking.rank(board, clean, records)
    assert ranks.leader == "caa" == ranks.headline and ranks.of("caa").first >= ranking.LEADER_SHARE
    assert [(s.name, s.interval) for s in ranks.standings] == [("caa", "1"), ("deepfool", "2")]
    assert track_table.verdict(ranks).startswith("Leader: caa (first alone in ")


@pytest.mark.parametrize("defense", ["smoothing-digits-1.00", "smoothing-digits-0.25"])
def test_ranks_come_from_the_resamples_behind_the_stored_intervals(ranked_tracks: Path, defense: str) -> None:
    board, clean, records = track(ranked_tracks, defense)
    scores = ranking.score_matrix(board, clean, records)
    resampled = ranking.best_shares(scores, resample_draws(len(clean), board.protocol.bootstrap_seed,
                                                           board.protocol.bootstrap_resamples))
    for k, name in enumerate(records):
        low, high = np.percentile(resampled[:, k], [2.5, 97.5])
        stored = board.comparison.best[name]
        assert (min(low, stored.value), max(high, stored.value)) == pytest.approx((stored.ci_low, stored.ci_high))
    point = ranking.best_shares(scores, np.arange(len(clean))[None, :])[0]
    assert point.tolist() == [board.comparison.best[name].value for name in records]


def test_no_leader_on_a_single_entry_or_where_no_entry_is_ever_best(tmp_path: Path,
                                                                      make_evasion_run: Callable[..., Path]) -> None:
    root = tmp_path / "leaderboards"
    admission.add_run(root, make_evasion_run(tmp_path / "one", {"caa": [0.5, 0.6, 0.7]}))
    single = ranking.rank(*track(root, "smoothing-digits-0.50"))
    assert single.leader is None and single.headline == "– (a single entry)"
    admission.add_run(root, make_evasion_run(tmp_path / "none", {"caa": [None] * 3, "pgd": [None] * 3},
                                             defense="smoothing-digits-0.25"))
    failed = ranking.rank(*track(root, "smoothing-digits-0.25"))
    assert failed.leader is None and failed.contenders == [] and "no entry is best" in failed.headline


def test_sign_tests_match_scipy_on_the_wins_and_losses(ranked_tracks: Path) -> None:
    board, clean, records = track(ranked_tracks, "smoothing-digits-0.25")
    p = ranking.sign_tests(board, clean, records)
    assert p["caa"]["deepfool"] == pytest.approx(binomtest(18, 20, 0.5).pvalue) == p["deepfool"]["caa"]
    board, clean, records = track(ranked_tracks, "smoothing-digits-1.00")
    p = ranking.sign_tests(board, clean, records)
    assert p["caa"]["deepfool"] == pytest.approx(1.0) and p["pgd"]["caa"] == pytest.approx(binomtest(0, 20).pvalue)


def test_times_are_relative_to_the_first_entry_on_the_same_hardware_only(
        ranked_tracks: Path, tmp_path: Path, make_evasion_run: Callable[..., Path]) -> None:
    root = tmp_path / "leaderboards"
    shutil.copytree(ranked_tracks, root)
    run = make_evasion_run(tmp_path / "elsewhere", {"pgd": [0.9] * 18 + [None] * 2}, defense="smoothing-digits-0.25")
    result = json.loads((run / "result.json").read_text())
    result["environment"]["hardware"] = "Some Other CPU x64"
    (run / "result.json").write_text(json.dumps(result))
    admission.add_run(root, run)
    board, *_ = track(root, "smoothing-digits-0.25")
    caa, deepfool, pgd = board.entries
    assert ranking.relative_time(board, caa, "total_time_s") == (1.0, "reference")
    assert ranking.relative_time(board, deepfool, "total_time_s") == (1.0, "")
    ratio, note = ranking.relative_time(board, pgd, "total_time_s")
    assert ratio is None and note.startswith("not comparable: Some Other CPU x64")
    assert track_table.time_cell(board, pgd, "time_s") == (None, "n/c (0.1 s)")


def test_leaderboard_show_ranks_as_the_site_does(ranked_tracks: Path) -> None:
    shown = CliRunner().invoke(cli, ["leaderboard", "show", "evasion-smoothing-digits-1.00",
                                     "--root", str(ranked_tracks)])
    assert shown.exit_code == 0, shown.output
    rows = [line.split(" | ")[:2] for line in shown.output.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[1:] == [["| caa", "1–2"], ["| deepfool", "1–2"], ["| pgd", "3"]]
    assert "Tied for first: caa, deepfool" in shown.output and "time_s (× caa)" in shown.output
