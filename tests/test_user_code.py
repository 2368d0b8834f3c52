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
from rsbench.defenses.gloro import GloRo
from rsbench.errors import RsbenchError
from rsbench.lipschitz import attach_power_iterates

GLORO = "gloro-digits-0.25"
SETTINGS = {"num_samples": 3, "progress": False}


def lipschitz_cnn(num_classes: int, hidden: int = 32) -> nn.Module:
    """The layout of rsbench's `digits-lipschitz-cnn`, written out here as a user would write their own model."""
    net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 4, stride=2, padding=1), nn.ReLU(),
                        nn.Flatten(), nn.Linear(32 * 4 * 4, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
    return attach_power_iterates(net, (1, 8, 8))


def not_a_model(num_classes: int) -> str:
    return "a string"


def user_spec(tmp_path: Path, architecture: str, **extra: object) -> Path:
    """A user YAML: the registered GloRo defense with `architecture` in place of the registered one."""
    spec = registry.get_defense(GLORO).model_dump(mode="json")
    weights = hub.local_path(registry.get_defense(GLORO).weights)
    spec.update(name="mine", aliases=[], architecture=architecture, training=None, **extra,
                weights={"source": "file", "filename": str(weights), "sha256": hub.sha256_of(weights)})
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def records(out: Path) -> list[dict]:
    """A run's attack records without their times."""
    lines = (out / "samples.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if "time" not in k} for line in lines]


def test_your_model_through_a_yaml_and_through_python_gives_the_registered_records(tmp_path: Path) -> None:
    registered = rsbench.evaluate(GLORO, "pgd-l2", out=tmp_path / "registered", **SETTINGS)
    path = user_spec(tmp_path, f"python:{Path(__file__).resolve()}:lipschitz_cnn", architecture_options={"hidden": 32})
    done = CliRunner().invoke(cli, ["evaluate", "--defense", str(path), "--attack", "pgd-l2", "--num-samples", "3",
                                    "--out", str(tmp_path / "yaml")])
    assert done.exit_code == 0, done.output
    model = lipschitz_cnn(10)
    model.load_state_dict(torch.load(hub.local_path(registry.get_defense(GLORO).weights), weights_only=True))
    tensors = rsbench.load_dataset("digits", "test").tensors  # the same samples, given as (x, y)
    built = rsbench.evaluate(GloRo(model, 10, 0.25, input_shape=(1, 8, 8)), "pgd-l2", data=tensors,
                             out=tmp_path / "python", **SETTINGS)
    assert registered.metrics["attacked_samples"] > 0
    assert records(tmp_path / "registered") == records(tmp_path / "yaml") == records(tmp_path / "python")
    assert built.defense.weights.source == "memory" and "not admissible" in built.defense.description
    assert built.defense.dataset.name == "tensors" and len(built.defense.dataset.sha256) == 64
    yaml_result = json.loads((tmp_path / "yaml" / "result.json").read_text())
    assert list(yaml_result["defense"]["code_sha256"]) == [f"{Path(__file__).resolve()}:lipschitz_cnn"]


def test_a_changed_model_file_is_another_defense_and_the_old_spec_refuses_it(tmp_path: Path) -> None:
    code = tmp_path / "models.py"
    code.write_text(f"from {__name__} import lipschitz_cnn as build\n")
    path = user_spec(tmp_path, "python:./models.py:build")
    before = registry.get_defense(str(path))
    assert before.code_sha256 == {"./models.py:build": hub.sha256_of(code)}
    assert rsbench.load_defense(before).certify(torch.zeros(1, 8, 8)).prediction is not None
    code.write_text(code.read_text() + "# an edit\n")
    after = registry.get_defense(str(path))
    assert after.spec_hash() != before.spec_hash()
    with pytest.raises(RsbenchError, match="the code changed"):
        rsbench.load_defense(before)


def test_listing_the_registry_never_runs_your_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "registry" / "defenses"
    folder.mkdir(parents=True)
    marker = tmp_path / "ran"
    (folder / "models.py").write_text(f"open({str(marker)!r}, 'w').close()\nfrom {__name__} import lipschitz_cnn\n")
    user_spec(folder, "python:./models.py:lipschitz_cnn").rename(folder / "mine.yaml")
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
    ("python:./models.py:lipschitz_cnn", "raised TypeError"),
    ("python:./missing.py:build", "missing.py does not exist"),
])
def test_bad_code_is_one_line_and_exit_2(tmp_path: Path, architecture: str, says: str) -> None:
    (tmp_path / "models.py").write_text(f"from {__name__} import not_a_model, lipschitz_cnn\n")
    options = {"architecture_options": {"depth": 3}} if architecture.endswith("lipschitz_cnn") else {}
    path = user_spec(tmp_path, architecture, **options)
    done = CliRunner().invoke(cli, ["certify", "--defense", str(path), "--num-samples", "1", "--out", str(tmp_path / "o")])
    assert done.exit_code == 2, done.output
    assert says in done.output and len(done.output.strip().splitlines()) == 1 and "Traceback" not in done.output
