"""Wong & Kolter's released MNIST model (eps = 0.1) on the MNIST test set: clean and certified robust error.

Their paper reports 1.80% clean error and a 5.82% robust error bound for this model on the
10,000 test images; the printed ratios (ours / paper) should be close to 1. Robust error
counts images that are misclassified or not certified at eps by the dual bound; it is
printed for the plain l_inf ball (the paper's setting) and for the ball kept in [0, 1].
Needs the model and the test set in $RSBENCH_DATA (default here: ../shared/data).
Run: python benchmarks/kw_mnist.py [--start 0] [--num-samples 10000] [--batch-size 50] [--device cuda]
(`--start` and `--num-samples` split the test set into shards that can run side by side.)
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

PAPER_CLEAN_ERROR, PAPER_ROBUST_ERROR = 0.0180, 0.0582


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--num-samples", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    os.environ.setdefault("RSBENCH_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))

    from rsbench.data import load_dataset
    from rsbench.defenses import load_defense
    from rsbench.defenses.kw import certified
    from rsbench.runner import resolve_device
    from rsbench.stats import clopper_pearson

    device = resolve_device(args.device)
    defense = load_defense("kw-mnist-0.1", device)
    images, labels = load_dataset("mnist", "test").tensors
    images, labels = images[args.start : args.start + args.num_samples], labels[args.start : args.start + args.num_samples]
    wrong = plain = boxed = 0
    started = time.perf_counter()
    with torch.no_grad():
        for start in range(0, len(labels), args.batch_size):
            x, y = images[start : start + args.batch_size].to(device), labels[start : start + args.batch_size].to(device)
            wrong += int((defense.model(x).argmax(1) != y).sum())
            plain += int((~certified(defense.model, x, defense.epsilon, y)).sum())
            boxed += int((~certified(defense.model, x, defense.epsilon, y, box=True)).sum())
    elapsed = time.perf_counter() - started
    count = len(labels)
    for name, errors, paper in (
        ("clean error", wrong, PAPER_CLEAN_ERROR),
        ("robust error, l_inf ball", plain, PAPER_ROBUST_ERROR),
        ("robust error, ball within [0, 1]", boxed, PAPER_ROBUST_ERROR),
    ):
        low, high = clopper_pearson(errors, count, 0.05)
        print(
            f"{name:34s} {errors / count:7.2%}  95% CI [{low:.2%}, {high:.2%}]  "
            f"paper {paper:.2%}  ratio {errors / count / paper:.3f}"
        )
    print(f"{count} images from #{args.start} on {device}: {1000 * elapsed / count:.1f} ms per image for both bounds")


if __name__ == "__main__":
    main()
