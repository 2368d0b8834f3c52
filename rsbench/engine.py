"""The engine every goal runs on: tasks, workers, resume and the run directory.

For each of the first K test samples the defense certifies the clean input (records in
`clean.jsonl`, the same as `rsbench certify` writes). Samples the run's goal lets through
(`Goal.qualifies`; for every goal: classified correctly with a certificate) are attacked by
every named attack, in order, with `workers` > 1 several samples at once, each in its own
process or Ray actor. The goal (`rsbench.goals`) runs and judges one attack on one sample; the engine
appends its record to `samples.jsonl` as soon as it finishes, from this process alone, so
re-running the same command resumes where it stopped, and writes the goal's summary
(`result.json`), table and plots. Every noise stream is seeded from (seed, sample, attack,
purpose) (`runner.stream`), so a record depends neither on the workers nor on interruptions.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel

from rsbench import batching, runner
from rsbench.data import load_dataset
from rsbench.errors import RsbenchError
from rsbench.goals import Goal, Sample, check_attack, goal_of
from rsbench.progress import bar as bar_of
from rsbench.records import RunConfig, RunResult, SampleRecord
from rsbench.rundir import RunDir
from rsbench.specs import AttackSpec, DefenseSpec

Backend = Literal["local", "ray"]
"""Where a run's batches are computed: this machine's processes, or Ray actors (`rsbench.cluster`)."""


def save_example(folder: Path, attack: str, index: int, x: torch.Tensor, x_adv: torch.Tensor) -> None:
    """Add (or replace) a sample's best example in `folder/<attack>.pt`, written atomically.

    The file holds `index` (K,), `x` and `x_adv` (K, C, H, W), one row per broken sample.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{attack}.pt"
    saved = torch.load(path, weights_only=True) if path.exists() else None
    rows = [] if saved is None else [i for i, kept in enumerate(saved["index"].tolist()) if kept != index]
    new = {"index": torch.tensor([index]), "x": x.cpu().unsqueeze(0), "x_adv": x_adv.cpu().unsqueeze(0)}
    if saved is not None:
        new = {key: torch.cat([saved[key][rows], value]) for key, value in new.items()}
    temporary = path.with_name(path.name + ".tmp")
    torch.save(new, temporary)
    os.replace(temporary, path)


@dataclass
class SampleTask:
    """What is left to do on one test sample: certify it (when `clean` is None) and run `attacks` on it."""

    index: int
    clean: SampleRecord | None
    attacks: list[str]


@dataclass
class SampleOutcome:
    """A sample's clean certificate and, per attack run, its record and best example (None when it failed)."""

    index: int
    clean: SampleRecord
    attacks: list[tuple[BaseModel, torch.Tensor | None]]


class RunFailed(RsbenchError):
    """A run stopped by a failing step: `step` says which samples (and labels) and step, in one line; `details` is
    its traceback, written to the run's error.log."""

    def __init__(self, message: str, step: str, details: str) -> None:
        super().__init__(message)
        self.step, self.details = step, details


class StepFailed(Exception):
    """A step of a batch (certifying, or one attack) raised in a worker: which samples and step, the error in one
    line, its traceback, and the outcomes the batch finished before it, which the engine keeps."""

    def __init__(self, message: str, details: str, finished: list[SampleOutcome]) -> None:
        super().__init__(message, details, finished)  # the arguments rebuild it when it crosses processes
        self.message, self.details, self.finished = message, details, finished

    def __str__(self) -> str:
        return self.message


def _samples(indices: Sequence[int], labels: dict[int, int] | None = None) -> str:
    """The samples named, with their labels when known (an attack that fails on one class says which)."""
    named = [f"{i} (label {labels[i]})" if labels and i in labels else str(i) for i in indices]
    return f"sample {named[0]}" if len(named) == 1 else f"samples {', '.join(named)}"


Report = Callable[[str], None]
"""Where a worker says what it is doing ("sample 3: caa"), for the progress display."""


