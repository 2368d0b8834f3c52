"""`rsbench sweep`: the matrix of registry patterns, one evaluate run per defense and goal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from rsbench import engine, requirements, sweep
from rsbench.cli import cli
from rsbench.errors import RsbenchError

MATRIX = [
    ("gloro-digits-0.25", "degradation", ["degradation-eps-pgd", "degradation-pgd"]),
    ("gloro-digits-0.25", "evasion", ["pgd-l2"]),
    ("gloro-digits-0.50", "degradation", ["degradation-eps-pgd", "degradation-pgd"]),
    ("gloro-digits-0.50", "evasion", ["pgd-l2"]),
]
"""'gloro-digits-*' against '*pgd*': the smoothing-only pgd and the l_inf attacks do not fit an l2 GloRo net."""


def test_the_matrix_groups_fitting_attacks_by_defense_and_goal() -> None:
    runs = sweep.plan("gloro-digits-*", "*pgd*")
    assert [(r.defense.name, r.goal, [a.name for a in r.attacks]) for r in runs] == MATRIX


def test_patterns_matching_nothing_or_nothing_that_fits_are_refused() -> None:
    with pytest.raises(RsbenchError, match=r"no defense matches 'nothing-\*'"):
        sweep.plan("nothing-*", "*")
    with pytest.raises(RsbenchError, match=r"no attack matching 'caa' fits a defense matching 'kw-\*'"):
        sweep.plan("kw-*", "caa")


def test_a_defense_lacking_files_stops_the_sweep_before_its_first_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(requirements, "missing_requirements",
                        lambda spec: ["its weights"] if spec.name == "gloro-digits-0.50" else [])
    result = CliRunner().invoke(cli, ["sweep", "--defense", "gloro-digits-*", "--attack", "*pgd*",
                                      "--root", str(tmp_path)])
    assert result.exit_code == 2 and "gloro-digits-0.50 (its weights)" in result.output
    assert not any(tmp_path.iterdir())


def test_sweep_runs_each_defense_and_goal_in_its_default_run_directory(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["sweep", "--defense", "gloro-digits-0.25", "--attack", "*pgd*",
                                      "--num-samples", "3", "--workers", "1", "--root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    summary = [line for line in result.output.split("\nsweep:\n")[1].splitlines() if line.strip()]
    expected = [run for run in MATRIX if run[0] == "gloro-digits-0.25"]
    assert len(summary) == len(expected)
    for line, (defense, goal, attacks) in zip(summary, expected):
        folder = Path(line.rsplit("; ", 1)[1])
        assert folder.parent == tmp_path / defense and folder.name.startswith(f"evaluate-{goal}-seed0-")
        config = json.loads((folder / "config.json").read_text())
        assert (config["goal"], config["attacks"], config["num_samples"]) == (goal, attacks, 3)
        records = [json.loads(row) for row in (folder / "samples.jsonl").read_text().splitlines()]
        assert {r["attack"] for r in records} <= set(attacks) and (folder / "result.json").exists()
    assert result.output.count("clean accuracy") >= len(expected)


def test_every_run_of_a_sweep_gets_its_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(engine, "evaluate", lambda *args, **options: calls.append(options))
    runs = sweep.plan("gloro-digits-*", "*pgd*")
    list(sweep.run(runs, torch.device("cpu"), root=tmp_path, backend="ray", address="auto", num_samples=3))
    assert [(c["backend"], c["address"]) for c in calls] == [("ray", "auto")] * len(MATRIX)
