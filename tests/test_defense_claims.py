"""`rsbench submission measure` on a defense's folder prints the claims block that `validate` then accepts: for the
shipped aol-digits-graph example, exactly the claims it carries. A trial verify tells its estimate per goal
first, prints each attack and track as it ends, keeps them, and resumes where it was stopped."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from rsbench.cli import cli
from rsbench.submissions import attack_submissions, defense_tracks, sandbox

EXAMPLE = Path(__file__).resolve().parents[1] / "submissions" / "defenses" / "aol-digits-graph"


@pytest.fixture
def sandboxed() -> None:
    reason = sandbox.unavailable()
    if reason:
        pytest.fail(reason) if os.environ.get("CI") else pytest.skip(reason)


def test_measure_prints_the_claims_the_example_carries(sandboxed: None, tmp_path: Path) -> None:
    folder = tmp_path / "aol-digits-graph"
    shutil.copytree(EXAMPLE, folder)
    data = yaml.safe_load((folder / "submission.yaml").read_text())
    carried = data.pop("claims")
    (folder / "submission.yaml").write_text(yaml.safe_dump(data))  # a folder whose author has measured nothing yet
    done = CliRunner().invoke(cli, ["submission", "measure", str(folder)])
    assert done.exit_code == 0, done.output
    assert yaml.safe_load(done.output)["claims"] == carried
    assert "clean_accuracy: 95.0  # 95% [75.1, 99.9]" in done.output and "0.25: [62.1, 96.8]" in done.output


def test_measure_of_a_few_samples_says_it_is_not_the_protocol_and_takes_no_track(sandboxed: None) -> None:
    done = CliRunner().invoke(cli, ["submission", "measure", str(EXAMPLE), "--samples", "2"])
    assert done.exit_code == 0, done.output
    assert "NOT the tracks' protocol: their first 2 of 20 samples" in done.output
    goals, total = estimated([line.removeprefix("# ") for line in done.output.splitlines()])  # told first
    assert set(goals) == {"evasion", "degradation", "spoofing"} and abs(total - sum(goals.values())) < 1e-6
    assert set(yaml.safe_load(done.output)["claims"]) == {f"{goal}-aol-digits-graph" for goal in
                                                           ("evasion", "degradation", "spoofing")}
    refused = CliRunner().invoke(cli, ["submission", "measure", str(EXAMPLE), "--track", "evasion-aol-digits-graph"])
    assert refused.exit_code == 2 and "leave out --track" in refused.output


def test_a_trial_verify_reports_each_attack_as_it_ends_and_resumes_on_the_seeds_it_drew(
        sandboxed: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the trial's runs/ lies here
    command = ["submission", "verify", str(EXAMPLE), "--dry-run", "--samples", "1", "--root", str(tmp_path / "lb")]
    first = CliRunner().invoke(cli, command)
    assert first.exit_code == 0, first.output
    lines = first.output.splitlines()
    reported = [line for line in lines if line.startswith("evasion-aol-digits-graph: pgd-l2 success ")]
    assert len(reported) == 3 and reported[1] == reported[2] == reported[0] + "; dry run, nothing added"
    # printed once the attack ended, once the track ended (before the next track's), then in the summary
    assert lines.index(reported[0]) < lines.index(reported[1]) < lines.index("degradation-aol-digits-graph: "
                                                                              "degradation-pgd fpr_lower 100")
    trials = list((tmp_path / "runs").glob("verify-aol-digits-graph-*"))
    assert len(trials) == 1
    seeds = {p.relative_to(trials[0]): p.read_text() for p in trials[0].rglob("*.seed")}
    assert len(seeds) >= 5  # pgd-l2, three degradation attacks, shadow-1ch
    runs = {p.relative_to(trials[0]): p.read_text() for p in trials[0].rglob("samples.jsonl")}
    interrupted = next(p for p in trials[0].rglob("samples.jsonl") if "degradation-pgd-" in str(p))
    interrupted.write_text("")  # as if Ctrl-C had stopped that attack before its record (and its judging)
    (interrupted.parent / "headline.txt").unlink()
    again = CliRunner().invoke(cli, command)
    assert again.exit_code == 0, again.output
    assert {p.relative_to(trials[0]): p.read_text() for p in trials[0].rglob("*.seed")} == seeds

    def without_times(text: str) -> list[dict]:
        return [{k: v for k, v in json.loads(line).items() if "time" not in k} for line in text.splitlines()]

    resumed = {p.relative_to(trials[0]): p.read_text() for p in trials[0].rglob("samples.jsonl")}
    assert resumed.keys() == runs.keys()
    assert all(without_times(resumed[k]) == without_times(runs[k]) for k in runs)
    assert again.output.splitlines()[-3:] == first.output.splitlines()[-3:]  # the same headlines per track


def estimated(lines: list[str]) -> tuple[dict[str, float], float]:
    """The seconds of each goal's estimate line, and of the total line."""
    goals = {m[1]: float(m[2]) for m in (re.match(r"estimate (\w+): first sample .* about ([0-9.]+) s$", line)
                                         for line in lines) if m}
    total = [float(m[1]) for m in (re.match(r"estimate in all: about ([0-9.]+) s ", line) for line in lines) if m]
    assert len(total) == 1
    return goals, total[0]


def test_a_trial_stopped_after_its_first_track_keeps_it_and_skips_it_when_run_again(
        sandboxed: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the trial's runs/ lies here
    monkeypatch.setattr(defense_tracks, "SUITE", {"evasion": {"l2": ("pgd-l2",)},
                                                  "degradation": {"l2": ("degradation-pgd",)},
                                                  "spoofing": {"l2": ("shadow-1ch",)}})
    real, judged = defense_tracks.judged_run, []

    def stopped_in_degradation(board, *args, **kwargs):  # as if Ctrl-C came once the first track had ended
        judged.append(board.track)
        if board.protocol.goal == "degradation":
            raise KeyboardInterrupt
        return real(board, *args, **kwargs)

    monkeypatch.setattr(defense_tracks, "judged_run", stopped_in_degradation)
    told: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        attack_submissions.verify(EXAMPLE, tmp_path / "lb", samples=2, dry_run=True, report=told.append)
    goals, total = estimated(told)
    assert set(goals) == {"evasion", "degradation", "spoofing"} and abs(total - sum(goals.values())) < 1e-6
    assert [line.split(":")[0] for line in told[:4]] == ["estimate evasion", "estimate degradation",
                                                          "estimate spoofing", "estimate in all"]  # before any attack
    evasion = next(line for line in told if line.startswith("evasion-aol-digits-graph: pgd-l2 ") and "dry run" in line)
    (trial,) = (tmp_path / "runs").glob("verify-aol-digits-graph-*")
    (records,) = (trial / "evasion-aol-digits-graph").glob("pgd-l2-*/samples.jsonl")
    kept = records.read_text()

    monkeypatch.setattr(defense_tracks, "judged_run", lambda board, *args, **kwargs: (judged.append(board.track),
                                                                                      real(board, *args, **kwargs))[1])
    judged.clear()
    again: list[str] = []
    lines = attack_submissions.verify(EXAMPLE, tmp_path / "lb", samples=2, dry_run=True, report=again.append)
    assert judged == ["degradation-aol-digits-graph", "spoofing-aol-digits-graph"]  # the first track not again
    assert estimated(again)[0]["evasion"] == 0 and evasion in lines
    assert records.read_text() == kept  # its records neither recomputed nor repeated
    assert len({json.loads(line)["index"] for line in kept.splitlines()}) == len(kept.splitlines())
