"""A model whose outputs are not finite logits of shape [batch, num_classes] is refused in one line, before anything
is recorded, on every path: `certify`, `evaluate` and `rsbench.evaluate`; and no setting of images per pass or batch
size lets one sample's extra outputs count as another sample's votes."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from torch import nn

import rsbench
from rsbench import hub, registry
from rsbench.cli import cli
from rsbench.defenses.base import check_output
from rsbench.defenses.kw import KW
from rsbench.defenses.smoothed_view import count_votes_many
from rsbench.defenses.smoothing import Smoothing
from rsbench.errors import RsbenchError
from rsbench.submissions import sandbox

SMOOTHING = "smoothing-digits-0.50"
QUICK = ["--n0", "20", "--n", "200", "--alpha", "0.01", "--batch-size", "100"]


class Changed(nn.Sequential):
    """rsbench's digits CNN (its state dict loads the registered weights) whose logits `change` alters."""

    def __init__(self, num_classes: int, change: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__(*rsbench.models.digits_cnn(num_classes))
        self.change = change

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.change(super().forward(x))


def nan_logits(num_classes: int) -> nn.Module:
    return Changed(num_classes, lambda logits: logits * float("nan"))


def twelve_logits(num_classes: int) -> nn.Module:
    return Changed(num_classes, lambda logits: torch.cat([logits, torch.zeros(len(logits), 2)], dim=1))


def seven_logits(num_classes: int) -> nn.Module:
    return Changed(num_classes, lambda logits: logits[:, :7])


def eleven_logits(num_classes: int) -> nn.Module:
    """An eleventh logit that wins wherever class 3 would."""
    return Changed(num_classes, lambda logits: torch.cat([logits, logits[:, 3:4] + 1], dim=1))


BROKEN = {  # the first pass: n0 = 20 noisy copies of one image
    "nan_logits": "your model returned NaN or infinite logits for 20 of 20 inputs",
    "twelve_logits": "your model returned logits of shape [20, 12]; the spec says 10 classes",
    "seven_logits": "your model returned logits of shape [20, 7]; the spec says 10 classes",
    "eleven_logits": "your model returned logits of shape [20, 11]; the spec says 10 classes",
}


def broken_spec(folder: Path, factory: str) -> Path:
    """A user YAML: the registered smoothing defense's weights in a model of this module."""
    spec = registry.get_defense(SMOOTHING).model_dump(mode="json")
    weights = hub.local_path(registry.get_defense(SMOOTHING).weights)
    spec.update(name="mine", aliases=[], architecture=f"python:{Path(__file__).resolve()}:{factory}", training=None,
                weights={"source": "file", "filename": str(weights), "sha256": hub.sha256_of(weights)})
    path = folder / f"{factory}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def refused(args: list[str]) -> str:
    """The one line a command refuses with (exit status 2)."""
    done = CliRunner().invoke(cli, args)
    assert done.exit_code == 2, done.output
    assert len(done.output.strip().splitlines()) == 1, done.output
    return done.output


@pytest.mark.parametrize(("factory", "says"), BROKEN.items())
def test_certify_refuses_a_broken_model_before_recording(tmp_path: Path, factory: str, says: str) -> None:
    out = tmp_path / "run"
    line = refused(["certify", "--defense", str(broken_spec(tmp_path, factory)), "--num-samples", "2", *QUICK,
                    "--images-per-batch", "1", "--out", str(out)])
    assert says in line
    assert not (out / "samples.jsonl").exists() or not (out / "samples.jsonl").read_text()


@pytest.mark.parametrize(("factory", "says"), BROKEN.items())
def test_evaluate_refuses_a_broken_model_before_recording(tmp_path: Path, factory: str, says: str) -> None:
    out = tmp_path / "run"
    line = refused(["evaluate", "--defense", str(broken_spec(tmp_path, factory)), "--attack", "pgd",
                    "--num-samples", "2", *QUICK, "--images-per-batch", "1", "--out", str(out)])
    assert says in line
    assert all(not (out / name).exists() or not (out / name).read_text() for name in ("clean.jsonl", "samples.jsonl"))


@pytest.mark.parametrize(("factory", "says"), BROKEN.items())
def test_the_python_api_refuses_a_broken_model(tmp_path: Path, factory: str, says: str) -> None:
    model = globals()[factory](10)
    with pytest.raises(RsbenchError) as error:
        rsbench.evaluate(Smoothing(model, 10, 0.5), "pgd", data="digits", num_samples=2, n0=20, n=200, alpha=0.01,
                         batch_size=100, out=tmp_path / "run", progress=False)
    assert says in str(error.value) and "\n" not in str(error.value)
    assert not model._forward_hooks, "rsbench.evaluate leaves the model as it was given"


@pytest.mark.parametrize("settings", [["--images-per-batch", "1"], ["--images-per-batch", "11"],
                                      ["--images-per-batch", "11", "--batch-size", "37"],
                                      ["--images-per-batch", "4", "--batch-size", "200"]])
def test_no_setting_lets_extra_outputs_count_as_another_sample_s_votes(tmp_path: Path, settings: list[str]) -> None:
    """Test sample 7, a 3, votes for the eleventh class on most copies. Alone, that vote raised an IndexError; in
    one pass with the next sample it counted as a class-0 vote of sample 8 (a 9), whose record then said 0; the
    setting must not change the outcome: the same refusal, and no record."""
    out = tmp_path / "run"
    line = refused(["certify", "--defense", str(broken_spec(tmp_path, "eleven_logits")), "--num-samples", "11",
                    "--n0", "20", "--n", "200", "--alpha", "0.01", *settings, "--out", str(out)])
    assert "your model returned logits of shape [" in line and ", 11]; the spec says 10 classes" in line
    assert not (out / "samples.jsonl").exists() or not (out / "samples.jsonl").read_text()


def test_votes_are_counted_only_from_logits_of_the_spec_s_classes() -> None:
    xs = rsbench.load_dataset("digits", "test").tensors[0][:5]
    generators = [torch.Generator().manual_seed(i) for i in range(5)]
    with pytest.raises(RsbenchError, match=r"model returned logits of shape \[500, 11\]; the spec says 10 classes"):
        count_votes_many(eleven_logits(10), xs, 0.5, 10, 100, 100, generators)


@pytest.mark.parametrize(("value", "says"), [
    ((torch.zeros(2, 10),), "returned a tuple, not logits"),
    (torch.zeros(2, 10, dtype=torch.long), "returned int64 values, not floating-point logits"),
    (torch.zeros(3, 10), "returned logits of shape [3, 10]; the spec says 10 classes"),
    (torch.tensor([[0.0] * 10, [float("inf")] * 10]), "returned NaN or infinite logits for 1 of 2 inputs"),
])
def test_the_one_check_names_what_came_back(value: object, says: str) -> None:
    with pytest.raises(RsbenchError) as error:
        check_output(value, (2, 10), "the model returned", "logits", "the spec says 10 classes")
    assert says in str(error.value)
    assert check_output(torch.zeros(2, 10), (2, 10), "the model returned", "logits", "").shape == (2, 10)


def test_a_deterministic_defense_built_in_python_is_checked_while_it_runs_only(tmp_path: Path) -> None:
    seven = nn.Sequential(nn.Flatten(), nn.Linear(64, 7))
    with pytest.raises(RsbenchError, match=r"your model returned logits of shape \[1, 7\]; the spec says 10 classes"):
        rsbench.evaluate(KW(seven, 10, 0.1), "pgd-linf", data="digits", num_samples=1, out=tmp_path / "seven",
                         progress=False)
    ten = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    assert rsbench.evaluate(KW(ten, 10, 0.1), "pgd-linf", data="digits", num_samples=1, out=tmp_path / "ten",
                            progress=False).num_samples == 1
    assert not seven._forward_hooks and not ten._forward_hooks, "rsbench.evaluate leaves the model as it was given"


SEVEN_SERVED = '''


class _Seven(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[:, :7]


_from_spec = AOLCertifier.from_spec.__func__
AOLCertifier.from_spec = classmethod(lambda cls, spec, model: _from_spec(cls, spec, _Seven(model)))
'''
"""Appended to the graph example's aol.py: its served certifier's network answers with 7 logits."""

SEVEN = '''

_build = build


class Seven(nn.Sequential):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)[:, :7]


def build(num_classes: int, **options: int) -> nn.Sequential:
    return Seven(*_build(num_classes, **options))
'''


def test_a_submitted_defense_is_checked_in_process_and_served(tmp_path: Path) -> None:
    """`certify` runs a plugin's code in this process, `submission validate` a self-certified plugin on a graph in
    the sandbox: both refuse a network that answers with 7 logits for a 10-class spec."""
    folder = tmp_path / "aol-digits"
    shutil.copytree(Path(__file__).resolve().parents[1] / "submissions" / "defenses" / "aol-digits", folder)
    (folder / "aol.py").write_text((folder / "aol.py").read_text() + SEVEN)
    line = refused(["certify", "--defense", str(folder), "--num-samples", "2", "--out", str(tmp_path / "run")])
    assert "your model returned logits of shape [1, 7]; the spec says 10 classes" in line
    reason = sandbox.unavailable()
    if reason:
        pytest.fail(reason) if os.environ.get("CI") else pytest.skip(reason)
    served = tmp_path / "aol-digits-graph"
    shutil.copytree(Path(__file__).resolve().parents[1] / "submissions" / "defenses" / "aol-digits-graph", served)
    data = yaml.safe_load((served / "submission.yaml").read_text())
    data["defense"].update(kind="plugin", implementation="./aol.py:AOLCertifier")
    (served / "submission.yaml").write_text(yaml.safe_dump(data))
    (served / "aol.py").write_text((served / "aol.py").read_text() + SEVEN_SERVED)
    line = refused(["submission", "validate", str(served)])
    assert "your model returned logits of shape [" in line and ", 7]; the spec says 10 classes" in line