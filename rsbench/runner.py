"""The certify job: samples -> defense -> per-sample records (appended, resumable) -> summary.

Each sample gets its own noise generator seeded from (seed, index), so a resumed or
extended run produces exactly the records an uninterrupted run would have.
"""

from __future__ import annotations

import functools
import platform
import subprocess
import sys
import time
import zlib
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

import rsbench
from rsbench import batching, hub, metrics, plots
from rsbench.data import load_dataset
from rsbench.defenses import load_defense
from rsbench.defenses.base import Defense
from rsbench.defenses.smoothing import Smoothing, check_sampling
from rsbench.errors import RsbenchError
from rsbench.layers import ReducedPrecision
from rsbench.progress import bar as progress_bar
from rsbench.records import Environment, RunConfig, RunResult, SampleRecord
from rsbench.rundir import RunDir
from rsbench.specs import STRICT_CONFIRMATION_GOALS, CertifyDefaults, DefenseSpec

STATISTICS_NOTE = (
    "Smoothing certificates are Monte Carlo: each holds with probability at least 1 - alpha "
    "(Clopper-Pearson bound on n noise samples, seeded per sample). Certified accuracies carry "
    "two-sided 95% Clopper-Pearson intervals over the evaluated test samples."
)
DETERMINISTIC_NOTE = (
    "Certificates are deterministic bounds. Certified accuracies carry two-sided 95% "
    "Clopper-Pearson intervals over the evaluated test samples."
)


def resolve_device(device: str) -> torch.device:
    """`auto` picks CUDA when available; an explicit `cuda` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RsbenchError("--device cuda was asked for but no CUDA GPU is available")
    return torch.device(device)


def sample_generator(seed: int, index: int, device: torch.device) -> torch.Generator:
    """A generator for one sample, independent of every other sample's."""
    state = np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator(device=device).manual_seed(int(state) & ((1 << 63) - 1))


def stream(seed: int, index: int, attack: str, purpose: str, device: torch.device) -> torch.Generator:
    """A generator for one (sample, attack, purpose), independent of every other one and of `sample_generator`'s."""
    keys = [seed, index, zlib.crc32(attack.encode()), zlib.crc32(purpose.encode())]
    state = np.random.SeedSequence(keys).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator(device=device).manual_seed(int(state) & ((1 << 63) - 1))


def cpu_names() -> list[str]:
    """The model name of each logical CPU, from /proc/cpuinfo (empty where it is absent)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return []
    return [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]


@functools.cache
def loaded_commit() -> str | None:
    """The commit of the rsbench checkout when this process first asked, with `-dirty` where the package's tracked
    files differed from it; None outside a git checkout. Cached: a process runs the code it loaded, so a run that
    ends after the checkout moved on records the commit it started from (`engine.evaluate` asks first thing)."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        changed = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--",
                                  "rsbench"], capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if commit and changed else commit or None


def environment(device: torch.device) -> Environment:
    """Versions and hardware to record with every result."""
    commit = loaded_commit()
    names = cpu_names()
    hardware = f"{names[0]} x{len(names)}" if names else platform.processor() or platform.machine()
    if device.type == "cuda":
        hardware += f"; {torch.cuda.get_device_name(device)}"
    return Environment(
        rsbench_version=rsbench.__version__,
        git_commit=commit or None,
        torch_version=torch.__version__,
        python_version=sys.version.split()[0],
        device=str(device),
        hardware=hardware,
    )


def run_config(spec: DefenseSpec, command: str, *, num_samples: int, n0: int | None = None, n: int | None = None,
               alpha: float | None = None, batch_size: int | None = None, seed: int = 0,
               judge_n: int | None = None, judge_alpha: float | None = None, confirm_n: int | None = None,
               **extra: object) -> RunConfig:
    """A run's config: the settings given, the defense's certification defaults and the protocol's judge
    defaults (N = 1500, alpha = 0.005, confirmation on ten times N, with the judge's bounds on smoothing
    evasion and degradation) for those left None."""
    defaults, judge = spec.certify, RunConfig.model_fields
    n0, n = n0 if n0 is not None else defaults.n0, n if n is not None else defaults.n
    alpha = alpha if alpha is not None else defaults.alpha
    judge_n = judge_n if judge_n is not None else judge["judge_n"].default
    judge_alpha = judge_alpha if judge_alpha is not None else judge["judge_alpha"].default
    confirm_n = confirm_n if confirm_n is not None else 10 * judge_n
    check_sampling(n0, alpha, "--n0")
    check_sampling(n, alpha, "--n")
    check_sampling(judge_n, judge_alpha, "--judge-n")
    check_sampling(confirm_n, judge_alpha, "--confirm-n")
    if confirm_n < judge_n:
        raise RsbenchError(f"--confirm-n ({confirm_n}) must be at least --judge-n ({judge_n}): "
                           "confirmation must not be weaker than the test it confirms")
    if batch_size is not None and batch_size < 1:
        raise RsbenchError(f"--batch-size must be positive, got {batch_size}")
    if spec.kind != "smoothing" and (extra.get("precision", "fp32") != "fp32" or extra.get("channels_last")):
        raise RsbenchError(f"--precision and --channels-last apply to smoothing; {spec.name} is {spec.kind}, "
                           "whose deterministic certificate holds for float32 arithmetic only")
    strict = command == "evaluate" and spec.kind == "smoothing" and extra.get("goal") in STRICT_CONFIRMATION_GOALS
    return RunConfig(
        command=command, defense=spec.name, defense_hash=spec.spec_hash(), split=spec.dataset.split,
        num_samples=num_samples,
        n0=n0, n=n, alpha=alpha, batch_size=batch_size or defaults.batch_size, seed=seed,
        judge_n=judge_n, judge_alpha=judge_alpha, confirm_n=confirm_n,
        confirm_bounds="judge_n" if strict else None, **extra,
    )


