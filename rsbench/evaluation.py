"""The evaluate job: certify clean samples, attack the certified ones, judge, record, summarize.

For each of the first K test samples the defense certifies the clean input (records in
`clean.jsonl`, the same as `rsbench certify` writes). Samples it classifies correctly
with a certificate are attacked by every named attack, in order (with `workers` > 1,
several samples at once, each in its own process). Each attack optimises the smoothed
view its own N, alpha and temperature describe, but every attack of the run is judged
alike, with the run's protocol: a Tracker whose judge counts hard votes of `judge_n`
fresh copies at `judge_alpha` (`success.make_judge`), then a confirmation of the kept
candidates on `confirm_n` copies of another fresh stream (`success.confirm`). Every
stream is seeded from (seed, sample, attack, purpose), so a record does not depend on
which attacks ran before it or on interruptions. One AttackRecord per (sample, attack)
is appended to `samples.jsonl` as soon as the attack finishes; re-running resumes.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from rsbench import metrics, plots, registry, runner
from rsbench.attacks.base import Attack, Found, Tracker, view_options
from rsbench.attacks.success import confirm, make_judge
from rsbench.data import load_dataset
from rsbench.defenses import load_defense
from rsbench.defenses.smoothed_view import SmoothedView
from rsbench.defenses.smoothing import Smoothing
from rsbench.errors import RsbenchError
from rsbench.rundir import RunDir
from rsbench.specs import AttackRecord, AttackSpec, DefenseSpec, RunConfig, RunResult, SampleRecord

STATISTICS_NOTE = (
    "Clean samples are certified as by `rsbench certify` (Clopper-Pearson, n noise samples, alpha). "
    "A candidate is accepted when hard votes of the base classifier on judge_n fresh noise draws give "
    "another class a Goodman lower bound above every other class's upper bound at judge_alpha, the same "
    "for every attack; it is reported only if the same test passes again on confirm_n copies of an "
    "independent stream (Bonferroni over the candidates tested, so all confirmations together err with "
    "probability at most judge_alpha per attack and sample). cohen_radius is the radius "
    "sigma/2 (PhiInv(lower of top) - PhiInv(upper of runner-up)) from hard votes at the clean sample with "
    "judge_n and judge_alpha. Medians are over each attack's successes (total time: over attacked samples); "
    "percentages are over the attacked samples (correct and certified)."
)


def stream(seed: int, index: int, attack: str, purpose: str, device: torch.device) -> torch.Generator:
    """A generator for one (sample, attack, purpose), independent of every other one."""
    keys = [seed, index, zlib.crc32(attack.encode()), zlib.crc32(purpose.encode())]
    state = np.random.SeedSequence(keys).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator(device=device).manual_seed(int(state) & ((1 << 63) - 1))


@dataclass
class PreparedAttack:
    """An attack ready to run: its spec, implementation and the view its params describe."""

    spec: AttackSpec
    attack: Attack
    view: SmoothedView


def prepare(spec: AttackSpec, defense: Smoothing) -> PreparedAttack:
    """Instantiate an attack from its spec and build the view it optimises."""
    if spec.goal != "evasion" or spec.norm != "l2":
        raise RsbenchError(f"evaluate runs l2 evasion attacks; {spec.name!r} is {spec.norm} {spec.goal}")
    params = registry.attack_params(spec)
    attack = registry.resolve(spec.implementation)(params)
    return PreparedAttack(spec, attack, defense.surrogate(**view_options(params)))


def judge_view(defense: Smoothing, config: RunConfig) -> SmoothedView:
    """The view whose hard votes judge every attack of the run: the protocol's N and alpha."""
    return defense.surrogate(num_noise=config.judge_n, alpha=config.judge_alpha)


def attack_sample(
    prepared: PreparedAttack, judging: SmoothedView, x: torch.Tensor, label: int, index: int, config: RunConfig
) -> tuple[AttackRecord, Found | None]:
    """Run one attack on one certified sample, judge and confirm it; returns its record and best confirmed example."""
    name, device, seed = prepared.spec.name, prepared.view.device, config.seed
    x = x.to(device)
    bound = judging.hard_radius(x, stream(seed, index, "", "cohen", device))
    tracker = Tracker(x, make_judge(judging, label, stream(seed, index, name, "judge", device)), norm=prepared.spec.norm)
    prepared.attack.run(prepared.view, x, label, tracker, stream(seed, index, name, "attack", device))
    total_time_s = time.perf_counter() - tracker.started
    kept = tracker.candidates()
    confirmed = confirm(judging, kept, label, config.confirm_n, stream(seed, index, name, "confirm", device))
    first = min(confirmed, key=lambda f: f.time_s, default=None)
    best = min(confirmed, key=lambda f: f.radius, default=None)
    record = AttackRecord(
        index=index,
        label=label,
        attack=name,
        success=best is not None,
        first_radius=first.radius if first else None,
        first_time_s=first.time_s if first else None,
        best_radius=best.radius if best else None,
        best_time_s=best.time_s if best else None,
        total_time_s=total_time_s,
        cohen_radius=bound,
        iterations=tracker.iterations,
        judge_calls=tracker.judge_calls,
        candidates=len(kept),
        rejected=len(kept) - len(confirmed),
        judge_n=config.judge_n,
        judge_alpha=config.judge_alpha,
        confirm_n=config.confirm_n,
    )
    return record, best


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
    attacks: list[tuple[AttackRecord, torch.Tensor | None]]


