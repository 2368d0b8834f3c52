"""Certification throughput against its limit, against the reference loop, and batched against one image at a time.

CERTIFY's cost is drawing noise, the forward passes and counting votes. The forward passes
alone, on pre-made batches of the same size, are the limit; `ratio to the limit` (limit time /
certify time) says how close an implementation gets to it (1.0 = no overhead; target >= 0.95).
The reference loop is Cohen et al.'s structure, timed side by side: tile the image, add
`randn_like` noise, and move each batch's predictions to the host to count them. Batched
certification pushes k images' noisy copies through the model together
(`Smoothing.sample_counts_many`); on a GPU a small model needs it to stay busy.

    python benchmarks/certify_throughput.py [--model digits-cnn|cifar-resnet110|imagenet-resnet50]
        [--device cuda] [--n 100000] [--batch-size 1000] [--images 8] [--precision bf16] [--channels-last]

Models carry random weights: speed does not depend on them.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch

from rsbench.defenses.smoothing import Smoothing
from rsbench.layers import ReducedPrecision
from rsbench.models import create_model
from rsbench.runner import resolve_device

SHAPES = {"digits-cnn": (1, 8, 8), "rgbdigits-cnn": (3, 8, 8), "cifar-resnet20": (3, 32, 32),
          "cifar-resnet110": (3, 32, 32), "imagenet-resnet50": (3, 224, 224)}
CLASSES = {"imagenet-resnet50": 1000}


def best_times(repeats: int, works: dict[str, Callable[[], object]], device: torch.device) -> dict[str, float]:
    """Smallest wall time of each work over `repeats` rounds that run every work once, in turn (after one
    warm-up round), so that a slow spell of a shared machine falls on all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in works}
    for round_ in range(repeats + 1):
        for name, work in works.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            started = time.perf_counter()
            work()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if round_:
                times[name].append(time.perf_counter() - started)
    return {name: min(values) for name, values in times.items()}


def reference_counts(model: torch.nn.Module, x: torch.Tensor, sigma: float, num: int, batch_size: int,
                     num_classes: int) -> np.ndarray:
    """The reference implementation's sampling loop: tiled batch, randn_like noise, host-side counting."""
    counts = np.zeros(num_classes, dtype=int)
    with torch.no_grad():
        remaining = num
        while remaining > 0:
            size = min(batch_size, remaining)
            batch = x.repeat((size, 1, 1, 1))
            predictions = model(batch + torch.randn_like(batch) * sigma).argmax(1)
            counts += np.bincount(predictions.cpu().numpy(), minlength=num_classes)
            remaining -= size
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="digits-cnn", choices=sorted(SHAPES))
    parser.add_argument("--n", type=int, default=100_000, help="noise samples per image")
    parser.add_argument("--batch-size", type=int, default=1000, help="noisy copies of one image per pass")
    parser.add_argument("--images", type=int, default=8, help="images per pass in the batched measurement")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    device = resolve_device(args.device)
    torch.manual_seed(0)
    classes = CLASSES.get(args.model, 10)
    model = ReducedPrecision(create_model(args.model, classes).eval(), args.precision, args.channels_last).to(device)
    smoothing = Smoothing(model, classes, 0.5, batch_size=args.batch_size)
    shape = SHAPES[args.model]
    xs = torch.rand((args.images, *shape), device=device)
    passes = -(-args.n // args.batch_size)
    with torch.inference_mode():  # an inference tensor, as certification's own batches are
        batch = xs[0].unsqueeze(0) + 0.5 * torch.randn(args.batch_size, *shape, device=device)

    def limit() -> None:
        with torch.inference_mode():
            for _ in range(passes):
                model(batch)

    batched = f"rsbench certify, {args.images} images per pass"
    timings = best_times(args.repeats, {
        "forward passes only (the limit)": limit,
        "rsbench certify, one image":
            lambda: smoothing.sample_counts(xs[0], args.n, torch.Generator(device).manual_seed(0)),
        "reference loop, one image": lambda: reference_counts(model, xs[0], 0.5, args.n, args.batch_size, classes),
        batched: lambda: smoothing.sample_counts_many(
            xs, args.n // args.images, [torch.Generator(device).manual_seed(i) for i in range(args.images)]),
    }, device)
    print(f"{args.model} {shape}, {device}, {args.precision}{', channels-last' if args.channels_last else ''}: "
          f"n={args.n}, {args.batch_size} copies per image per pass")
    limit_s = timings["forward passes only (the limit)"]
    for name, seconds in timings.items():
        print(f"  {name:<40}{args.n / seconds:>14,.0f} noise samples/s   ratio to the limit {limit_s / seconds:.2f}")
    one = timings["rsbench certify, one image"]
    print(f"  rsbench / reference loop: {timings['reference loop, one image'] / one:.2f}x the speed")
    print(f"  {args.images} images per pass / one image: {one / timings[batched]:.2f}x the speed")


if __name__ == "__main__":
    main()
