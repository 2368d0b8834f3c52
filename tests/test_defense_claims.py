"""`rsbench submission measure` on a defense's folder prints the claims block that `validate` then accepts: for the
shipped aol-digits example, exactly the claims it carries."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from rsbench.cli import cli
from rsbench.submissions import sandbox

EXAMPLE = Path(__file__).resolve().parents[1] / "submissions" / "defenses" / "aol-digits"


@pytest.fixture
def sandboxed() -> None:
    reason = sandbox.unavailable()
    if reason:
        pytest.fail(reason) if os.environ.get("CI") else pytest.skip(reason)


def test_measure_prints_the_claims_the_example_carries(sandboxed: None, tmp_path: Path) -> None:
    folder = tmp_path / "aol-digits"
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
    assert set(yaml.safe_load(done.output)["claims"]) == {f"{goal}-aol-digits" for goal in
                                                           ("evasion", "degradation", "spoofing")}
    refused = CliRunner().invoke(cli, ["submission", "measure", str(EXAMPLE), "--track", "evasion-aol-digits"])
    assert refused.exit_code == 2 and "leave out --track" in refused.output