class SampleWorker:
    """Certifies and attacks one sample at a time; built once per process, it holds the model and the attacks."""

    def __init__(self, defense_spec: DefenseSpec, attack_specs: list[AttackSpec], config: RunConfig,
                 device: torch.device) -> None:
        self.config, self.device = config, device
        self.dataset = load_dataset(defense_spec.dataset.name, config.split, defense_spec.dataset.root)
        self.defense = load_defense(runner.spec_for_run(defense_spec, config), device)
        self.prepared = {spec.name: prepare(spec, self.defense) for spec in attack_specs}
        self.judging = judge_view(self.defense, config)

    def __call__(self, task: SampleTask) -> SampleOutcome:
        x, label = self.dataset[task.index]
        clean = task.clean or runner.certify_sample(
            self.defense, x, int(label), task.index, self.config.seed, self.device
        )
        attacks = []
        if clean.correct:
            for name in task.attacks:
                record, best = attack_sample(self.prepared[name], self.judging, x, int(label), task.index, self.config)
                attacks.append((record, best.x_adv if best else None))
        return SampleOutcome(task.index, clean, attacks)


_WORKER: SampleWorker | Exception | None = None
"""The SampleWorker of a pool process, or why it could not be built (see `run_tasks`)."""


def _start_worker(threads: int, *args: object) -> None:
    """Pool initializer: leave Ctrl-C to the parent, share the CPU fairly, build the worker.

    A failure (missing weights, say) is kept and raised with the first task, so that it reaches
    the parent as the error it is; raised here, the pool would start new workers forever.
    """
    global _WORKER
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    try:
        _WORKER = SampleWorker(*args)
    except Exception as error:  # noqa: BLE001 - re-raised in _run_in_worker
        _WORKER = error


def _run_in_worker(task: SampleTask) -> SampleOutcome:
    if isinstance(_WORKER, Exception):
        raise _WORKER
    assert _WORKER is not None, "_start_worker did not run"
    return _WORKER(task)


def run_tasks(tasks: list[SampleTask], args: tuple, workers: int) -> Iterator[SampleOutcome]:
    """Outcomes of `tasks`, in order with one worker, as they finish with several processes.

    Records do not depend on the worker that computes them (every noise stream is seeded
    from the sample and the attack), so only their times change with `workers`.
    """
    if workers == 1:
        yield from map(SampleWorker(*args), tasks)
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    pool = multiprocessing.get_context("spawn").Pool(workers, _start_worker, (threads, *args))
    try:
        yield from pool.imap_unordered(_run_in_worker, tasks)
        pool.close()
    finally:
        pool.terminate()
        pool.join()


def evaluate(
    defense_spec: DefenseSpec,
    attack_specs: list[AttackSpec],
    config: RunConfig,
    out: Path,
    device: torch.device,
    *,
    save_examples: bool = False,
    progress: bool = True,
) -> RunResult:
    """Certify and attack the first `config.num_samples` test samples, resuming from `out`; returns the summary.

    With `config.workers` > 1 that many processes take samples side by side; this process alone writes the records.
    """
    if defense_spec.kind != "smoothing":
        raise RsbenchError(f"evaluate attacks smoothing defenses; {defense_spec.name!r} is {defense_spec.kind}")
    if len({s.name for s in attack_specs}) != len(attack_specs):
        raise RsbenchError("each --attack may be named only once")
    dataset = load_dataset(defense_spec.dataset.name, config.split, defense_spec.dataset.root)
    if config.num_samples > len(dataset):
        raise RsbenchError(f"--num-samples {config.num_samples} exceeds the {len(dataset)} samples of the split")
    clean_run = RunDir(out, config, "clean.jsonl")
    attack_run = RunDir(out, config, "samples.jsonl")
    clean = {r.index: r for r in clean_run.records(SampleRecord)}
    done = {(r.index, r.attack) for r in attack_run.records(AttackRecord)}
    tasks = []
    for index in range(config.num_samples):
        left = [s.name for s in attack_specs if (index, s.name) not in done]
        if index not in clean or (clean[index].correct and left):
            tasks.append(SampleTask(index, clean.get(index), left))
    if tasks:
        outcomes = run_tasks(tasks, (defense_spec, attack_specs, config, device), min(config.workers, len(tasks)))
        bar = tqdm(outcomes, total=len(tasks), desc=f"evaluate {defense_spec.name}", unit="sample",
                   disable=not progress)
        for outcome in bar:
            if outcome.index not in clean:
                clean_run.append(outcome.clean)
            for record, x_adv in outcome.attacks:
                if save_examples and x_adv is not None:
                    save_example(out / "adversarial", record.attack, outcome.index, dataset[outcome.index][0], x_adv)
                attack_run.append(record)
    return summarize(defense_spec, attack_specs, config, clean_run, attack_run, device)


