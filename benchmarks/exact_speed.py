"""Exact MILP verification: solve time per sample, its growth from the digits KW network to Wong & Kolter's MNIST one,
and the share of ReLUs the KW and IBP bounds make stable (those need no binary variable).

For each network, the first K test samples are decided at the defense's epsilon by the MILP alone (no attack tried
first, unlike `rsbench exact`), with a time limit per sample. Printed per network: ReLUs, stable share, how many
samples the bounds decided and how many needed MILPs, the verdicts, and the median and mean time per sample, over
all samples and over those that needed a MILP. Times depend on the machine and its load; the verdicts do not (but
for samples near the time limit).
Needs the MNIST model and test set in $RSBENCH_DATA (default here: ../shared/data).
Run: python benchmarks/exact_speed.py [--digits-samples 50] [--mnist-samples 30] [--time-limit 60]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import Counter
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--digits-samples", type=int, default=50)
    parser.add_argument("--mnist-samples", type=int, default=30)
    parser.add_argument("--time-limit", type=float, default=60.0)
    args = parser.parse_args()
    os.environ.setdefault("RSBENCH_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))

    from rsbench.data import load_dataset
    from rsbench.defenses import load_defense
    from rsbench.exact.verifier import Verifier

    means = {}
    for name, samples in (("kw-digits-0.10", args.digits_samples), ("kw-mnist-0.1", args.mnist_samples)):
        defense = load_defense(name)
        data = load_dataset(defense_dataset := ("digits" if "digits" in name else "mnist"), "test")
        verifier = Verifier(defense.model, tuple(data[0][0].shape))
        times, milp_times, verdicts, neurons, stable = [], [], Counter(), 0, 0
        for index in range(samples):
            x, label = data[index][0], int(data[index][1])
            started = time.perf_counter()
            verdict = verifier.decide(x, label, defense.epsilon, args.time_limit)
            elapsed = time.perf_counter() - started
            times.append(elapsed)
            if verdict.solves:
                milp_times.append(elapsed)
            verdicts[verdict.exact] += 1
            neurons, stable = neurons + verdict.neurons, stable + verdict.stable
        means[name] = statistics.fmean(times)
        relus = sum(affine.bias.size for affine in verifier.maps[:-1])
        print(f"{name} ({defense_dataset}, eps {defense.epsilon}): {relus} ReLUs, {samples} samples, "
              f"{stable / neurons:.1%} of ReLUs stable by the bounds; {samples - len(milp_times)} decided without a "
              f"MILP, {len(milp_times)} with; verdicts {dict(verdicts)}")
        print(f"  time per sample: median {statistics.median(times):.3f} s, mean {means[name]:.3f} s")
        if milp_times:
            print(f"  samples that needed a MILP: median {statistics.median(milp_times):.2f} s, "
                  f"mean {statistics.fmean(milp_times):.2f} s, max {max(milp_times):.2f} s")
    print(f"mean time per sample, MNIST / digits: {means['kw-mnist-0.1'] / means['kw-digits-0.10']:.1f}x")


if __name__ == "__main__":
    main()
