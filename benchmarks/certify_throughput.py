"""Certification throughput versus its limit: the base model's forward pass on the same batches.

CERTIFY's cost is drawing noise, the forward passes and counting votes. The forward
passes alone, on pre-made batches of the same size, are the limit; the printed ratio
(limit time / certify time) says how close the implementation gets to it (1.0 = no overhead).
Run: python benchmarks/certify_throughput.py [--device cuda] [--n 100000] [--batch-size 1000]
"""

from __future__ import annotations

import argparse
import time

import torch

from rsbench.defenses import load_defense
from rsbench.runner import resolve_device


def best_of(repeats: int, work) -> float:  # noqa: ANN001 - a zero-argument callable
    """Smallest wall time of several repeats (the least disturbed one)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--defense", default="smoothing-digits-0.50")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    device = resolve_device(args.device)
    smoothing = load_defense(args.defense, device)
    smoothing.batch_size = args.batch_size
    x = torch.rand(1, 8, 8, device=device)
    batches = [x.unsqueeze(0) + torch.randn(args.batch_size, *x.shape, device=device) for _ in range(args.n // args.batch_size)]

    def limit() -> None:
        with torch.no_grad():
            for batch in batches:
                smoothing.base_classifier(batch)

    def certify() -> None:
        smoothing.sample_counts(x, args.n, torch.Generator(device=device).manual_seed(0))

    limit_s, certify_s = best_of(args.repeats, limit), best_of(args.repeats, certify)
    print(f"device {device}, n={args.n}, batch {args.batch_size}")
    print(f"forward passes only: {args.n / limit_s:,.0f} samples/s")
    print(f"certify (noise + forward + votes): {args.n / certify_s:,.0f} samples/s")
    print(f"ratio to the limit: {limit_s / certify_s:.2f}")


if __name__ == "__main__":
    main()
