"""Ray scale-out: the wall time of one evaluate run on Ray with 1 worker against 2 workers (prints the speed-up).

Ray is started first and not timed; each run starts its own actors (each loads the model once),
so the times are what a user waits for on a running Ray. Each actor claims one CPU core (or
one GPU with --device cuda) and runs torch on one thread; records do not depend on the workers.
Run: python benchmarks/ray_scaling.py [--defense gloro-digits-0.25] [--attack degradation-pgd]
     [--num-samples 500] [--repeats 2] [--address ADDR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from rsbench import cluster, engine, registry
from rsbench.runner import resolve_device
from rsbench.specs import AttackSpec, DefenseSpec


def timed_run(spec: DefenseSpec, attacks: list[AttackSpec], num_samples: int, workers: int, device: torch.device,
              address: str | None) -> tuple[float, float]:
    """Wall seconds of one evaluate run on Ray, in a fresh run directory, and the seconds its records say the
    workers spent on samples (certificates and attacks): these grow with 2 workers when the cores are shared."""
    config = engine.evaluate_config(spec, attacks, num_samples=num_samples, workers=workers)
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        engine.evaluate(spec, attacks, config, Path(out), device, progress=False, backend="ray", address=address)
        wall = time.perf_counter() - started
        records = [json.loads(line) for name in ("clean.jsonl", "samples.jsonl")
                   for line in (Path(out) / name).read_text().splitlines()]
    return wall, sum(r.get("time_s", 0) + r.get("total_time_s", 0) for r in records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--defense", default="gloro-digits-0.25")
    parser.add_argument("--attack", default="degradation-pgd")
    parser.add_argument("--num-samples", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=2, help="Runs per worker count; the fastest is kept.")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--address", default=None, help="A running Ray cluster [start a local Ray].")
    args = parser.parse_args()

    spec, attacks = registry.get_defense(args.defense), [registry.get_attack(args.attack)]
    device = resolve_device(args.device)
    cluster.connect(cluster.import_ray(), args.address)
    runs: dict[int, list[tuple[float, float]]] = {1: [], 2: []}
    for _ in range(args.repeats):
        for workers in runs:
            runs[workers].append(timed_run(spec, attacks, args.num_samples, workers, device, args.address))
    (one, busy_one), (two, busy_two) = min(runs[1]), min(runs[2])
    print(f"{spec.name}, {args.attack}, {args.num_samples} samples on {device} (Ray)")
    print(f"1 worker: {one:.1f} s; 2 workers: {two:.1f} s (fastest of {args.repeats})")
    print(f"seconds spent on samples: {busy_one:.1f} with 1 worker, {busy_two:.1f} with 2 (more: shared cores)")
    print(f"speed-up of 2 workers over 1: {one / two:.2f}")

if __name__ == "__main__":
    main()
