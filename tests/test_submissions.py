"""Submissions: run in a subprocess, judged by rsbench itself, claims compared with reproduced intervals."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rsbench import leaderboard, submissions
from rsbench.errors import RsbenchError

TRACK = "evasion-smoothing-digits-0.50"
ATTACK_HEADER = '''
import torch
from rsbench.attacks.base import Attack, ViewParams


class Params(ViewParams):
    """Nothing to set."""
'''
IDLE = ATTACK_HEADER + '''

class Idle(Attack):
    Params = Params
    kinds = ("smoothing",)

    def run(self, view, x, label, tracker, generator):
        tracker.iterations += 1  # proposes nothing: it never succeeds
'''
SELF_JUDGING = ATTACK_HEADER + '''
import rsbench.attacks.success

rsbench.attacks.success.is_adversarial = lambda counts, original, alpha: True  # judges itself a winner


class Cheat(Attack):
    Params = Params
    kinds = ("smoothing",)

    def run(self, view, x, label, tracker, generator):
        tracker.offer((x + 0.01).clamp(0, 1))  # barely moved: not adversarial
'''


def submission(folder: Path, name: str, code: str, cls: str, claims: dict[str, float]) -> Path:
    path = folder / name
    path.mkdir(parents=True)
    module = name.replace("-", "_")
    (path / f"{module}.py").write_text(code)
    (path / "submission.yaml").write_text(yaml.safe_dump({
        "name": name, "authors": ["a"], "paper": "https://example.org", "licence": "MIT", "claims": {TRACK: claims},
        "attack": {"name": name, "implementation": f"{module}:{cls}", "goal": "evasion", "norm": "l2",
                   "params": {"num_noise": 100}},
    }))
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A track with the smoke protocol (two samples, light certification and judge) and no entries yet."""
    probe = submission(tmp_path / "probe", "probe", IDLE, "Idle", {"success": 0})
    _, board = submissions.smoke_protocol(submissions.load_submission(probe), "smoothing")
    folder = tmp_path / "leaderboards"
    leaderboard.save(folder / TRACK / "v1.json", board.model_copy(update={"track": TRACK}))
    return folder


@pytest.mark.slow  # a subprocess imports torch and certifies two samples
def test_verify_refuses_claims_its_run_does_not_reproduce(root: Path, tmp_path: Path) -> None:
    folder = submission(tmp_path, "idle", IDLE, "Idle", {"success": 100})
    with pytest.raises(RsbenchError, match=r"claims success 100 on .* reproduces 0 \[0, 0\]; refused"):
        submissions.verify(folder, root, timeout=120)


@pytest.mark.slow
def test_verify_on_a_subset_checks_the_claims_on_its_samples_and_adds_no_entry(root: Path, tmp_path: Path) -> None:
    idle = submission(tmp_path, "idle", IDLE, "Idle", {"success": 0})
    [line] = submissions.verify(idle, root, timeout=120, samples=1)
    assert "consistent with the first 1 samples; no entry added" in line
    assert leaderboard.load(root / TRACK / "v1.json").entries == []
    boastful = submission(tmp_path / "other", "idle", IDLE, "Idle", {"success": 100})
    with pytest.raises(RsbenchError, match=r"claims success 100 .* reproduces 0 \[0, 0\]; refused"):
        submissions.verify(boastful, root, timeout=120, samples=1)


@pytest.mark.slow
def test_verify_refuses_examples_that_are_not_adversarial(root: Path, tmp_path: Path) -> None:
    folder = submission(tmp_path, "cheat", SELF_JUDGING, "Cheat", {"success": 100})
    with pytest.raises(RsbenchError, match="returned examples are not what their records claim"):
        submissions.verify(folder, root, timeout=120)
    assert [e.name for e in leaderboard.load(root / TRACK / "v1.json").entries] == []


def test_a_submission_must_name_its_folder_and_goal_consistently(tmp_path: Path) -> None:
    folder = submission(tmp_path, "idle", IDLE, "Idle", {"success": 0})
    text = (folder / "submission.yaml").read_text().replace(TRACK, "degradation-gloro-digits-0.25")
    (folder / "submission.yaml").write_text(text)
    with pytest.raises(RsbenchError, match="the attack's goal is evasion"):
        submissions.load_submission(folder)


def test_the_workflow_parses_and_every_rsbench_command_it_calls_exists() -> None:
    import shlex

    import click

    from rsbench.cli import cli

    workflow = yaml.safe_load((Path(__file__).parents[1] / ".github/workflows/leaderboard.yml").read_text())
    assert "pull_request" in workflow[True]  # YAML 1.1 reads the key `on` as true
    scripts = [step["run"] for job in workflow["jobs"].values() for step in job["steps"] if "run" in step]
    calls = [line[line.index("rsbench "):] for script in scripts for line in script.splitlines() if "rsbench " in line]
    assert len(calls) >= 5
    for call in calls:
        words = shlex.split(call.split(";")[0].split("|")[0].replace("$(", " "))[1:]
        command: click.Command = cli
        while isinstance(command, click.Group):
            assert words and words[0] in command.commands, f"{call!r}: no such rsbench command"
            command, words = command.commands[words.pop(0)], words
        options = {opt for param in command.params for opt in param.opts}
        assert all(word in options for word in words if word.startswith("--")), call
