"""Whether CAA's share of smallest examples against DeepFool is CAA's convergence or the data's.

How often CAA has the smallest example against DeepFool on rsbench's 8x8 digits models is in
`benchmarks/table1.py`'s runs and the digits tracks. This script runs two checks that tell an
unconverged CAA apart from a property of the data, and prints, for each defense, each attack's
share of samples with the smallest radius (ties credit all) and its r50, and for the first check
the median ratio of CAA's radius at 100 iterations to its radius at 300. Its runs go under
`--out`; the repository stores none of them, so rerun it to see the numbers:

1. convergence: CAA with three times the paper's M (300 iterations) on the samples of a
   finished `benchmarks/table1.py` run, against that run's DeepFool and CAA records;
2. input size: a smoothing model on 28x28 MNIST (the `kw-mnist-cnn` architecture trained
   with Gaussian noise on test images 5000-9999, attacked on test images from 0 on), where
   DeepFool's linearisation has 12 times as many dimensions to be wrong in.

    RSBENCH_DATA=path/with/mnist python benchmarks/caa_vs_deepfool.py --table1 runs/table1 \\
        [--device cuda --workers 12 --batch-size 30000]
"""

from __future__ import annotations

import argparse
import math
import statistics
from pathlib import Path

import torch
from table1 import read_records
from torch.utils.data import Subset

from rsbench import engine, hub, models, registry, runner
from rsbench.data import load_dataset
from rsbench.records import AttackRecord
from rsbench.specs import AttackSpec, DefenseSpec
from rsbench.training import gaussian

PROBE_SIGMA, PROBE_TRAIN = 0.5, range(5000, 10000)


def best_shares(records: list[AttackRecord]) -> str:
    """Each attack's share of samples where its radius is the smallest (ties credit all), and its r50."""
    radius = {(r.index, r.attack): r.best_radius if r.success else math.inf for r in records}
    samples, attacks = sorted({r.index for r in records}), list(dict.fromkeys(r.attack for r in records))
    parts = []
    for attack in attacks:
        wins = sum(radius[i, attack] <= min(radius[i, a] for a in attacks) < math.inf for i in samples)
        found = [radius[i, attack] for i in samples if math.isfinite(radius[i, attack])]
        r50 = f"{statistics.median(found):.3f}" if found else "-"
        parts.append(f"{attack} best {100 * wins / len(samples):.0f}% r50 {r50}")
    return f"{len(samples)} samples: " + ", ".join(parts)


def run(spec: DefenseSpec, attacks: list[AttackSpec], num_samples: int, out: Path, args: argparse.Namespace,
        device: torch.device) -> list[AttackRecord]:
    config = runner.run_config(
        spec, "evaluate", num_samples=num_samples, batch_size=args.batch_size, seed=args.seed,
        attacks=[a.name for a in attacks], attack_hashes=[a.spec_hash() for a in attacks], workers=args.workers,
    )
    engine.evaluate(spec, attacks, config, out, device)
    return read_records(out)


def convergence(args: argparse.Namespace, device: torch.device) -> None:
    caa = registry.get_attack("caa")
    longer = caa.model_copy(update={"name": "caa-m300", "params": {**caa.params, "iterations": 300}})
    for folder in sorted(args.table1.iterdir()):
        spec, done = registry.get_defense(folder.name), read_records(folder)
        num_samples = max(r.index for r in done) + 1
        mine = run(spec, [longer], num_samples, args.out / "convergence" / spec.name, args, device)
        by_sample = {(r.index, r.attack): r for r in done}
        gains = [by_sample[r.index, "caa"].best_radius / r.best_radius for r in mine
                 if r.success and by_sample[r.index, "caa"].success]
        median = f"{statistics.median(gains):.3f}" if gains else "-"
        print(f"{spec.name}: CAA M=100 radius / M=300 radius, median {median}")
        for pool in (["caa", "deepfool"], ["caa-m300", "deepfool"]):
            chosen = [r for r in done + mine if r.attack in pool]
            print(f"  {' vs '.join(pool)}: {best_shares(chosen)}")


def mnist_probe(args: argparse.Namespace, device: torch.device) -> None:
    out = args.out / "mnist-probe"
    out.mkdir(parents=True, exist_ok=True)
    weights = out / "smoothing-mnist-probe.pt"
    spec = DefenseSpec.model_validate({
        "name": "smoothing-mnist-probe", "kind": "smoothing", "dataset": {"name": "mnist"},
        "architecture": "kw-mnist-cnn", "num_classes": 10, "sigma": PROBE_SIGMA,
        "weights": {"source": "file", "filename": str(weights.resolve()), "sha256": "0" * 64},
        "training": {"recipe": "gaussian", "epochs": 30, "batch_size": 128, "lr": 0.05, "seed": 0},
    })
    if not weights.exists():
        torch.manual_seed(spec.training.seed)
        model = models.create_model(spec.architecture, spec.num_classes).to(device)
        gaussian.fit(model, Subset(load_dataset("mnist", "test"), PROBE_TRAIN), spec, device)
        torch.save({k: v.cpu() for k, v in model.state_dict().items()}, weights)
    spec = spec.model_copy(update={"weights": spec.weights.model_copy(update={"sha256": hub.sha256_of(weights)})})
    attacks = [registry.get_attack(name) for name in ("caa", "caa-direct", "pgd", "deepfool")]
    found = run(spec, attacks, args.mnist_samples, out / "evaluate", args, device)
    print(f"{spec.name} (28x28, sigma {PROBE_SIGMA}): {best_shares(found)}")
    print(f"  CAA and DeepFool alone: {best_shares([r for r in found if r.attack in ('caa', 'deepfool')])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table1", type=Path, default=Path("runs/table1"), help="a finished table1.py --out")
    parser.add_argument("--mnist-samples", type=int, default=110, help="MNIST test images attacked from 0 on")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/caa-vs-deepfool"))
    args = parser.parse_args()
    device = runner.resolve_device(args.device)
    mnist_probe(args, device)
    convergence(args, device)


if __name__ == "__main__":
    main()
