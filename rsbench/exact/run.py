"""The exact job: samples -> MILP verdict and the defense's own certificate -> records (appended, resumable) -> summary.

Why a job of its own: an exact verdict costs seconds to minutes per sample, so a run over a test set takes hours
and must survive being stopped. Each sample's record is appended to `samples.jsonl` as soon as it is decided, its
adversarial example first written beside it (`examples/<index>.npy`, its sha256 in the record); re-running the
same command skips the samples already recorded (`rsbench.rundir.RunDir`), so Ctrl-C loses at most the sample in
progress. `result.json` summarizes the records: the exact adversarial error with its 95% Clopper-Pearson interval
beside the defense's certified error on the same samples.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from rsbench import cluster, hub, registry, runner
from rsbench.attacks.bounded_pgd import BudgetParams, ascend, cross_entropy_gradient
from rsbench.data import load_dataset
from rsbench.defenses import load_defense
from rsbench.errors import RsbenchError
from rsbench.exact.verifier import Search, Verifier
from rsbench.progress import bar as progress_bar
from rsbench.records import Environment, RunConfig
from rsbench.rundir import RunDir
from rsbench.specs import DefenseSpec, Spec
from rsbench.stats import clopper_pearson

PGD = "pgd-linf"
"""The registry attack tried before the MILP: a cheap witness spares the solver most adversarial samples."""
EXAMPLES = "examples"
"""Folder of the run directory holding each adversarial example, `<index>.npy` (float32, the input's shape)."""


class ExactRecord(Spec):
    """One verified test sample, as written to `samples.jsonl`."""

    index: int
    """Position in the dataset split."""
    label: int
    """True class."""
    prediction: int
    """The network's label at x."""
    exact: Literal["robust", "adversarial", "unknown"]
    """robust: the MILP proved every point of the ball (inside [0, 1]) keeps the label; adversarial: a point that
    does not was found and confirmed by a forward pass (x itself when misclassified); unknown: the time limit or
    the solver's tolerance left it undecided."""
    certified: bool
    """Whether the defense's own certifier certifies its label at x within epsilon (`certified_at`)."""
    distance: float | None = None
    """adversarial: the l_inf distance of the example from x (with `minimal`: the closest one's)."""
    distance_bound: float | None = None
    """minimal: a proven lower bound on the distance of every adversarial example in the ball (= distance when the
    search was exact; epsilon when robust)."""
    margin_bound: float | None = None
    """robust, without minimal: a proven lower bound on f_label - f_j over the ball, for every j."""
    example: str | None = None
    """adversarial: the example's file, relative to the run directory."""
    example_sha256: str | None = None
    """sha256 of that file."""
    found_by: Literal["clean", "pgd", "milp"] | None = None
    """adversarial: x itself is misclassified, bounded PGD found the example (tried first, with pgd-linf's
    params), or the MILP did."""
    pgd: bool | None = None
    """Whether bounded PGD found an adversarial example; null where it did not run: x misclassified, or the bounds
    proved the sample robust (so no attack can succeed)."""
    neurons: int
    """ReLUs of the network."""
    stable: int
    """ReLUs whose state the bounds fixed over the ball (no binary variable)."""
    solves: int
    """MILPs solved for the sample."""
    time_s: float
    """Wall-clock seconds for the sample: bounds and MILPs (not the defense's certificate)."""


class Rate(Spec):
    """A proportion of samples with its two-sided 95% Clopper-Pearson interval."""

    count: int
    rate: float
    ci_low: float
    ci_high: float


class ExactResult(Spec):
    """What `result.json` of an exact run holds."""

    config: RunConfig
    defense: DefenseSpec
    environment: Environment
    weights_sha256: str | None
    finished_at: str
    num_samples: int
    epsilon: float
    exact_adversarial: Rate
    """Samples where an adversarial example exists (misclassified ones included)."""
    unknown: Rate
    """Samples left undecided: between the two ends of the adversarial error's range."""
    certified_error: Rate
    """Samples the defense's certifier does not certify correctly at epsilon."""
    pgd_error: Rate
    """Samples misclassified or broken by bounded PGD (pgd-linf's params), which ran wherever the bounds left a
    class open (elsewhere no attack can succeed)."""
    median_time_s: float
    mean_time_s: float
    stable_share: float = Field(ge=0, le=1)
    """Share of all the samples' ReLUs that the bounds made stable."""


def exact_config(spec: DefenseSpec, *, num_samples: int, epsilon: float | None = None, minimal: bool = False,
                 time_limit: float | None = None, workers: int = 1) -> RunConfig:
    """An exact run's config, after refusing what a MILP cannot verify."""
    if spec.kind == "smoothing":
        raise RsbenchError(f"{spec.name} is a smoothing defense: its classifier is randomized, and the MILP verifies "
                           "deterministic ReLU networks (kw, crownibp, gloro, plugins)")
    if spec.norm != "linf":
        raise RsbenchError(f"the MILP verifies the linf norm, but {spec.name} is certified in {spec.norm}")
    if epsilon is not None and epsilon <= 0:
        raise RsbenchError(f"--epsilon must be positive, got {epsilon}")
    if time_limit is not None and time_limit <= 0:
        raise RsbenchError(f"--time-limit must be positive, got {time_limit}")
    eps = epsilon if epsilon is not None else spec.epsilon
    if eps is None:
        raise RsbenchError(f"{spec.name} has no epsilon of its own: give --epsilon")
    return runner.run_config(spec, "exact", num_samples=num_samples, epsilon=eps, minimal=minimal,
                             time_limit=time_limit, workers=workers)


Outcome = tuple[ExactRecord, "torch.Tensor | None"]
"""A verified sample: its record (without the example's file) and its example, which only the driver writes."""


class ExactWorker:
    """Verifies a batch of sample indices; built once per process (or Ray actor), it holds the data, the defense and
    the network's MILP."""

    def __init__(self, spec: DefenseSpec, config: RunConfig) -> None:
        self.config = config
        self.dataset = load_dataset(spec.dataset.name, config.split, spec.dataset.root)
        self.defense = load_defense(spec, "cpu")
        self.verifier = Verifier(self.defense.model, tuple(self.dataset[0][0].shape))

    def __call__(self, indices: list[int]) -> list[Outcome]:
        return [self.verify_sample(index) for index in indices]

    def verify_sample(self, index: int) -> Outcome:
        """One sample's record and example."""
        x, label, eps = self.dataset[index][0], int(self.dataset[index][1]), float(self.config.epsilon)
        started = time.perf_counter()
        solve = self.verifier.closest if self.config.minimal else self.verifier.decide
        verdict = solve(x, label, eps, self.config.time_limit, search=pgd_search(self.defense.model, self.config.seed,
                                                                                 index))
        seconds = time.perf_counter() - started
        record = ExactRecord(
            index=index, label=label, prediction=self.verifier.predict(x), exact=verdict.exact,
            certified=bool(self.defense.certified_at(x, eps)), distance=verdict.distance,
            distance_bound=verdict.distance_bound, margin_bound=verdict.margin_bound,
            found_by="pgd" if verdict.found_by == "search" else verdict.found_by, pgd=verdict.search_found,
            neurons=verdict.neurons, stable=verdict.stable, solves=verdict.solves, time_s=seconds,
        )
        return record, verdict.example


def verify(spec: DefenseSpec, config: RunConfig, out: Path, *, progress: bool = True, backend: str = "local",
           address: str | None = None) -> ExactResult:
    """Verify the first `config.num_samples` samples of the split exactly, resuming from `out` if it holds records.

    `backend` local verifies in this process; ray spreads the samples over `config.workers` Ray actors (a local Ray,
    or the cluster at `address`), and this process alone writes the records and examples, as each sample finishes.
    """
    size = len(load_dataset(spec.dataset.name, config.split, spec.dataset.root))
    if config.num_samples > size:
        raise RsbenchError(f"--num-samples {config.num_samples} exceeds the {size} samples of the split")
    if backend == "local" and config.workers != 1:
        raise RsbenchError("--workers above 1 needs --backend ray: the local backend verifies in one process")
    run = RunDir(out, config)
    done = {record.index for record in run.records(ExactRecord)}
    todo = [i for i in range(config.num_samples) if i not in done]
    if todo:
        if backend == "ray":
            batches = cluster.run_batches(ExactWorker, [[i] for i in todo], (spec, config), config.workers,
                                          torch.device("cpu"), address)
        else:
            worker = ExactWorker(spec, config)
            batches = ([worker.verify_sample(index)] for index in todo)
        with progress_bar(len(todo), f"exact {spec.name}", "sample", enabled=progress) as bar:
            for outcomes in batches:
                for record, example in outcomes:
                    if record.index in done:  # a retried batch's sample, already appended
                        continue
                    if example is not None:
                        path, digest = save_example(run.path, record.index, example)
                        record = record.model_copy(update={"example": path, "example_sha256": digest})
                    run.append(record)
                    done.add(record.index)
                bar.update(len(outcomes))
    records = exact_records(out, config)
    result = summarize(spec, config, records)
    run.write_result(result)
    return result


def pgd_search(model: torch.nn.Module, seed: int, index: int) -> Search:
    """Bounded PGD with the registry's pgd-linf params, on its own noise stream of the sample: each iterate is
    returned as soon as the model misclassifies it."""
    params = BudgetParams(**registry.get_attack(PGD).params)

    def search(x: torch.Tensor, label: int, eps: float) -> torch.Tensor | None:
        generator = runner.stream(seed, index, PGD, "exact", torch.device("cpu"))
        for x_adv in ascend(x, cross_entropy_gradient(model, label), eps, "linf", params, generator):
            with torch.no_grad():
                if int(model(x_adv.unsqueeze(0)).argmax(1)) != label:
                    return x_adv.detach()
        return None

    return search


def save_example(folder: Path, index: int, example: torch.Tensor) -> tuple[str, str]:
    """Write `examples/<index>.npy` atomically; returns its path relative to `folder` and its sha256."""
    relative = Path(EXAMPLES) / f"{index:05d}.npy"
    path = folder / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("wb") as handle:
        np.save(handle, example.detach().cpu().numpy().astype(np.float32))
    os.replace(temporary, path)
    return relative.as_posix(), hashlib.sha256(path.read_bytes()).hexdigest()


def exact_records(out: Path, config: RunConfig) -> list[ExactRecord]:
    """The records of an exact run directory, in sample order, up to the config's number of samples."""
    records = RunDir(out, config).records(ExactRecord)
    return sorted((r for r in records if r.index < config.num_samples), key=lambda r: r.index)


def rate(count: int, total: int) -> Rate:
    """`count` of `total` with its 95% Clopper-Pearson interval."""
    low, high = clopper_pearson(count, total, 0.05) if total else (0.0, 1.0)
    return Rate(count=count, rate=count / total if total else 0.0, ci_low=low, ci_high=high)


def summarize(spec: DefenseSpec, config: RunConfig, records: list[ExactRecord]) -> ExactResult:
    """The summary of an exact run from its records."""
    total, times = len(records), [r.time_s for r in records] or [0.0]
    neurons = sum(r.neurons for r in records)
    return ExactResult(
        config=config, defense=spec, environment=runner.environment(torch.device("cpu")),
        weights_sha256=hub.pinned_sha256(spec.weights),
        finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), num_samples=total,
        epsilon=float(config.epsilon),
        exact_adversarial=rate(sum(r.exact == "adversarial" for r in records), total),
        unknown=rate(sum(r.exact == "unknown" for r in records), total),
        certified_error=rate(sum(not (r.certified and r.prediction == r.label) for r in records), total),
        pgd_error=rate(sum(r.found_by == "clean" or bool(r.pgd) for r in records), total),
        median_time_s=statistics.median(times), mean_time_s=statistics.fmean(times),
        stable_share=sum(r.stable for r in records) / neurons if neurons else 1.0,
    )