def default_epsilon(spec: DefenseSpec, goal: str, epsilon: float | None) -> float | None:
    """The run's radius: the one given, else the defense's own epsilon (GloRo, KW) or, for degradation
    of smoothing, its sigma (certified accuracy at sigma is substantial on every shipped model)."""
    if epsilon is not None:
        if epsilon <= 0:
            raise RsbenchError(f"--epsilon must be positive, got {epsilon}")
        return epsilon
    if spec.kind == "smoothing":
        return spec.sigma if goal == "degradation" else None
    return spec.epsilon


def spec_for_run(spec: DefenseSpec, config: RunConfig) -> DefenseSpec:
    """The defense spec with the run's certification settings in place of its defaults."""
    settings = CertifyDefaults(n0=config.n0, n=config.n, alpha=config.alpha, batch_size=config.batch_size)
    return spec.model_copy(update={"certify": settings})


def load_for_run(spec: DefenseSpec, config: RunConfig, device: torch.device) -> Defense:
    """The defense with the run's certification settings, its base classifier in the run's precision and layout."""
    defense = load_defense(spec_for_run(spec, config), device)
    if isinstance(defense, Smoothing) and (config.precision != "fp32" or config.channels_last):
        defense.base_classifier = ReducedPrecision(defense.base_classifier, config.precision, config.channels_last)
    return defense


def certify_samples(defense: Defense, samples: Sequence[tuple[torch.Tensor, int, int]], seed: int,
                    device: torch.device) -> list[SampleRecord]:
    """Certify several (x, label, index) test samples in shared batches, each on its own generator (so each
    record equals the one-at-a-time one), as records; each carries an equal share of the batch's time."""
    if not samples:
        return []
    started = time.perf_counter()
    generators = [sample_generator(seed, index, device) for _, _, index in samples]
    certificates = defense.certify_many([x for x, _, _ in samples], generators)
    share = (time.perf_counter() - started) / len(samples)
    return [
        SampleRecord(index=index, label=label, prediction=c.prediction, radius=c.radius,
                     correct=c.prediction == label, time_s=share)
        for (_, label, index), c in zip(samples, certificates)
    ]


def certify(
    spec: DefenseSpec, config: RunConfig, out: Path, device: torch.device, *, progress: bool = True,
    images_per_batch: int | None = None,
) -> RunResult:
    """Certify the first `config.num_samples` samples of the split, resuming from `out` if it holds records.

    `images_per_batch` images share each pass through the model (default: chosen from free device memory).
    """
    loaded_commit()  # the code this run starts with, whatever the checkout holds when it ends
    dataset = load_dataset(spec.dataset.name, config.split, spec.dataset.root)
    if config.num_samples > len(dataset):
        raise RsbenchError(f"--num-samples {config.num_samples} exceeds the {len(dataset)} samples of the split")
    run = RunDir(out, config)
    done = {record.index for record in run.records(SampleRecord)}
    todo = [i for i in range(config.num_samples) if i not in done]
    if todo:
        defense = load_for_run(spec, config, device)
        per_pass = batching.images_per_batch(defense_model(defense), dataset[0][0].shape, config.batch_size, device,
                                             images_per_batch)
        with progress_bar(len(todo), f"certify {spec.name}", "sample", enabled=progress) as bar:
            for group in batching.chunked(todo, per_pass):
                samples = [(dataset[i][0], int(dataset[i][1]), i) for i in group]
                for record in certify_samples(defense, samples, config.seed, device):
                    run.append(record)
                bar.update(len(group))
    records = certify_records(out, config)
    result = summarize(spec, config, records, device)
    run.write_result(result)
    plots.certified_accuracy_plot(records, result.certified_accuracy, spec.name, run.path / "certified_accuracy.png")
    return result


def defense_model(defense: Defense) -> torch.nn.Module:
    """The network a defense runs on every pass: a smoothing defense's base classifier, or the certified model."""
    return defense.base_classifier if isinstance(defense, Smoothing) else defense.model


def certify_records(out: Path, config: RunConfig) -> list[SampleRecord]:
    """The records of a certify run directory, in sample order, up to the config's number of samples."""
    records = RunDir(out, config).records(SampleRecord)
    return sorted((r for r in records if r.index < config.num_samples), key=lambda r: r.index)


def summarize(spec: DefenseSpec, config: RunConfig, records: list[SampleRecord], device: torch.device) -> RunResult:
    """The RunResult of a certify run from its records."""
    step = spec.epsilon / 2 if spec.epsilon else 0.25
    extra = {}
    if spec.epsilon:
        extra = {
            f"vra_at_{label}": metrics.certified_accuracy(records, value).model_dump()
            for label, value in (("eps", spec.epsilon), ("2eps", 2 * spec.epsilon))
        }
    return RunResult(
        config=config,
        defense=spec,
        environment=environment(device),
        weights_sha256=hub.pinned_sha256(spec.weights),
        finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        num_samples=len(records),
        clean_accuracy=metrics.certified_accuracy(records, 0.0).accuracy,
        abstain_rate=metrics.abstain_rate(records),
        average_certified_radius=metrics.average_certified_radius(records),
        certified_accuracy=metrics.certified_accuracy_curve(records, step),
        metrics=extra,
        statistics=STATISTICS_NOTE if spec.kind == "smoothing" else DETERMINISTIC_NOTE,
    )