def summarize(
    defense_spec: DefenseSpec,
    attack_specs: list[AttackSpec],
    config: RunConfig,
    clean_run: RunDir,
    attack_run: RunDir,
    device: torch.device,
) -> RunResult:
    """Write result.json (clean certification plus Table 1 per attack) and attack_proportion.png."""
    clean = sorted((r for r in clean_run.records(SampleRecord) if r.index < config.num_samples), key=lambda r: r.index)
    order = {s.name: k for k, s in enumerate(attack_specs)}
    records = sorted(
        (r for r in attack_run.records(AttackRecord) if r.index < config.num_samples and r.attack in order),
        key=lambda r: (r.index, order[r.attack]),
    )
    table = metrics.attack_table(records)
    result = runner.summarize(defense_spec, config, clean, device).model_copy(
        update={
            "attacks": attack_specs,
            "metrics": {"attacked_samples": len({r.index for r in records}), "attacks": {k: v.model_dump() for k, v in table.items()}},
            "statistics": STATISTICS_NOTE,
        }
    )
    attack_run.write_result(result)
    if records:
        plots.attack_proportion_plot(records, defense_spec.name, attack_run.path / "attack_proportion.png")
    return result


TABLE_LEGEND = (
    "Success: % of attacked samples with a confirmed example. Best: % where this attack's smallest example is the\n"
    "smallest of the run. r50: median smallest l2 radius. %-Cohen: median excess of that radius over the clean\n"
    "certificate (equation 3). Time: median seconds to the smallest example; Total: median seconds the attack ran.\n"
    "Ratio(r50), Ratio(Time): first confirmed example's median radius over r50, and its median time over Total\n"
    "(the paper's ratios). Confirmed: % of kept candidates that passed confirmation on fresh noise."
)


def format_table(result: RunResult) -> str:
    """The per-attack metrics laid out like the paper's Table 1, with the judge settings and a legend."""

    def cell(value: float | None, fmt: str, suffix: str = "") -> str:
        return "-" if value is None else format(value, fmt) + suffix

    config = result.config
    lines = [
        f"{result.defense.name}: {result.num_samples} samples, clean accuracy {result.clean_accuracy:.3f}, "
        f"{result.metrics.get('attacked_samples', 0)} attacked (correct and certified); judge N={config.judge_n}, "
        f"alpha={config.judge_alpha:g}, confirmation on {config.confirm_n} fresh copies",
        f"{'':<12}{'Smallest attack':^59}{'First attack':^24}",
        f"{'Attack':<12}{'Success':>9}{'Best':>8}{'r50':>8}{'%-Cohen':>10}{'Time (s)':>10}{'Total (s)':>10}"
        f"{'Ratio(r50)':>12}{'Ratio(Time)':>12}{'Confirmed':>11}",
    ]
    for name, row in result.metrics.get("attacks", {}).items():
        lines.append(
            f"{name:<12}{cell(row['success'], '.0f', '%'):>9}{cell(row['best'], '.0f', '%'):>8}"
            f"{cell(row['r50'], '.2f'):>8}{cell(row['pct_cohen'], '.0f', '%'):>10}{cell(row['time_s'], '.2f'):>10}"
            f"{cell(row['total_time_s'], '.2f'):>10}{cell(row['first_ratio_r50'], '.2f'):>12}"
            f"{cell(row['first_ratio_time'], '.2f'):>12}{cell(row['confirmed'], '.0f', '%'):>11}"
        )
    return "\n".join([*lines, TABLE_LEGEND])
