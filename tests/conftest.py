"""Shared fixtures: tiny models with known answers."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from scipy.optimize import Bounds, LinearConstraint, milp
from torch import nn

import rsbench
from rsbench import registry, runner
from rsbench.defenses.base import Defense
from rsbench.engine import save_example
from rsbench.goals.evasion import Evasion
from rsbench.leaderboard import admission
from rsbench.records import AttackRecord, RunConfig, SampleRecord
from rsbench.rundir import RunDir
from rsbench.specs import AttackSpec, DefenseSpec
from rsbench.submissions import sandbox


class BinaryLinear(nn.Module):
    """f(x) = class 1 iff w.x + b > 0, as logits (0, w.x + b): its exact l2 distance to the boundary is known."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w = nn.Parameter(w.flatten().clone(), requires_grad=False)
        self.b = b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = x.flatten(1) @ self.w + self.b
        return torch.stack([torch.zeros_like(score), score], dim=1)

    def distance(self, x: torch.Tensor) -> float:
        """Exact l2 distance from x to the decision boundary."""
        return float((x.flatten() @ self.w + self.b).abs() / self.w.norm())


class Constant(nn.Module):
    """Always predicts the same class, whatever the input."""

    def __init__(self, label: int, num_classes: int) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1), requires_grad=False)
        self.label, self.num_classes = label, num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(x.shape[0], self.num_classes)
        logits[:, self.label] = 1.0
        return logits


@pytest.fixture
def linear_model() -> BinaryLinear:
    return BinaryLinear(torch.tensor([1.0, -2.0, 0.5, 1.5]), -0.2)


def harness(defense: Defense, attacks: list[AttackSpec], *, sigma: float = 0.25, seed: int = 0,
            **judge: float) -> Evasion:
    """The evasion job of the engine around a hand-built smoothing defense, as one worker would hold it.

    `judge` overrides the run's judge settings (judge_n, judge_alpha, confirm_n); defaults are the protocol's.
    """
    spec = DefenseSpec(
        name="hand-built", kind="smoothing", dataset={"name": "digits"}, architecture="hand-built",
        num_classes=defense.num_classes, sigma=sigma,
        weights={"source": "file", "filename": "none", "sha256": "0" * 64},
    )
    config = RunConfig(command="evaluate", defense=spec.name, defense_hash="", num_samples=1, n0=1, n=1,
                       alpha=0.01, batch_size=defense.batch_size, seed=seed, **judge)
    return Evasion(spec, defense, attacks, config)


def write_evasion_run(folder: Path, radii: dict[str, list[float | None]], *, judge_n: int = 1500,
             confirm_n: int | None = None, num_samples: int | None = None,
             defense: str = "smoothing-digits-0.50") -> Path:
    """A finished evasion run written by hand: per attack, the best radius of each sample (None: failed).

    Every sample is correct and certified; the saved example of a success lies exactly at its radius.
    """
    spec = registry.get_defense(defense)
    attacks = [registry.get_attack(name) for name in radii]
    count = num_samples or len(next(iter(radii.values())))
    config = runner.run_config(spec, "evaluate", num_samples=count, n=1000, judge_n=judge_n, confirm_n=confirm_n,
                               goal="evasion", attacks=[a.name for a in attacks],
                               attack_hashes=[a.spec_hash() for a in attacks])
    clean = [SampleRecord(index=i, label=i % 10, prediction=i % 10, radius=0.5, correct=True, time_s=0.1)
             for i in range(count)]
    clean_run, attack_run = RunDir(folder, config, "clean.jsonl"), RunDir(folder, config, "samples.jsonl")
    for record in clean:
        clean_run.append(record)
    generator = torch.Generator().manual_seed(0)
    for name, values in radii.items():
        for index, radius in enumerate(values):
            attack_run.append(AttackRecord(
                index=index, label=index % 10, attack=name, success=radius is not None, first_radius=radius,
                first_time_s=None if radius is None else 0.1, best_radius=radius,
                best_time_s=None if radius is None else 0.1, total_time_s=1.0, cohen_radius=0.4, iterations=5,
                judge_calls=5, candidates=1 if radius else 0, rejected=0, judge_n=config.judge_n,
                judge_alpha=config.judge_alpha, confirm_n=config.confirm_n))
            if radius is not None:
                x = torch.full((1, 8, 8), 0.5)
                direction = torch.randn(1, 8, 8, generator=generator)
                save_example(folder / "adversarial", name, index, x, x + radius * direction / direction.norm())
    result = runner.summarize(spec, config, clean, torch.device("cpu")).model_copy(update={"attacks": attacks})
    attack_run.write_result(result)
    return folder


@pytest.fixture
def make_evasion_run() -> Callable[..., Path]:
    """`write_evasion_run`: a finished evasion run (on smoothing-digits-0.50 unless told) written by hand."""
    return write_evasion_run


def load_script(relative: str) -> ModuleType:
    """A script of the checkout (not part of the package), loaded from its file as the docs and CI run it."""
    path = Path(__file__).resolve().parents[1] / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def generated() -> ModuleType:
    """docs/generated.py: the documentation's generated blocks."""
    return load_script("docs/generated.py")


