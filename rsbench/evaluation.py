"""The evaluate job: certify clean samples, attack the certified ones, judge, record, summarize.

For each of the first K test samples the defense certifies the clean input (records in
`clean.jsonl`, the same as `rsbench certify` writes). Samples it classifies correctly
with a certificate are attacked by every named attack, in order. Each attack gets the
smoothed view its own N, alpha and temperature describe, a Tracker whose judge counts
hard votes on fresh noise (`success.make_judge`), and its own noise generators seeded
from (seed, sample, attack), so its record does not depend on which attacks ran before
it or on interruptions. One AttackRecord per (sample, attack) is appended to
`samples.jsonl` as soon as the attack finishes; re-running resumes where it stopped.
"""

from __future__ import annotations

import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.stats import norm
from tqdm import tqdm

from rsbench import metrics, plots, registry, runner
from rsbench.attacks.base import Attack, Tracker
from rsbench.attacks.smoothed_view import SmoothedView, goodman_bounds, view_options
from rsbench.attacks.success import make_judge
from rsbench.data import load_dataset
from rsbench.defenses import load_defense
from rsbench.defenses.smoothing import Smoothing
from rsbench.errors import RsbenchError
from rsbench.rundir import RunDir
from rsbench.specs import AttackRecord, AttackSpec, DefenseSpec, RunConfig, RunResult, SampleRecord

STATISTICS_NOTE = (
    "Clean samples are certified as by `rsbench certify` (Clopper-Pearson, n noise samples, alpha). "
    "An example counts as adversarial when hard votes of the base classifier on N fresh noise draws give "
    "another class a Goodman lower bound above every other class's upper bound at the attack's alpha. "
    "cohen_radius is the radius sigma/2 (PhiInv(lower of top) - PhiInv(upper of runner-up)) from hard "
    "votes at the clean sample with the attack's N and alpha. Medians are over each attack's successes; "
    "percentages are over the attacked samples (correct and certified)."
)


def stream(seed: int, index: int, attack: str, purpose: str, device: torch.device) -> torch.Generator:
    """A generator for one (sample, attack, purpose), independent of every other one."""
    keys = [seed, index, zlib.crc32(attack.encode()), zlib.crc32(purpose.encode())]
    state = np.random.SeedSequence(keys).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator(device=device).manual_seed(int(state) & ((1 << 63) - 1))


def cohen_radius(view: SmoothedView, x: torch.Tensor, generator: torch.Generator) -> float:
    """Algorithm 2's radius from hard votes at x: sigma/2 (PhiInv(lower of top) - PhiInv(upper of runner-up))."""
    counts = view.hard_counts(x, generator)
    lower, upper = goodman_bounds(counts.double() / view.num_noise, view.num_noise, view.alpha)
    top, runner_up = (int(i) for i in counts.topk(2).indices)
    return float(view.sigma / 2 * (norm.ppf(float(lower[top])) - norm.ppf(float(upper[runner_up]))))


@dataclass
class PreparedAttack:
    """An attack ready to run: its spec, implementation and the view its params describe."""

    spec: AttackSpec
    attack: Attack
    view: SmoothedView


def prepare(spec: AttackSpec, defense: Smoothing) -> PreparedAttack:
    """Instantiate an attack from its spec and build its view of the defense."""
    if spec.goal != "evasion" or spec.norm != "l2":
        raise RsbenchError(f"evaluate runs l2 evasion attacks; {spec.name!r} is {spec.norm} {spec.goal}")
    params = registry.attack_params(spec)
    attack = registry.resolve(spec.implementation)(params)
    return PreparedAttack(spec, attack, defense.surrogate(**view_options(params)))


def attack_sample(
    prepared: PreparedAttack, x: torch.Tensor, label: int, index: int, seed: int
) -> tuple[AttackRecord, Tracker]:
    """Run one attack on one certified sample and judge it; returns its record and its tracker."""
    view, name, device = prepared.view, prepared.spec.name, prepared.view.device
    x = x.to(device)
    bound = cohen_radius(view, x, stream(seed, index, name, "cohen", device))
    tracker = Tracker(x, make_judge(view, label, stream(seed, index, name, "judge", device)), norm=prepared.spec.norm)
    prepared.attack.run(view, x, label, tracker, stream(seed, index, name, "attack", device))
    first, best = tracker.first, tracker.best
    record = AttackRecord(
        index=index,
        label=label,
        attack=name,
        success=best is not None,
        first_radius=first.radius if first else None,
        first_time_s=first.time_s if first else None,
        best_radius=best.radius if best else None,
        best_time_s=best.time_s if best else None,
        cohen_radius=bound,
        iterations=tracker.iterations,
    )
    return record, tracker


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
    """Certify and attack the first `config.num_samples` test samples, resuming from `out`; returns the summary."""
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
    names = [s.name for s in attack_specs]
    todo = [
        i for i in range(config.num_samples)
        if i not in clean or (clean[i].correct and any((i, name) not in done for name in names))
    ]
    if todo:
        defense = load_defense(runner.spec_for_run(defense_spec, config), device)
        prepared = [prepare(spec, defense) for spec in attack_specs]
        bar = tqdm(todo, desc=f"evaluate {defense_spec.name}", unit="sample", disable=not progress)
        for index in bar:
            x, label = dataset[index]
            if index not in clean:
                started = time.perf_counter()
                certificate = defense.certify(x, generator=runner.sample_generator(config.seed, index, device))
                clean[index] = SampleRecord(
                    index=index, label=int(label), prediction=certificate.prediction, radius=certificate.radius,
                    correct=certificate.prediction == int(label), time_s=time.perf_counter() - started,
                )
                clean_run.append(clean[index])
            if not clean[index].correct:
                continue
            for item in prepared:
                if (index, item.spec.name) in done:
                    continue
                bar.set_postfix_str(item.spec.name)
                record, tracker = attack_sample(item, x, int(label), index, config.seed)
                if save_examples and tracker.best is not None:
                    save_example(out / "adversarial", item.spec.name, index, x, tracker.best.x_adv)
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
    names = {s.name for s in attack_specs}
    records = [r for r in attack_run.records(AttackRecord) if r.index < config.num_samples and r.attack in names]
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


def format_table(result: RunResult) -> str:
    """The per-attack metrics laid out like the paper's Table 1."""

    def cell(value: float | None, fmt: str, suffix: str = "") -> str:
        return "-" if value is None else format(value, fmt) + suffix

    lines = [
        f"{result.defense.name}: {result.num_samples} samples, clean accuracy {result.clean_accuracy:.3f}, "
        f"{result.metrics.get('attacked_samples', 0)} attacked (correct and certified)",
        f"{'':<12}{'Smallest attack':^49}{'First attack':^24}",
        f"{'Attack':<12}{'Success':>9}{'Best':>8}{'r50':>8}{'%-Cohen':>10}{'Time (s)':>10}{'Ratio(r50)':>12}{'Ratio(Time)':>12}",
    ]
    for name, row in result.metrics.get("attacks", {}).items():
        lines.append(
            f"{name:<12}{cell(row['success'], '.0f', '%'):>9}{cell(row['best'], '.0f', '%'):>8}"
            f"{cell(row['r50'], '.2f'):>8}{cell(row['pct_cohen'], '.0f', '%'):>10}{cell(row['time_s'], '.2f'):>10}"
            f"{cell(row['first_ratio_r50'], '.2f'):>12}{cell(row['first_ratio_time'], '.2f'):>12}"
        )
    return "\n".join(lines)
