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


def test_the_training_card_s_results_read_back_as_written(tmp_path: Path) -> None:
    """`rsbench train`'s card (written from a certify run of the shipped gloro-digits-0.25 weights) read back gives
    the run's numbers at the card's precision; a card of weights rsbench did not train is refused."""
    import torch

    from rsbench import hub
    from rsbench.errors import RsbenchError
    from rsbench.model_card import read_results
    from rsbench.records import RunResult
    from rsbench.training import write_model_card

    spec = registry.get_defense("gloro-digits-0.25")
    card = write_model_card(spec, hub.PACKAGE_WEIGHTS / spec.weights.filename, tmp_path, torch.device("cpu"),
                            samples=20, n=100, split="train")
    result = RunResult.model_validate_json((tmp_path / "gloro-digits-0.25-card-run" / "result.json").read_text())
    read = read_results(card.read_text())
    assert (read.certification, read.samples) == ("deterministic", result.num_samples) == ("deterministic", 20)
    assert (read.clean_accuracy, read.abstain_rate, read.average_certified_radius) == tuple(
        round(v, 3) for v in (result.clean_accuracy, result.abstain_rate, result.average_certified_radius))
    assert [(p.radius, p.accuracy, p.ci_low, p.ci_high) for p in read.certified_accuracy] == [
        tuple(round(v, 3) for v in (p.radius, p.accuracy, p.ci_low, p.ci_high)) for p in result.certified_accuracy]
    assert len(read.certified_accuracy) > 1 and read.at(0.0) == read.certified_accuracy[0]
    with pytest.raises(RsbenchError, match="no '## Results"):
        read_results((hub.PACKAGE_WEIGHTS / "kw-mnist-0.1.md").read_text())
