"""`rsbench submission measure` on a defense's folder prints the claims block that `validate` then accepts: for the
shipped aol-digits-graph example, exactly the claims it carries."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from rsbench.cli import cli
from rsbench.submissions import sandbox

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
    assert len(reported) == 2 and reported[1] == reported[0] + "; dry run, nothing added"
    assert lines.index(reported[0]) < lines.index(reported[1])  # printed once it ended, then in the summary
    trials = list((tmp_path / "runs").glob("verify-aol-digits-graph-*"))
    assert len(trials) == 1
    seeds = {p.relative_to(trials[0]): p.read_text() for p in trials[0].rglob("*.seed")}
    assert len(seeds) >= 5  # pgd-l2, three degradation attacks, shadow-1ch
    runs = {p.relative_to(trials[0]): p.read_text() for p in trials[0].rglob("samples.jsonl")}
    interrupted = next(p for p in trials[0].rglob("samples.jsonl") if "degradation-pgd-" in str(p))
    interrupted.write_text("")  # as if Ctrl-C had stopped that attack before its record
    again = CliRunner().invoke(cli, command)
    assert again.exit_code == 0, again.output
    assert {p.relative_to(trials[0]): p.read_text() for p in trials[0].rglob("*.seed")} == seeds

    def without_times(text: str) -> list[dict]:
        return [{k: v for k, v in json.loads(line).items() if "time" not in k} for line in text.splitlines()]

    resumed = {p.relative_to(trials[0]): p.read_text() for p in trials[0].rglob("samples.jsonl")}
    assert resumed.keys() == runs.keys()
    assert all(without_times(resumed[k]) == without_times(runs[k]) for k in runs)
    assert again.output.splitlines()[-3:] == first.output.splitlines()[-3:]  # the same headlines per track
