"""Attacks in batches: several samples in lockstep give exactly the records of one sample at a time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from rsbench import engine, registry, runner
from rsbench.data import load_dataset
from rsbench.defenses import load_defense
from rsbench.defenses.smoothed_view import SmoothedView, ViewOutput
from rsbench.defenses.smoothing import Smoothing
from rsbench.goals import Sample
from rsbench.goals.evasion import Evasion
from rsbench.records import RunConfig, SampleRecord

TIMES = {"first_time_s", "best_time_s", "total_time_s"}
SMALL = {"num_noise": 300, "iterations": 10}
"""Small budgets; with chunks of 128 copies the view's recomputed backward chunks are exercised too."""


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 5)).eval()


def loss(out: ViewOutput, leaf: torch.Tensor) -> torch.Tensor:
    """A CAA-like objective: the view's margin and a term of the input itself."""
    return out.e0_lower - out.e1_upper + 0.1 * leaf.norm()


@pytest.mark.parametrize("draws", [1, 3])
def test_grad_many_equals_grad_at_each_input(draws: int) -> None:
    view = SmoothedView(tiny_cnn(), 5, 0.5, num_noise=300, chunk_size=128)
    xs = [torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    together = view.grad_many(xs, [loss] * 4, [torch.Generator().manual_seed(10 + i) for i in range(4)], draws=draws)
    for i, (value, out, grad) in enumerate(together):
        alone_value, alone_out, alone_grad = view.grad(xs[i], loss, torch.Generator().manual_seed(10 + i), draws=draws)
        assert value == alone_value
        assert torch.equal(out.freq, alone_out.freq) and torch.equal(out.radius, alone_out.radius)
        assert torch.equal(grad, alone_grad)


def test_joint_frequencies_are_each_inputs_own() -> None:
    view = SmoothedView(tiny_cnn(), 5, 0.5, num_noise=300, chunk_size=128)
    xs = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    freq = view.joint_frequencies(xs, [torch.Generator().manual_seed(i) for i in range(3)], draws=2)
    assert freq.shape == (3, 2, 5)
    for i in range(3):
        assert torch.equal(freq[i], view.frequencies(xs[i], torch.Generator().manual_seed(i), draws=2))


@pytest.fixture(scope="module")
def digits_samples() -> tuple[Smoothing, list[Sample]]:
    """The shipped digits model (sigma 0.5) with chunks of 128 copies, and its first four test samples."""
    model = load_defense("smoothing-digits-0.50").base_classifier
    defense = Smoothing(model, 10, 0.5, batch_size=128)
    dataset = load_dataset("digits")
    samples = []
    for index in range(4):
        x, label = dataset[index]
        clean = SampleRecord(index=index, label=label, prediction=label, radius=0.5, correct=True, time_s=0.0)
        samples.append(Sample(x, label, index, clean))
    return defense, samples


def small_attack(name: str, **budget: int):
    """The registered attack with the SMALL budget, updated by `budget`."""
    attack = registry.get_attack(name)
    return attack.model_copy(update={"params": {**attack.params, **SMALL, **budget}})


def evasion(defense: Smoothing, name: str) -> Evasion:
    """The evasion job of a run of attack `name` (small budget) with a small judge."""
    spec = registry.get_defense("smoothing-digits-0.50")
    attack = small_attack(name)
    config = RunConfig(command="evaluate", defense=spec.name, defense_hash=spec.spec_hash(), attacks=[name],
                       attack_hashes=[attack.spec_hash()], num_samples=4, n0=20, n=500, alpha=0.01, batch_size=128,
                       seed=3, judge_n=300, confirm_n=1000)
    return Evasion(spec, defense, [attack], config)


@pytest.mark.parametrize("name", ["caa", "pgd"])
def test_batched_records_equal_one_at_a_time(digits_samples: tuple[Smoothing, list[Sample]], name: str) -> None:
    defense, samples = digits_samples
    job = evasion(defense, name)
    assert job.attacks[name][1].batches
    together = job.attack_many(name, samples)
    alone = [job.attack(name, s.x, s.label, s.index, s.clean) for s in samples]
    for (record, example), (alone_record, alone_example) in zip(together, alone, strict=True):
        assert record.model_dump(exclude=TIMES) == alone_record.model_dump(exclude=TIMES)
        assert (example is None) == (alone_example is None)
        assert example is None or torch.equal(example, alone_example)
    if name == "caa":
        assert any(record.success for record, _ in together)  # the comparison covers confirmed examples


def test_an_evaluate_run_with_caa_in_batches_writes_the_records_of_one_sample_at_a_time(tmp_path: Path) -> None:
    spec, attack = registry.get_defense("smoothing-digits-0.50"), small_attack("caa", iterations=18)
    config = runner.run_config(spec, "evaluate", num_samples=8, n0=20, n=500, alpha=0.01, batch_size=128,
                               seed=3, judge_n=300, confirm_n=1000, attacks=["caa"], attack_hashes=[attack.spec_hash()])
    runs = {}
    for per_batch in (1, 8):
        out = tmp_path / str(per_batch)
        engine.evaluate(spec, [attack], config, out, torch.device("cpu"), progress=False, images_per_batch=per_batch)
        rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
        runs[per_batch] = sorted(({k: v for k, v in r.items() if k not in TIMES} for r in rows),
                                 key=lambda r: r["index"])
    assert len(runs[1]) >= 3 and any(r["success"] for r in runs[1])
    assert runs[1] == runs[8]
