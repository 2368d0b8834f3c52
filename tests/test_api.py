"""`rsbench.evaluate` on a defense built in Python: the engine's records, resume, and no way onto a leaderboard."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import rsbench
from rsbench import models
from rsbench.cli import cli
from rsbench.defenses.smoothing import Smoothing
from rsbench.errors import RsbenchError
from rsbench.leaderboard import admission
from rsbench.specs import AttackSpec

SPGD = AttackSpec(name="spgd-tiny", implementation="rsbench.attacks.degradation:DegradationSPGD", goal="degradation",
                  params={"iterations": 5, "num_noise": 20})
PROTOCOL = {"num_samples": 4, "epsilon": 0.25, "n0": 50, "n": 500, "alpha": 0.01, "batch_size": 500, "judge_n": 100,
            "confirm_n": 1000, "progress": False}


def lines(out: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if "time" not in k}
            for line in (out / "samples.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def python_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Smoothing]:
    """A degradation run of smoothing-digits-0.50's base classifier, smoothed in Python."""
    base = rsbench.load_defense("smoothing-digits-0.50").base_classifier
    defense = Smoothing(base, 10, 0.5)
    out = tmp_path_factory.mktemp("python") / "run"
    rsbench.evaluate(defense, SPGD, data="digits", out=out, **PROTOCOL)
    return out, defense


def test_a_python_run_records_the_weights_and_the_run_s_settings(python_run: tuple[Path, Smoothing]) -> None:
    out, defense = python_run
    result = json.loads((out / "result.json").read_text())
    weights = result["defense"]["weights"]
    assert (weights["source"], weights["filename"]) == ("memory", "rsbench.defenses.smoothing.Smoothing")
    assert weights["sha256"] == models.state_dict_sha256(defense.base_classifier)
    assert "not admissible" in result["defense"]["description"] and result["defense"]["certify"]["n"] == 100_000
    assert result["config"]["n"] == 500 and result["weights_sha256"] == result["defense"]["weights"]["sha256"]
    assert result["metrics"]["test_R"] > 0


def test_a_python_run_resumes_and_refuses_changed_weights(python_run: tuple[Path, Smoothing]) -> None:
    out, defense = python_run
    before = (out / "samples.jsonl").read_text()
    rsbench.evaluate(defense, SPGD, data="digits", out=out, **PROTOCOL)
    assert (out / "samples.jsonl").read_text() == before
    changed = Smoothing(torch.nn.Sequential(defense.base_classifier, torch.nn.Identity()), 10, 0.5)
    with pytest.raises(RsbenchError, match="different config"):
        rsbench.evaluate(changed, SPGD, data="digits", out=out, **PROTOCOL)


def test_leaderboard_add_refuses_a_defense_built_in_python(python_run: tuple[Path, Smoothing], tmp_path: Path) -> None:
    out, _ = python_run
    with pytest.raises(RsbenchError, match="built in Python"):
        admission.add_run(tmp_path / "leaderboards", out)
    done = CliRunner().invoke(cli, ["leaderboard", "add", str(out), "--root", str(tmp_path / "leaderboards")])
    assert done.exit_code == 2 and len(done.output.strip().splitlines()) == 1 and "register it" in done.output
    assert not (tmp_path / "leaderboards").exists()


@pytest.mark.parametrize(("options", "says"), [
    ({"workers": 2}, "use workers=1"),
    ({"data": (torch.full((2, 1, 8, 8), 2.0), torch.zeros(2, dtype=torch.long))}, "lie in [0, 1]"),
    ({"data": None}, "needs data="),
    ({"data": "digits", "n_samples": 3}, "unknown setting n_samples"),
])
def test_what_cannot_work_is_refused_in_one_line(options: dict, says: str) -> None:
    defense = Smoothing(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)), 10, 0.5)
    with pytest.raises(RsbenchError) as error:
        rsbench.evaluate(defense, SPGD, **{"data": "digits", **options})
    assert says in str(error.value) and "\n" not in str(error.value)