class SampleWorker:
    """Certifies and attacks a batch of samples at a time; built once per process, it holds the model and the
    goal's job. The batch's clean inputs are certified in shared passes (`Defense.certify_many`) and each
    attack runs on the batch's qualifying samples at once (`Goal.attack_many`); neither changes a record."""

    report: Report | None = None
    """Told what the worker starts next; None: nobody listens."""

    def __init__(self, defense_spec: DefenseSpec, attack_specs: list[AttackSpec], config: RunConfig,
                 device: torch.device) -> None:
        self.config, self.device = config, device
        self.dataset = load_dataset(defense_spec.dataset.name, config.split, defense_spec.dataset.root)
        defense = runner.load_for_run(defense_spec, config, device)
        self.goal: Goal = goal_of(attack_specs)(defense_spec, defense, attack_specs, config)
        self.order = [spec.name for spec in attack_specs]
        self.labels: dict[int, int] = {}

    def __call__(self, tasks: list[SampleTask]) -> list[SampleOutcome]:
        inputs = {t.index: (self.dataset[t.index][0], int(self.dataset[t.index][1])) for t in tasks}
        self.labels = {i: label for i, (_, label) in inputs.items()}  # named when a step fails
        todo = [(*inputs[t.index], t.index) for t in tasks if t.clean is None]
        certified = {r.index: r for r in self._step(
            [i for *_, i in todo], "certifying", [],
            lambda: runner.certify_samples(self.goal.defense, todo, self.config.seed, self.device))}
        clean = {t.index: t.clean or certified[t.index] for t in tasks}
        attacked: dict[int, list] = {t.index: [] for t in tasks}
        for name in self.order:
            samples = [Sample(*inputs[t.index], t.index, clean[t.index]) for t in tasks
                       if name in t.attacks and self.goal.qualifies(self.config, clean[t.index])]
            finished = [SampleOutcome(t.index, clean[t.index], attacked[t.index]) for t in tasks]
            outcomes = self._step([s.index for s in samples], name, finished,
                                  lambda: self.goal.attack_many(name, samples))
            for sample, outcome in zip(samples, outcomes):
                attacked[sample.index].append(outcome)
        return [SampleOutcome(t.index, clean[t.index], attacked[t.index]) for t in tasks]

    def _step(self, indices: list[int], step: str, finished: list[SampleOutcome], work: Callable[[], list]) -> list:
        """Run one step of the batch on the samples `indices` (nothing to do when empty), saying so first; a
        failure becomes a StepFailed naming the samples and the step, carrying what the batch `finished`."""
        if not indices:
            return []
        if self.report is not None:
            self.report(f"{_samples(indices)}: {step}")
        try:
            return work()
        except Exception as error:  # noqa: BLE001 - any failure of an attack is reported with where it happened
            where = (f"certifying {_samples(indices, self.labels)} failed" if step == "certifying"
                     else f"attack {step} failed on {_samples(indices, self.labels)}")
            message = f"{where}: {type(error).__name__}: {' '.join(str(error).split())}"
            raise StepFailed(message, traceback.format_exc(), finished) from None


_WORKER: SampleWorker | Exception | None = None
"""The SampleWorker of a pool process, or why it could not be built (see `run_tasks`)."""


def _start_worker(threads: int, reports: Any, *args: object) -> None:
    """Pool initializer: leave Ctrl-C to the parent, share the CPU fairly, build the worker, whose reports go to
    the parent through the queue `reports` as (process id, what it does).

    A failure (missing weights, say) is kept and raised with the first task, so that it reaches
    the parent as the error it is; raised here, the pool would start new workers forever.
    """
    global _WORKER
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    try:
        _WORKER = SampleWorker(*args)
        _WORKER.report = lambda text: reports.put((os.getpid(), text))
    except Exception as error:  # noqa: BLE001 - re-raised in _run_in_worker
        _WORKER = error


def _run_in_worker(batch: list[SampleTask]) -> list[SampleOutcome]:
    if isinstance(_WORKER, Exception):
        raise _WORKER
    assert _WORKER is not None, "_start_worker did not run"
    return _WORKER(batch)


