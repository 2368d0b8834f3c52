"""The MNIST models rsbench ships: their split named everywhere, their weights reproduced bit for bit from it, and
their certificates never broken by the strongest bounded attack of the registry. Most checks need the shared MNIST
test set (CI has it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from rsbench import hub, registry, training
from rsbench.attacks.base import Target, Tracker
from rsbench.attacks.bounded_pgd import BoundedPGD
from rsbench.data import load_dataset
from rsbench.defenses import load_defense
from rsbench.training import macer, reproduction

SHARED_DATA = Path(os.environ.get("RSBENCH_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
needs_mnist = pytest.mark.skipif(not (SHARED_DATA / "mnist").is_dir(), reason="shared MNIST test set absent")
SHIPPED = sorted(name for name, spec in registry.all_specs("defenses").items()
                 if spec.dataset.name == "mnist" and spec.weights.source == "package")
WEIGHTS = Path(registry.__file__).parent / "weights"


def test_every_shipped_mnist_model_names_its_split_in_spec_and_card_and_stays_small() -> None:
    assert len(SHIPPED) == 9
    for name in SHIPPED:
        spec = registry.get_defense(name)
        card = (WEIGHTS / f"{name}.md").read_text()
        assert spec.dataset.split == "test-eval" and "5000-9999" in spec.description
        assert "trained on `test-train` (MNIST test images 5000-9999" in card
        assert "samples of `test-eval` (MNIST test images 0-4999" in card
        assert spec.weights.sha256 in card and "matches the registry pin" in card
        assert (WEIGHTS / spec.weights.filename).stat().st_size < 1.5 * 2**20


def test_macer_mnist_fine_tunes_exactly_the_shipped_gaussian_model() -> None:
    """Its warm-up is smoothing-mnist-0.50's recipe (Adam, 50 epochs, no weight decay), so the two differ by MACER."""
    spec, paired = registry.get_defense("macer-mnist-0.50"), registry.get_defense("smoothing-mnist-0.50")
    warmup = macer.warmup_spec(spec, macer.recipe_options(spec)).training
    assert warmup == paired.training and paired.sigma == spec.sigma


@needs_mnist
def test_rsbench_train_reproduces_the_shipped_weights_from_the_documented_split(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """smoothing-mnist-1.00: the certification-aware-attack paper's recipe (50 epochs of Adam, batch 128) on the
    5,000 images of test-train, in seconds; whatever training files the data folder holds, test-train is asked for.
    Bit for bit where the card's build environment is this machine's, else by predictions and certified accuracy:
    the verdict holds on any CPU, whichever kernels it picks."""
    monkeypatch.setenv("RSBENCH_DATA", str(SHARED_DATA))
    spec = registry.get_defense("smoothing-mnist-1.00")
    threads = torch.get_num_threads()
    path = training.train(spec, tmp_path, "cpu", "test-train")
    assert torch.get_num_threads() == threads  # training pins one thread only while it runs
    verdict = reproduction.compare(spec, path, tmp_path, samples=100, n=1000)
    card_environment = reproduction.read_build_environment(reproduction.shipped_card(spec))
    if reproduction.bit_reproducible_here(card_environment):
        assert verdict.method == "bit-for-bit" and hub.sha256_of(path) == spec.weights.sha256
    else:
        assert verdict.method == "functional" and verdict.images == 5000 and len(verdict.radii) >= 8
        assert verdict.agreement >= reproduction.MIN_AGREEMENT
        assert all(check.inside for check in verdict.radii), verdict.summary()
    assert verdict.reproduced


@needs_mnist
def test_a_changed_recipe_is_not_reproduced_on_any_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Five epochs instead of fifty: far fewer predictions agree and certified accuracy leaves the shipped interval,
    so the functional comparison refuses what the bitwise one would."""
    monkeypatch.setenv("RSBENCH_DATA", str(SHARED_DATA))
    spec = registry.get_defense("smoothing-mnist-1.00")
    short = spec.model_copy(update={"training": spec.training.model_copy(update={"epochs": 5})})
    path = training.train(short, tmp_path, "cpu", "test-train")
    monkeypatch.setattr(reproduction, "bit_reproducible_here", lambda built, device="cpu": False)
    verdict = reproduction.compare(spec, path, tmp_path, samples=100, n=1000)
    assert not verdict.reproduced and verdict.agreement < reproduction.MIN_AGREEMENT
    assert not all(check.inside for check in verdict.radii)
    assert "NOT reproduced functionally" in verdict.summary()


@needs_mnist
@pytest.mark.parametrize("name", [n for n in SHIPPED if registry.get_defense(n).kind in ("gloro", "crownibp")])
def test_certified_mnist_points_withstand_the_strongest_bounded_pgd(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry's bounded PGD at full strength (five restarts of 50 steps) breaks neither of the two test-eval
    images with the largest certificates among the first 30, attacked at their own certified radius."""
    monkeypatch.setenv("RSBENCH_DATA", str(SHARED_DATA))
    defense = load_defense(name)
    norm = defense.norm
    attack = BoundedPGD(registry.attack_params(registry.get_attack("pgd-l2" if norm == "l2" else "pgd-linf")))
    x, y = load_dataset("mnist", "test-eval").tensors
    labels, radii = defense.certify_batch(x[:30])
    correct = labels == y[:30]
    assert correct.float().mean() > 0.7
    for i in (radii * correct).argsort(descending=True)[:2].tolist():
        def wrong(candidate: torch.Tensor, label: int = int(y[i])) -> bool:
            with torch.no_grad():
                return int(defense.model(candidate[None]).argmax()) != label

        radius = float(radii[i])
        assert radius > 0
        tracker = Tracker(x[i], wrong, norm=norm)
        attack.run(Target(defense, radius, norm), x[i], int(y[i]), tracker, torch.Generator().manual_seed(i))
        assert tracker.best is None and tracker.judge_calls == 250
