"""`rsbench models card`: a Hub model card whose front matter holds the certified accuracies and the rsbench spec."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from rsbench import registry
from rsbench.cli import cli

AOL = str(Path(__file__).resolve().parents[1] / "submissions" / "defenses" / "aol-digits")


def test_the_card_front_matter_holds_the_numbers_the_run_gives_and_the_spec(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    monkeypatch.chdir(tmp_path)
    done = runner.invoke(cli, ["models", "card", AOL, "--num-samples", "20"])
    assert done.exit_code == 0, done.output
    text = (tmp_path / "model-cards" / "aol-digits" / "README.md").read_text()
    run = next((tmp_path / "runs" / "aol-digits").glob("certify-seed0-*"))
    _, header, body = text.split("---\n", 2)
    card = yaml.safe_load(header)
    spec = registry.get_defense(AOL)
    assert card["library_name"] == "rsbench" and card["datasets"] == ["digits"]
    assert card["rsbench"]["spec_hash"] == spec.spec_hash() and card["rsbench"]["weights_sha256"] == spec.weights.sha256
    metrics = {m["name"]: m for m in card["model-index"][0]["results"][0]["metrics"]}
    assert metrics["clean accuracy"]["value"] == 95.0 and metrics["clean accuracy"]["args"]["samples"] == 20
    at = metrics["certified accuracy (l2 radius 0.25)"]
    assert (at["value"], at["args"]["ci_low"], at["args"]["ci_high"]) == (85.0, 62.11, 96.79)
    assert "| 0.25 | 85.0% | [62.1, 96.8] |" in body
    again = runner.invoke(cli, ["models", "card", "gloro-digits-0.25", "--run", str(run)])
    assert again.exit_code == 2 and "is a run of another spec of aol-digits" in again.output