def run_tasks(batches: list[list[SampleTask]], args: tuple, workers: int, backend: Backend = "local",
              address: str | None = None, report: Report | None = None) -> Iterator[list[SampleOutcome]]:
    """Outcomes of each batch of tasks: in order with one local worker, as they finish with several processes
    or on Ray (`rsbench.cluster`, on the cluster at `address`, else a local one). Local workers tell `report`
    what they start (several processes: what each is doing, joined).

    Records do not depend on the worker that computes them (every noise stream is seeded
    from the sample and the attack), so only their times change with `workers` and `backend`.
    """
    if backend == "ray":
        from rsbench import cluster

        device: torch.device = args[-1]  # SampleWorker's arguments end with the device
        yield from cluster.run_batches(SampleWorker, batches, args, workers, device, address)
        return
    if workers == 1:
        worker = SampleWorker(*args)
        worker.report = report
        yield from map(worker, batches)
        return
    threads = max(1, cores() // workers)
    context = multiprocessing.get_context("spawn")
    reports, stop = context.SimpleQueue(), threading.Event()
    relay = threading.Thread(target=_relay, args=(reports, report, stop), daemon=True)
    relay.start()
    pool = context.Pool(workers, _start_worker, (threads, reports, *args))
    try:
        yield from pool.imap_unordered(_run_in_worker, batches)
        pool.close()
    finally:
        pool.terminate()
        pool.join()
        # No message through the queue: a worker terminated while it was writing a report may hold the queue's
        # write lock forever, and a put would then never return.
        stop.set()
        relay.join(timeout=1)


def _relay(reports: Any, report: Report | None, stop: threading.Event) -> None:
    """Pass what the worker processes say they do on to `report`, one entry per process, until `stop` is set."""
    doing: dict[int, str] = {}
    while not stop.is_set():
        if reports.empty():  # polls without blocking, so that `stop` is seen
            stop.wait(0.05)
            continue
        process, text = reports.get()
        doing[process] = text
        if report is not None:
            report("; ".join(doing[p] for p in sorted(doing)))


def cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_workers(workers: int | None, device: torch.device, backend: Backend = "local") -> int:
    """`workers`, or when not given: for local processes on the CPU one per core, each with one thread (on small
    models several single-thread processes beat one process whose threads wait for each other, the more so when
    other programs share the cores); on a GPU, or on Ray, one."""
    if workers is not None:
        return workers
    return cores() if device.type == "cpu" and backend == "local" else 1


def evaluate_config(defense_spec: DefenseSpec, attack_specs: Sequence[AttackSpec], *, epsilon: float | None = None,
                    **settings: object) -> RunConfig:
    """The config of an evaluate run: `runner.run_config` with `settings`, plus the attacks' goal, names and spec
    hashes and the run's radius (`epsilon`, else the defense's default for the goal)."""
    goal = goal_of(attack_specs).name
    return runner.run_config(
        defense_spec, "evaluate", goal=goal, epsilon=runner.default_epsilon(defense_spec, goal, epsilon),
        attacks=[s.name for s in attack_specs], attack_hashes=[s.spec_hash() for s in attack_specs], **settings,
    )


def evaluate(
    defense_spec: DefenseSpec,
    attack_specs: list[AttackSpec],
    config: RunConfig,
    out: Path,
    device: torch.device,
    *,
    save_examples: bool = False,
    progress: bool = True,
    images_per_batch: int | None = None,
    backend: Backend = "local",
    address: str | None = None,
    indices: Sequence[int] | None = None,
) -> RunResult:
    """Certify and attack the first `config.num_samples` test samples (or only `indices`, among them), resuming
    from `out`; returns the summary.

    With `config.workers` > 1 that many processes (`backend` "local") or Ray actors ("ray", on the cluster at
    `address`, else a local Ray) take batches of samples side by side; this process alone writes the records,
    once per (sample, attack) even if a retried batch delivers it again. `images_per_batch` samples go to a
    worker at once (default 1 on the CPU, chosen from free memory on a GPU).
    """
    check_backend(backend, address)
    runner.loaded_commit()  # the code this run starts with, whatever the checkout holds when it ends
    goal = goal_of(attack_specs)
    if config.goal != goal.name:
        raise RsbenchError(f"the run's config names goal {config.goal!r}, its attacks {goal.name!r}")
    if len({s.name for s in attack_specs}) != len(attack_specs):
        raise RsbenchError("each --attack may be named only once")
    for spec in attack_specs:
        check_attack(spec, defense_spec)
    dataset = load_dataset(defense_spec.dataset.name, config.split, defense_spec.dataset.root)
    if config.num_samples > len(dataset):
        raise RsbenchError(f"--num-samples {config.num_samples} exceeds the {len(dataset)} samples of the split")
    clean_run = RunDir(out, config, "clean.jsonl")
    attack_run = RunDir(out, config, "samples.jsonl")
    clean = {r.index: r for r in clean_run.records(SampleRecord)}
    done = {(r.index, r.attack) for r in attack_run.records(goal.record_type)}
    tasks = []
    chosen = range(config.num_samples) if indices is None else sorted(set(indices))
    if any(not 0 <= i < config.num_samples for i in chosen):
        raise RsbenchError(f"the samples to run must lie among the first {config.num_samples}")
    for index in chosen:
        left = [s.name for s in attack_specs if (index, s.name) not in done]
        if index not in clean or (goal.qualifies(config, clean[index]) and left):
            tasks.append(SampleTask(index, clean.get(index), left))
    if tasks:
        sharing = config.workers if backend == "local" else 1  # Ray actors each claim a whole GPU
        per_batch = images_per_batch or batch_for_device(defense_spec, config, dataset[0][0].shape, device, sharing)
        batches = list(batching.chunked(tasks, per_batch))
        with bar_of(len(tasks), f"{goal.name} {defense_spec.name}", "sample", enabled=progress) as bar:
            outcomes = run_tasks(batches, (defense_spec, attack_specs, config, device),
                                 min(config.workers, len(batches)), backend, address, report=bar.set_postfix_str)

            def keep(batch: list[SampleOutcome]) -> None:
                for outcome in batch:
                    if outcome.index not in clean:
                        clean[outcome.index] = outcome.clean
                        clean_run.append(outcome.clean)
                    for record, example in outcome.attacks:
                        if (outcome.index, record.attack) in done:
                            continue  # delivered again by a retried batch: the same record, appended already
                        done.add((outcome.index, record.attack))
                        if (save_examples or goal.keeps_examples) and example is not None:
                            save_example(out / "adversarial", record.attack, outcome.index,
                                         dataset[outcome.index][0], example)
                        attack_run.append(record)

            try:
                for batch in outcomes:
                    keep(batch)
                    bar.update(len(batch))
            except StepFailed as failure:
                keep(failure.finished)
                (out / "error.log").write_text(failure.details)
                raise RunFailed(f"{failure.message} (traceback in {out / 'error.log'}); the finished records are "
                                "kept: re-run the same command to resume", failure.message, failure.details) from None
    return summarize(goal, defense_spec, attack_specs, config, clean_run, attack_run, device)


def check_backend(backend: Backend, address: str | None) -> None:
    """Refuse, before the run directory is written, an address without Ray, or the Ray backend without Ray."""
    if backend == "ray":
        from rsbench import cluster

        cluster.import_ray()
    elif address is not None:
        raise RsbenchError("--address names a Ray cluster; it needs --backend ray")


def batch_for_device(defense_spec: DefenseSpec, config: RunConfig, shape: Sequence[int],
                     device: torch.device, sharing: int = 1) -> int:
    """Samples per batch from the device's free memory, split between the `sharing` processes that use it
    (`batching.images_per_batch`); 1 on the CPU."""
    if device.type != "cuda":
        return 1
    model = runner.defense_model(runner.load_for_run(defense_spec, config, device))
    per_batch = batching.images_per_batch(model, shape, config.batch_size, device, sharing=sharing)
    del model
    torch.cuda.empty_cache()  # hand the probe's memory back before the workers load their own models
    return per_batch


def summarize(
    goal: type[Goal],
    defense_spec: DefenseSpec,
    attack_specs: Sequence[AttackSpec],
    config: RunConfig,
    clean_run: RunDir,
    attack_run: RunDir,
    device: torch.device,
) -> RunResult:
    """Write result.json (clean certification plus the goal's metrics) and the goal's plots."""
    clean = sorted((r for r in clean_run.records(SampleRecord) if r.index < config.num_samples), key=lambda r: r.index)
    order = {s.name: k for k, s in enumerate(attack_specs)}
    records = sorted(
        (r for r in attack_run.records(goal.record_type) if r.index < config.num_samples and r.attack in order),
        key=lambda r: (r.index, order[r.attack]),
    )
    result = runner.summarize(defense_spec, config, clean, device).model_copy(
        update={
            "attacks": list(attack_specs),
            "metrics": goal.summarize(defense_spec, config, clean, records),
            "statistics": goal.note(defense_spec),
        }
    )
    attack_run.write_result(result)
    goal.plots(defense_spec, clean, records, attack_run.path)
    return result


def format_table(result: RunResult) -> str:
    """The run's table, in its goal's layout."""
    return goal_of(result.attacks).format_table(result)


def format_headline(result: RunResult) -> str:
    """One line per attack with the goal's first numbers (evasion of smoothing: success and r50 beside the median
    certified radius), which `evaluate` prints before its tables."""
    return "\n".join(goal_of(result.attacks).headline(result))
