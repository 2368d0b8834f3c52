"""Plugin certifiers: the shipped AOL example checked independently, attacked under every goal, and unsound or
incomplete plugins caught in one line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import rsbench
from rsbench import registry
from rsbench.defenses import load_defense
from rsbench.defenses.base import Certificate
from rsbench.errors import RsbenchError
from rsbench.goals import check_attack
from rsbench.submissions import soundness

AOL = str(Path(__file__).resolve().parents[1] / "submissions" / "defenses" / "aol-digits")
"""The AOL example, named by its submission folder (submitted defenses are not registry defenses)."""


def lines(out: Path) -> list[list]:
    """A run's records, times left out."""
    return [[v for k, v in json.loads(line).items() if "time" not in k]
            for line in (out / "samples.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def aol() -> rsbench.defenses.Defense:
    return load_defense(AOL)


@pytest.fixture(scope="module")
def samples() -> list[tuple[torch.Tensor, int]]:
    dataset = rsbench.load_dataset("digits")
    return [dataset[i] for i in range(5)]


def test_every_aol_layer_is_1_lipschitz_and_the_certificate_is_margin_over_sqrt_2(aol, samples) -> None:  # noqa: ANN001
    layers = [m for m in aol.model.modules() if hasattr(m, "rescaled")]
    assert len(layers) == 4
    for layer in layers:
        weight = layer.weight.detach().double().numpy()
        factors = np.abs(weight.T @ weight).sum(axis=1) ** -0.5  # the AOL rescaling, computed here in float64
        assert np.linalg.norm(weight * factors, ord=2) <= 1 + 1e-12
        assert np.linalg.norm(layer.rescaled().detach().double().numpy(), ord=2) <= 1 + 1e-6  # what the layer applies
    for x, _ in samples:
        with torch.no_grad():
            logits = aol.model(x[None])[0].double().sort(descending=True).values
        assert aol.certify(x).radius == pytest.approx(float(logits[0] - logits[1]) / math.sqrt(2), rel=1e-12)


class Doubled:
    """Mixed into the AOL certifier: every radius doubled, a certificate that claims more than holds."""

    def certify_many(self, xs, generators):  # noqa: ANN001, ANN201
        return [Certificate(c.prediction, 2 * c.radius) for c in super().certify_many(xs, generators)]


def test_the_soundness_check_passes_aol_and_names_the_point_that_breaks_a_doubled_radius(aol, samples) -> None:  # noqa: ANN001
    spec = registry.get_defense(AOL)
    report = soundness.check(spec, aol, samples)
    assert report.tested == 10 and "no label changed" in report.detail
    unsound = type("DoubledAOL", (Doubled, type(aol)), {})(aol.model, 10, 0.25)
    with pytest.raises(RsbenchError, match=r"unsound certificate at sample 0: label 4 certified within l2 radius "
                                           r"0\.53\d+, but pgd-l2 found label \d at distance 0\.\d+"):
        soundness.check(spec, unsound, samples)


def test_aol_is_attacked_under_every_goal_and_built_in_python_gives_the_same_records(aol, tmp_path: Path) -> None:  # noqa: ANN001
    settings = {"num_samples": 3, "progress": False}
    evasion = rsbench.evaluate(AOL, "pgd-l2", out=tmp_path / "evasion", **settings)
    robustness = evasion.metrics["robustness"]
    assert robustness["certified_broken"] == 0 and robustness["vra"]["value"] <= robustness["all"]["value"]
    built = rsbench.evaluate(type(aol)(aol.model, 10, 0.25), "pgd-l2", data="digits", out=tmp_path / "python",
                             **settings)
    assert built.defense.kind == "plugin" and built.defense.implementation.endswith(":AOLCertifier")
    assert [r[1:] for r in lines(tmp_path / "evasion")] == [r[1:] for r in lines(tmp_path / "python")]
    degradation = rsbench.evaluate(AOL, "degradation-adaptive", out=tmp_path / "degradation", **settings)
    assert degradation.metrics["test_R"] == round(3 * robustness["vra"]["value"]) > 0  # the same certificates
    assert "degradation-adaptive" in degradation.metrics["attacks"]
    shadow = registry.get_attack("shadow-1ch").model_copy(update={"params": {"steps": 30, "one_channel": True}})
    spoofing = rsbench.evaluate(AOL, shadow, out=tmp_path / "spoofing", num_samples=1, progress=False)
    row = spoofing.metrics["attacks"]["shadow-1ch"]
    assert row["attacked"] == 1 and spoofing.metrics["epsilon"] == 0.25


def plugin_spec(tmp_path: Path, code: str) -> rsbench.specs.DefenseSpec:
    """aol-digits with its certifier replaced by the class `Plugin` of `code`, written beside a copy of its spec."""
    spec = registry.get_defense(AOL)
    (tmp_path / "plugin.py").write_text(code)
    data = spec.model_dump(mode="json")
    data.update(name="plugged", implementation="./plugin.py:Plugin", code_sha256={},
                architecture=f"python:{spec._folder / 'aol.py'}:build",
                weights={"source": "file", "filename": str(spec._folder / "aol-digits.pt"), "sha256": spec.weights.sha256})
    (tmp_path / "plugged.yaml").write_text(yaml.safe_dump(data))
    return registry.get_defense(str(tmp_path / "plugged.yaml"))


def test_an_attack_needing_what_a_plugin_lacks_is_refused_in_one_line(tmp_path: Path) -> None:
    spec = plugin_spec(tmp_path, "from rsbench.defenses.base import Certificate, Defense\n"
                                 f"import importlib.util, sys\nspec = importlib.util.spec_from_file_location('a', "
                                 f"{str(registry.get_defense(AOL)._folder / 'aol.py')!r})\n"
                                 "aol = importlib.util.module_from_spec(spec); spec.loader.exec_module(aol)\n"
                                 "class Plugin(aol.AOLCertifier):\n    worst_case_margins = Defense.worst_case_margins\n")
    check_attack(registry.get_attack("pgd-l2"), spec)  # needs only the network
    for attack in ("shadow", "degradation-adaptive"):
        with pytest.raises(RsbenchError, match=f"attack '{attack}' needs the defense's worst_case_margins, which "
                                               "plugged's class Plugin does not provide"):
            check_attack(registry.get_attack(attack), spec)


def test_a_plugin_that_is_not_a_defense_is_refused_in_one_line(tmp_path: Path) -> None:
    spec = plugin_spec(tmp_path, "class Plugin:\n    pass\n")
    with pytest.raises(RsbenchError, match=r"\./plugin\.py:Plugin is not a class deriving rsbench.defenses.base.Defense"):
        load_defense(spec)