@pytest.fixture(scope="session")
def paper_tables() -> ModuleType:
    """benchmarks/paper_tables.py, with paper_sweeps and paper_numbers beside it."""
    return load_script("benchmarks/paper_tables.py")


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[ModuleType]:
    """A small local Ray (2 CPUs, a 100 MB object store, no dashboard), started once per test session; its
    workers import this checkout's rsbench."""
    ray = pytest.importorskip("ray")
    checkout = str(Path(rsbench.__file__).resolve().parents[1])
    ray.init(num_cpus=2, object_store_memory=100 * 2**20, include_dashboard=False, logging_level="WARNING",
             runtime_env={"env_vars": {"PYTHONPATH": checkout}})
    yield ray
    ray.shutdown()


TIED = {"caa": [0.5 if k % 2 else 0.7 for k in range(20)], "deepfool": [0.7 if k % 2 else 0.5 for k in range(20)],
        "pgd": [1.0] * 20}
"""caa and deepfool each have the track's smallest example on half of 20 samples; pgd never."""
DOMINATED = {"caa": [0.5] * 18 + [0.7] * 2, "deepfool": [0.6] * 18 + [0.4] * 2}
"""caa has the smallest example on 18 of 20 samples, deepfool on the other 2."""


@pytest.fixture(scope="session")
def ranked_tracks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A leaderboard root with two synthetic evasion tracks: `TIED` on smoothing-digits-1.00 and `DOMINATED` on
    smoothing-digits-0.25. Read it, or copy it before writing into it."""
    work = tmp_path_factory.mktemp("ranked")
    root = work / "leaderboards"
    admission.add_run(root, write_evasion_run(work / "tied", TIED, defense="smoothing-digits-1.00"))
    admission.add_run(root, write_evasion_run(work / "dominated", DOMINATED, defense="smoothing-digits-0.25"))
    return root


@pytest.fixture
def sandboxed() -> None:
    """Skip where bubblewrap cannot sandbox, except on CI, which must test the real sandbox."""
    reason = sandbox.unavailable()
    if reason and os.environ.get("CI"):
        pytest.fail(f"CI must test the sandbox (.ci/run installs bubblewrap): {reason}")
    if reason:
        pytest.skip(reason)


def tiny_relu_net(seed: int, widths: tuple[int, ...] = (4, 8, 6, 3)) -> nn.Sequential:
    """A random float64 ReLU MLP with these layer widths."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    return nn.Sequential(*layers[:-1]).double()


def ball(x: np.ndarray, eps: float, box: bool) -> tuple[np.ndarray, np.ndarray]:
    low, high = x - eps, x + eps
    return (np.clip(low, 0, 1), np.clip(high, 0, 1)) if box else (low, high)


def milp_min_margin(net: nn.Sequential, x: np.ndarray, eps: float, c: np.ndarray, box: bool) -> float:
    """Exact min of c . net(x') over the ball: big-M MILP, M from interval arithmetic."""
    linears = [(m.weight.detach().numpy(), m.bias.detach().numpy()) for m in net if isinstance(m, nn.Linear)]
    low, high = ball(x, eps, box)
    lower_bounds, upper_bounds, integral = list(low), list(high), [0] * len(x)
    rows, row_low, row_high = [], [], []
    previous = list(range(len(x)))
    for weight, bias in linears[:-1]:
        pre_low = np.clip(weight, 0, None) @ low + np.clip(weight, None, 0) @ high + bias
        pre_high = np.clip(weight, 0, None) @ high + np.clip(weight, None, 0) @ low + bias
        start = len(lower_bounds)
        z = list(range(start, start + len(bias)))
        a = list(range(start + len(bias), start + 2 * len(bias)))
        lower_bounds += [0.0] * len(bias) + [0.0] * len(bias)
        upper_bounds += list(np.maximum(pre_high, 0)) + [1.0] * len(bias)
        integral += [0] * len(bias) + [1] * len(bias)
        for i in range(len(bias)):
            follows = np.zeros(start + 2 * len(bias))  # z - w.prev
            follows[previous], follows[z[i]] = -weight[i], 1.0
            switched = follows.copy()  # z - w.prev - L a <= b - L, i.e. z <= w.prev + b - L (1 - a)
            switched[a[i]] = -pre_low[i]
            capped = np.zeros(start + 2 * len(bias))  # z - U a <= 0
            capped[z[i]], capped[a[i]] = 1.0, -pre_high[i]
            rows += [follows, switched, capped]
            row_low += [bias[i], -np.inf, -np.inf]
            row_high += [np.inf, bias[i] - pre_low[i], 0.0]
        previous, low, high = z, np.maximum(pre_low, 0), np.maximum(pre_high, 0)
    size = len(lower_bounds)
    matrix = np.array([np.pad(r, (0, size - len(r))) for r in rows])
    weight, bias = linears[-1]
    objective = np.zeros(size)
    objective[previous] = weight.T @ c
    result = milp(
        objective,
        constraints=LinearConstraint(matrix, row_low, row_high),
        integrality=np.array(integral),
        bounds=Bounds(lower_bounds, upper_bounds),
    )
    assert result.status == 0, result.message
    return float(result.fun + c @ bias)


def conv_as_dense(conv: nn.Conv2d, shape: tuple[int, int, int]) -> nn.Linear:
    """The affine map of conv on flattened inputs of `shape`, as one dense Linear layer."""
    basis = torch.eye(int(np.prod(shape)), dtype=conv.weight.dtype).view(-1, *shape)
    columns = nn.functional.conv2d(basis, conv.weight, None, conv.stride, conv.padding).flatten(1)
    dense = nn.Linear(*columns.shape).to(conv.weight.dtype)
    with torch.no_grad():
        dense.weight.copy_(columns.T)
        dense.bias.copy_(conv.bias.repeat_interleave(columns.shape[1] // conv.out_channels))
    return dense
