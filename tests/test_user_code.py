"""Models from your own code: a factory in this very module, named from a user YAML and built in Python, gives the
records of the same weights registered normally; changed code is another defense; bad code is one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from torch import nn

import rsbench
from rsbench import hub, registry
from rsbench.cli import cli
from rsbench.defenses.smoothing import Smoothing
from rsbench.errors import RsbenchError

SMOOTHING = "smoothing-digits-0.50"
QUICK = {"name": "spgd-quick", "implementation": "rsbench.attacks.degradation:DegradationSPGD", "goal": "degradation",
         "params": {"iterations": 5, "num_noise": 20}}
PROTOCOL = {"epsilon": 0.25, "n0": 50, "n": 500, "alpha": 0.01, "batch_size": 500, "judge_n": 100, "confirm_n": 1000}


def digits_cnn(num_classes: int, width: int = 64) -> nn.Module:
    """The layout of rsbench's `digits-cnn`, written out here as a user would write their own model."""
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 4 * 4, width), nn.ReLU(),
                         nn.Linear(width, num_classes))


def not_a_model(num_classes: int) -> str:
    return "a string"


def user_spec(tmp_path: Path, architecture: str, **extra: object) -> Path:
    """A user YAML: the registered smoothing defense with `architecture` in place of the registered one."""
    spec = registry.get_defense(SMOOTHING).model_dump(mode="json")
    weights = hub.local_path(registry.get_defense(SMOOTHING).weights)
    spec.update(name="mine", aliases=[], architecture=architecture, training=None, **extra,
                weights={"source": "file", "filename": str(weights), "sha256": hub.sha256_of(weights)})
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def records(out: Path) -> list[dict]:
    """A run's attack records without their times."""
    lines = (out / "samples.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if "time" not in k} for line in lines]


def test_your_model_through_a_yaml_and_through_python_gives_the_registered_records(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    attacks = tmp_path / "registry" / "attacks"
    attacks.mkdir(parents=True)
    (attacks / "spgd-quick.yaml").write_text(yaml.safe_dump(QUICK))
    monkeypatch.setenv("RSBENCH_REGISTRY", str(attacks.parent))
    settings = {"num_samples": 4, "progress": False, **PROTOCOL}
    registered = rsbench.evaluate(SMOOTHING, "spgd-quick", out=tmp_path / "registered", **settings)
    path = user_spec(tmp_path, f"python:{Path(__file__).resolve()}:digits_cnn", architecture_options={"width": 64})
    options = [f"--{k.replace('_', '-')}={v}" for k, v in PROTOCOL.items()]
    done = CliRunner().invoke(cli, ["evaluate", "--defense", str(path), "--attack", "spgd-quick", "--num-samples", "4",
                                    *options, "--out", str(tmp_path / "yaml")])
    assert done.exit_code == 0, done.output
    model = digits_cnn(10)
    model.load_state_dict(torch.load(hub.local_path(registry.get_defense(SMOOTHING).weights), weights_only=True))
    tensors = rsbench.load_dataset("digits", "test").tensors  # the same samples, given as (x, y)
    built = rsbench.evaluate(Smoothing(model, 10, 0.5), "spgd-quick", data=tensors, out=tmp_path / "python",
                             **settings)
    assert registered.metrics["test_R"] > 0
    assert records(tmp_path / "registered") == records(tmp_path / "yaml") == records(tmp_path / "python")
    assert all(r["iterations"] == 5 and r["judge_calls"] > 0 for r in records(tmp_path / "python"))
    assert built.defense.weights.source == "memory" and "not admissible" in built.defense.description
    assert built.defense.dataset.name == "tensors" and len(built.defense.dataset.sha256) == 64
    yaml_result = json.loads((tmp_path / "yaml" / "result.json").read_text())
    assert list(yaml_result["defense"]["code_sha256"]) == [f"{Path(__file__).resolve()}:digits_cnn"]


def test_a_changed_model_file_is_another_defense_and_the_old_spec_refuses_it(tmp_path: Path) -> None:
    code = tmp_path / "models.py"
    code.write_text(f"from {__name__} import digits_cnn as build\n")
    path = user_spec(tmp_path, "python:./models.py:build")
    before = registry.get_defense(str(path))
    assert before.code_sha256 == {"./models.py:build": hub.sha256_of(code)}
    assert rsbench.load_defense(before).base_classifier[0].weight.shape == (16, 1, 3, 3)
    code.write_text(code.read_text() + "# an edit\n")
    after = registry.get_defense(str(path))
    assert after.spec_hash() != before.spec_hash()
    with pytest.raises(RsbenchError, match="the code changed"):
        rsbench.load_defense(before)


def test_listing_the_registry_never_runs_your_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "registry" / "defenses"
    folder.mkdir(parents=True)
    marker = tmp_path / "ran"
    (folder / "models.py").write_text(f"open({str(marker)!r}, 'w').close()\nfrom {__name__} import digits_cnn\n")
    user_spec(folder, "python:./models.py:digits_cnn")
    monkeypatch.setenv("RSBENCH_REGISTRY", str(tmp_path / "registry"))
    listed = CliRunner().invoke(cli, ["registry", "list", "--kind", "defenses"])
    assert listed.exit_code == 0 and "mine" in listed.output and "BROKEN" not in listed.output
    assert not marker.exists()
    rsbench.load_defense("mine")
    assert marker.exists()


@pytest.mark.parametrize(("architecture", "says"), [
    ("python:no_such_module_anywhere:build", "cannot find module 'no_such_module_anywhere'"),
    ("python:./models.py:absent", "has no 'absent'"),
    ("python:./models.py:not_a_model", "returned a str, not a torch.nn.Module"),
    ("python:./models.py:digits_cnn", "raised TypeError"),
    ("python:./missing.py:build", "missing.py does not exist"),
])
def test_bad_code_is_one_line_and_exit_2(tmp_path: Path, architecture: str, says: str) -> None:
    (tmp_path / "models.py").write_text(f"from {__name__} import not_a_model, digits_cnn\n")
    options = {"architecture_options": {"depth": 3}} if architecture.endswith("digits_cnn") else {}
    path = user_spec(tmp_path, architecture, **options)
    done = CliRunner().invoke(cli, ["certify", "--defense", str(path), "--num-samples", "1", "--out", str(tmp_path / "o")])
    assert done.exit_code == 2, done.output
    assert says in done.output and len(done.output.strip().splitlines()) == 1 and "Traceback" not in done.output
