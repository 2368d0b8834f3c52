"""Defense submissions: the shipped AOL example validates; what a cheater would try is refused in one line."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

import rsbench
from rsbench import defense_submissions, registry, soundness
from rsbench.defenses.smoothing import Smoothing
from rsbench.errors import RsbenchError

EXAMPLE = Path(__file__).resolve().parents[1] / "submissions" / "defenses" / "aol-digits"


def test_the_aol_example_validates() -> None:
    lines = defense_submissions.validate(EXAMPLE, samples=3)
    assert lines[0].startswith("aol-digits: schema, names, files and weights")
    assert [line.split(":")[0] for line in lines[1:4]] == ["evasion-aol-digits", "degradation-aol-digits",
                                                          "spoofing-aol-digits"]
    assert "clean accuracy 95% in [75.1, 99.9]" in lines[1]
    assert lines[4].startswith("soundness on the first 3 test samples: 3 certified samples attacked")


@pytest.fixture
def copy(tmp_path: Path) -> Callable[..., Path]:
    """A copy of the example in a folder of its name, with submission.yaml edited by `change(data)`."""

    def make(change: Callable[[dict], None] | None = None, name: str = "aol-digits") -> Path:
        folder = tmp_path / name
        shutil.copytree(EXAMPLE, folder)
        data = yaml.safe_load((folder / "submission.yaml").read_text())
        if change:
            change(data)
        (folder / "submission.yaml").write_text(yaml.safe_dump(data))
        return folder

    return make


def claim(value: float) -> Callable[[dict], None]:
    def change(data: dict) -> None:
        data["claims"]["evasion-aol-digits"]["certified_accuracy"][0.25] = value
    return change


def test_a_claim_outside_the_reproduced_interval_is_refused(copy: Callable[..., Path]) -> None:
    submission = defense_submissions.load(copy(claim(99.0)))
    with pytest.raises(RsbenchError, match=r"aol-digits claims certified accuracy at radius 0\.25 99% on "
                                           r"evasion-aol-digits; its first 20 samples give 85\.0% \[62\.1, 96\.8\]"):
        defense_submissions.recertify(submission)


@pytest.mark.parametrize(("change", "says"), [
    (lambda d: d["defense"]["weights"].update(sha256="0" * 64), "checksum mismatch"),
    (lambda d: d["defense"].update(architecture="python:../aol-digits/aol.py:build"), "must be a .py file of the"),
    (lambda d: d["defense"]["weights"].update(source="file", filename="/etc/passwd"), "lie in its folder"),
    (lambda d: d["defense"]["weights"].update(filename="../aol-digits.pt"), "a file inside the spec's folder"),
    (lambda d: d.update(name="other"), "must share one name"),
    (lambda d: d["claims"].update({"evasion-gloro-digits-0.25": {"clean_accuracy": 90}}), "aol-digits gets"),
    (lambda d: d["defense"].update(code_sha256={"./aol.py:build": "0" * 64}), "the code changed"),
])
def test_a_submission_is_refused_in_one_line(copy: Callable[..., Path], change: Callable[[dict], None],
                                            says: str) -> None:
    with pytest.raises(RsbenchError) as error:
        defense_submissions.load(copy(change))
    assert says in str(error.value) and "\n" not in str(error.value)


def test_an_unsound_plugin_is_refused_by_validate_with_the_broken_point_named(copy: Callable[..., Path]) -> None:
    def drop_certified(data: dict) -> None:  # its clean accuracy is the example's; only its radii are doubled
        for track in data["claims"].values():
            track["certified_accuracy"] = {}

    folder = copy(drop_certified)
    code = (folder / "aol.py").read_text()
    (folder / "aol.py").write_text(code.replace("/ SQRT2\n", "/ SQRT2 * 2\n"))
    with pytest.raises(RsbenchError, match=r"aol-digits: unsound certificate at sample 0: label 4 certified within l2 "
                                           r"radius 0\.53\d+, but pgd-l2 found label \d at distance 0\.\d+"):
        defense_submissions.validate(folder, samples=3)


class CallCounting(torch.nn.Module):
    """A base classifier whose answer depends on how often it was called: class 0 on two calls, class 1 on the next two."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.scale = torch.nn.Parameter(torch.ones(()), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        logits = torch.zeros(len(x), 10)
        logits[:, (self.calls - 1) // 2 % 2] = 10 * self.scale
        return logits


def test_smoothing_certify_must_agree_with_a_second_independent_run() -> None:
    dataset = rsbench.load_dataset("digits")
    samples = [dataset[i] for i in range(4)]
    spec = registry.get_defense("smoothing-digits-0.50")
    sound = Smoothing(rsbench.load_defense(spec).base_classifier, 10, 0.5, n0=50, n=500, alpha=0.001, batch_size=500)
    assert soundness.check(spec, sound, samples).tested > 0
    stateful = Smoothing(CallCounting(), 10, 0.5, n0=50, n=500, alpha=0.001, batch_size=500)
    with pytest.raises(RsbenchError, match=r"CERTIFY disagrees with a second independent run beyond its error on 4 of 8 "
                                           r"certificates \(a sound one allows 1\): sample 0 \(class 1"):
        soundness.check(spec, stateful, samples)
