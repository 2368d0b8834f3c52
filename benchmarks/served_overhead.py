"""A served defense's overhead: a self-certified plugin in its sandbox against the same plugin in this process.

A plugin's code never runs in rsbench's process (`rsbench.submissions.defense_server`): every certificate,
forward pass and gradient an attack or the judge asks of it is a request over a pipe to its sandboxed
process. This times each kind of call both ways, on the same inputs, and prints the served time over the
in-process one (1.0 = no overhead). Graph defenses (`architecture: onnx` with one of rsbench's certifiers) are
not served at all; this is the cost only self-certified plugins pay.

    python benchmarks/served_overhead.py [--folder submissions/defenses/aol-digits] [--repeats 200] [--batch 1]
        [--wait-policy ACTIVE]

The served process's OpenMP threads sleep between requests (`defense_server.WAIT_POLICY`); `--wait-policy
ACTIVE` shows what spinning ones cost on a loaded machine.

Needs bubblewrap (`--unsandboxed` serves from a plain process, for a machine without it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from rsbench import registry, runner
from rsbench.data import load_dataset
from rsbench.defenses.base import Defense
from rsbench.submissions.defense_tracks import serving

ROOT = Path(__file__).resolve().parents[1]


def calls(defense: Defense, xs: torch.Tensor) -> dict[str, Callable[[], object]]:
    """The calls attacks and the judge make of a defense, on the batch `xs`."""
    model = runner.defense_model(defense)

    def forward() -> object:
        with torch.no_grad():
            return model(xs)

    def gradient() -> object:
        x = xs.clone().requires_grad_(True)
        return torch.autograd.grad(model(x).logsumexp(1).sum(), x)

    return {"certify": lambda: defense.certify_many(list(xs), [None] * len(xs)), "forward": forward,
            "gradient": gradient}


def median_times(repeats: int, works: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Median wall time of each work over `repeats` rounds that run every work once, in turn (after one warm-up
    round), so that a slow spell of a shared machine falls on all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in works}
    for round_ in range(repeats + 1):
        for name, work in works.items():
            started = time.perf_counter()
            work()
            if round_:
                times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=ROOT / "submissions" / "defenses" / "aol-digits")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--batch", type=int, default=1, help="Samples per call (attacks here run one at a time).")
    parser.add_argument("--unsandboxed", action="store_true")
    parser.add_argument("--wait-policy", choices=("PASSIVE", "ACTIVE"), default=None,
                        help="The served process's OMP_WAIT_POLICY (default: rsbench's, PASSIVE); ACTIVE spins.")
    args = parser.parse_args()
    if args.wait_policy:
        os.environ["OMP_WAIT_POLICY"] = args.wait_policy  # read by the served process only: this one has started
    torch.set_num_threads(1)  # this process's own thread pool, on a shared machine, would time its waits instead
    spec = registry.get_defense(str(args.folder.resolve()))
    config = runner.run_config(spec, "certify", num_samples=args.batch)
    dataset = load_dataset(spec.dataset.name, spec.dataset.split, spec.dataset.root)
    xs = torch.stack([dataset[i][0] for i in range(args.batch)])
    own = runner.load_for_run(spec, config, torch.device("cpu"))  # its code imported here, before it is served
    with serving([spec], None, timeout=3600, isolated=not args.unsandboxed):
        served = runner.load_for_run(spec, config, torch.device("cpu"))
        works = {f"{name} {where}": work for where, defense in (("in-process", own), ("served", served))
                 for name, work in calls(defense, xs).items()}
        times = median_times(args.repeats, works)
    policy = os.environ.get("OMP_WAIT_POLICY", "PASSIVE")
    print(f"{spec.name}, {args.batch} sample(s) per call, median of {args.repeats} calls each; served process's "
          f"OMP_WAIT_POLICY {policy}; one thread here:")
    for name in calls(own, xs):
        inside, outside = times[f"{name} in-process"], times[f"{name} served"]
        print(f"  {name:9s} in-process {1e3 * inside:8.3f} ms  served {1e3 * outside:8.3f} ms  "
              f"ratio {outside / inside:6.2f}  overhead {1e3 * (outside - inside):7.3f} ms")


if __name__ == "__main__":
    main()
